"""A causal LM plus optional Medusa heads, giving base and head logits from one forward pass."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from medusa.drafters import Drafter


@dataclass
class ModelInfo:
    """Where the weights came from, for the results files and the console banner."""

    name: str
    base: str  # for people: the base and what was merged into it ("... + adapter DIR")
    heads: str | None = None
    head_format: str | None = None
    extra: dict = field(default_factory=dict)
    # for loading again: the base's hub id, local path, GGUF file or "embedded"
    base_id: str | None = None


@dataclass
class StepOutput:
    """One forward pass: base logits [B, L, V], head logits [K, B, L, V] (or None) and the hidden
    states."""

    logits: torch.Tensor
    head_logits: torch.Tensor | None
    hidden: torch.Tensor


class MedusaModel(nn.Module):
    """Wraps any transformers causal LM (Llama, Mistral, Qwen2, ...) through its public forward
    inputs only.

    Besides :meth:`step`, which the decoders use, it answers the calls that code written against
    FasterDecoding's library makes (there the model *is* a ``LlamaForCausalLM`` with heads):
    ``model(input_ids)`` is the base causal-LM output, ``model(input_ids, medusa_forward=True,
    output_orig=True)`` the head logits, and ``model.model``, ``model.lm_head``,
    ``model.medusa_head``, ``model.medusa``, ``get_tokenizer()`` exist, so that course submissions
    run on it unchanged.
    """

    def __init__(self, base: nn.Module, tokenizer, heads: Drafter | None = None,
                 info: ModelInfo | None = None):
        super().__init__()
        self.base_model = base
        self.tokenizer = tokenizer
        self.heads = heads
        self.info = info or ModelInfo(name=getattr(base.config, "_name_or_path", "?"), base="?")

    @property
    def config(self):
        return self.base_model.config

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    @property
    def split(self) -> bool:
        """Whether the weights sit on several GPUs (``--device-map auto``): outputs are then moved
        to :attr:`device`."""
        if not hasattr(self, "_split"):
            self._split = len({p.device for p in self.parameters()}) > 1
        return self._split

    def _home(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """A split model's output on the first GPU, where the decoders keep their tensors (no-op
        otherwise)."""
        return t.to(self.device) if t is not None and self.split else t

    @property
    def dtype(self) -> torch.dtype:
        return next(self.base_model.parameters()).dtype

    @property
    def num_heads(self) -> int:
        return 0 if self.heads is None else len(self.heads)

    @property
    def medusa_head(self) -> nn.ModuleList:
        """FasterDecoding's attribute: the list of heads, each mapping hidden states to logits."""
        if self.heads is None:
            raise AttributeError("this model has no Medusa heads")
        return self.heads.standalone(self.lm_head)

    @property
    def medusa(self) -> int:
        return self.num_heads

    @property
    def lm_head(self) -> nn.Module:
        """The base model's output projection (FasterDecoding's model is the causal LM, so it has
        this attribute)."""
        return self.base_model.get_output_embeddings()

    @property
    def model(self) -> nn.Module:
        """The base model's decoder (hidden states, no projection), as FasterDecoding's
        ``model.model``."""
        return self.base_model.get_decoder()

    @property
    def vocab_size(self) -> int:
        return self.lm_head.weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.lm_head.weight.shape[1]

    def project_heads(
        self, hidden: torch.Tensor, logits: torch.Tensor, num_heads: int | None = None
    ) -> torch.Tensor:
        """Head logits [K, ..., V] at these hidden states; ``logits`` (the base's, same positions)
        supply the next token that drafters reading it condition on."""
        if self.heads is None:
            raise ValueError("this model has no Medusa heads")
        next_tokens = logits.argmax(-1) if self.heads.reads_next_token else None
        if not self.split:
            return self.heads(hidden, num_heads, next_tokens)
        at = self.lm_head.weight.device  # the heads sit with lm_head
        next_tokens = None if next_tokens is None else next_tokens.to(at)
        return self.heads(hidden.to(at), num_heads, next_tokens).to(hidden.device)

    @property
    def path_dependent_heads(self) -> bool:
        """Drafters whose drafts depend on the tokens above them (sequential heads, the
        autoregressive drafter): trees and beams are drafted depth by depth."""
        return self.heads is not None and self.heads.path_dependent

    def level_logits(self, hidden: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Head d's logits [N, V] below each draft path ``paths`` [N, d+1] (t_0 = the next token) at
        ``hidden``."""
        if not self.split:
            return self.heads.level_logits(hidden, paths)
        at = self.lm_head.weight.device  # the heads sit with lm_head
        return self.heads.level_logits(hidden.to(at), paths.to(at)).to(hidden.device)

    @property
    def context_drafter(self) -> bool:
        """The drafter attends over the whole context: decoding keeps a
        :class:`~medusa.model.drafter_context.DrafterContext` beside the base model's cache."""
        return self.heads is not None and self.heads.needs_context

    def drafter_context(self):
        """An empty context for one sequence of the context drafter."""
        from medusa.model.drafter_context import DrafterContext

        return DrafterContext(self.heads)

    def level_drafter(self, hidden: torch.Tensor, context=None):
        """One draft's per-level head logits at ``hidden``
        (:class:`~medusa.model.level_drafter.LevelDrafter`): like :meth:`level_logits`, but each
        level reuses the last one's work. ``context``: the context drafter's view of the positions
        below the draft."""
        from medusa.model.level_drafter import LevelDrafter

        if not self.split:
            return LevelDrafter(self.heads, hidden, context)
        # the heads sit with lm_head; results go back to the caller's device
        at = self.lm_head.weight.device
        return LevelDrafter(self.heads, hidden.to(at), context, out_device=hidden.device)

    def get_tokenizer(self):
        return self.tokenizer

    def decoder(self) -> nn.Module:
        return self.base_model.get_decoder()

    def _cache_keyword(self) -> str:
        if not hasattr(self, "_cache_kw"):
            params = inspect.signature(self.decoder().forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        return self._cache_kw

    def _run_decoder(self, input_ids, cache, position_ids, attention_mask):
        """The decoder's forward; the cache keyword is ``cache`` from transformers 5.2x,
        ``past_key_values`` before."""
        kwargs = {self._cache_keyword(): cache}
        return self.decoder()(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=cache is not None,
            **kwargs,
        )

    def step(
        self,
        input_ids: torch.Tensor,
        past_key_values=None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_heads: int = 0,
        last_only: bool = False,
        all_hidden: bool = False,
    ) -> StepOutput:
        """Run the decoder once and project; ``last_only`` projects just the final position
        (prefill), and ``all_hidden`` still returns every position's hidden state (what the context
        drafter's cache is made of)."""
        out = self._run_decoder(input_ids, past_key_values, position_ids, attention_mask)
        full = hidden = out.last_hidden_state
        if last_only:
            hidden = hidden[:, -1:]
        logits = self.lm_head(hidden)
        head_logits = None
        if num_heads:
            if num_heads > self.num_heads:
                raise ValueError(f"asked for {num_heads} heads, the model has {self.num_heads}")
            head_logits = self.project_heads(hidden, logits, num_heads)
        return StepOutput(logits=self._home(logits), head_logits=self._home(head_logits),
                          hidden=self._home(full if all_hidden else hidden))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        output_orig: bool = False,
        position_ids: torch.Tensor | None = None,
        medusa_forward: bool = False,
        **kwargs,
    ):
        """FasterDecoding's signature and defaults: the base causal-LM output (``.logits``,
        ``.past_key_values``) unless ``medusa_forward``; then ``medusa_logits`` [K,B,L,V], or with
        ``output_orig`` ``(medusa_logits, decoder outputs, base logits [B,L,V])``.

        ``past_key_values`` is passed under the keyword this transformers version uses (``cache``
        from 5.2x).
        """
        cache = {self._cache_keyword(): past_key_values} if past_key_values is not None else {}
        inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **cache,
            **kwargs,
        )
        if not medusa_forward:
            return self.base_model(**inputs)
        if self.heads is None:
            raise ValueError("medusa_forward needs Medusa heads; this model has none")
        outputs = self.decoder()(**inputs)
        hidden = outputs.last_hidden_state
        orig = self.lm_head(hidden)
        medusa_logits = self.project_heads(hidden, orig)
        if self.split and input_ids is not None:  # back where the caller's tensors are
            medusa_logits, orig = medusa_logits.to(input_ids.device), orig.to(input_ids.device)
        if output_orig:
            return medusa_logits, outputs, orig
        return medusa_logits
