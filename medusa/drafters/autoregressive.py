"""The autoregressive drafter (EAGLE-style): one decoder layer that predicts the base model's next
hidden state from the current one and the embedding of the token that follows it, so a draft path is
extended one token at a time, each prediction projected by the base ``lm_head``.

The layer attends causally over the draft path only (the base model's last hidden state is its first
input), not over the prompt: a path is at most a few tokens deep, and the hidden state already
summarises the context. (The context drafter, context.py, is this layer attending over the whole
context too.) Its residual branches start at zero and its input projection passes the hidden state
through, so a fresh drafter predicts the same hidden state again at every depth: like fresh Medusa
heads, it repeats the base model's next-token distribution until trained.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from medusa.drafters.base import HeadConfig, PathDrafter, register

# positions of the learned position embedding: deeper paths than any tree or beam search here
MAX_DEPTH = 16


class DraftLayer(nn.Module):
    """RMSNorm → causal self-attention → RMSNorm → SwiGLU MLP, with residuals, over
    [batch, path, hidden]."""

    def __init__(self, hidden_size: int, num_attention_heads: int, learned_positions: bool = True
                 ) -> None:
        super().__init__()
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden size {hidden_size} is not a multiple of "
                             f"{num_attention_heads} attention heads")
        self.num_attention_heads = num_attention_heads
        # [hidden state; token embedding] → input
        self.fc = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        # (the context drafter's positions are rotary)
        self.position = nn.Embedding(MAX_DEPTH, hidden_size) if learned_positions else None
        self.attn_norm = nn.RMSNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.mlp_norm = nn.RMSNorm(hidden_size)
        self.gate = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.up = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.down = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        with torch.no_grad():  # start as the identity on the hidden state (the module docstring)
            self.fc.weight.zero_()
            self.fc.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
            for zero in (self.out.weight, self.down.weight):
                zero.zero_()
            if self.position is not None:
                self.position.weight.zero_()

    def inputs(self, hidden: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([hidden, token_embedding], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H] inputs → [B, L, H] predicted next hidden states (position j sees 0..j)."""
        b, length, h = x.shape
        if length > MAX_DEPTH:
            raise ValueError(f"draft paths of {length} tokens are longer than the drafter's "
                             f"{MAX_DEPTH}")
        x = x + self.position.weight[:length]
        qkv = self.qkv(self.attn_norm(x)).view(b, length, 3, self.num_attention_heads, -1)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(b, length, h))
        return self._mlp(x)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        n = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(n)) * self.up(n))

    def path_step(self, x: torch.Tensor, depth: int, path: tuple[torch.Tensor, torch.Tensor] | None,
                  context=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One draft level, the interface both drafter layers share: inputs ``x`` [N, H] at
        ``depth`` of the path whose earlier levels' keys/values are ``path`` (None at depth 0).
        This layer reads no ``context``."""
        prediction, keys, values = self.extend(x, *(path or (None, None)))
        return prediction, (keys, values)

    def extend(self, x: torch.Tensor, keys: torch.Tensor | None, values: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One more position: ``x`` [B, H] is the input at position j (= the length of ``keys``),
        ``keys``/``values`` [B, heads, j, head dim] the earlier positions' (None at j = 0). Returns
        the prediction at j (what :meth:`forward` gives there) and the keys/values through j, so a
        path grows by one layer pass per token."""
        b, h = x.shape
        j = 0 if keys is None else keys.shape[2]
        if j >= MAX_DEPTH:
            raise ValueError(f"draft paths of {j + 1} tokens are longer than the drafter's "
                             f"{MAX_DEPTH}")
        x = x + self.position.weight[j]
        q, k, v = self.qkv(self.attn_norm(x)).view(b, 3, self.num_attention_heads, -1).unbind(1)
        keys = k[:, :, None] if keys is None else torch.cat([keys, k[:, :, None]], dim=2)
        values = v[:, :, None] if values is None else torch.cat([values, v[:, :, None]], dim=2)
        # the one query sees all j + 1 positions
        attended = F.scaled_dot_product_attention(q[:, :, None], keys, values)
        return self._mlp(x + self.out(attended.reshape(b, h))), keys, values


@register
class AutoregressiveDrafter(PathDrafter):
    """The layer drafts the path: each state is its predicted hidden state (and its attention keys
    and values along the path), projected by every head's shared ``lm_head``. Stored as
    ``drafter.*`` beside ``drafter.depth``: K and the attention heads (and a 1 for the context
    drafter)."""

    name = "autoregressive"
    predicts_hidden = True
    key_prefixes = ("drafter.",)
    layer_class: ClassVar[type[DraftLayer]] = DraftLayer
    depth_flags: ClassVar[tuple[int, ...]] = ()  # in drafter.depth after K and the attention heads

    @classmethod
    def check_config(cls, config: HeadConfig) -> None:
        if config.num_layers or not config.shared_lm_head:
            raise ValueError("the autoregressive drafter projects with the shared lm_head and has "
                             "no head blocks")
        if config.attention_heads < 1:
            raise ValueError(f"the {cls.name} drafter's layer needs attention_heads ≥ 1")

    def build(self, config: HeadConfig) -> None:
        self.drafter = self.layer_class(config.hidden_size, config.attention_heads)
        depth = [config.num_heads, config.attention_heads, *self.depth_flags]
        self.register_buffer("drafter_depth", torch.tensor(depth))

    def own_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"drafter.{k}": v for k, v in self.drafter.named_parameters()}
        tensors["drafter.depth"] = self.drafter_depth
        return tensors

    def path_start(self, hidden: torch.Tensor, tokens: torch.Tensor, context=None
                   ) -> tuple[torch.Tensor, ...]:
        """The layer's predicted hidden state and its keys and values, so that :meth:`path_advance`
        adds one layer pass per token."""
        inputs = self.drafter.inputs(hidden, self.embed(tokens, hidden))
        prediction, (keys, values) = self.drafter.path_step(inputs, 0, None, context)
        return prediction, keys, values

    def path_advance(self, state: tuple[torch.Tensor, ...], tokens: torch.Tensor, j: int,
                     context=None) -> tuple[torch.Tensor, ...]:
        """The prediction from (ĥ_j, t_j) attending over the path so far (and, for the context
        drafter, over ``context`` too)."""
        prediction, keys, values = state
        inputs = self.drafter.inputs(prediction, self.embed(tokens, prediction))
        prediction, (keys, values) = self.drafter.path_step(inputs, j, (keys, values), context)
        return prediction, keys, values

    @classmethod
    def recognises(cls, state: dict[str, torch.Tensor]) -> bool:
        if not (cls.matches_keys(state) and "drafter.depth" in state):
            return False
        return tuple(int(x) for x in state["drafter.depth"].tolist()[2:]) == cls.depth_flags

    @classmethod
    def infer_config(cls, state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int
                     ) -> HeadConfig:
        """Its depth and attention heads are stored (``drafter.depth``); it has no per-head
        tensors."""
        depth, attention_heads = (int(x) for x in state["drafter.depth"].tolist()[:2])
        if "drafter.fc.weight" not in state:
            raise ValueError("the drafter's tensors are incomplete: drafter.fc.weight is missing")
        width = state["drafter.fc.weight"].shape[0]
        if width != hidden_size:
            raise ValueError(f"the drafter was trained for hidden size {width}, the base model has "
                             f"{hidden_size}")
        return HeadConfig(depth, 0, hidden_size, vocab_size, shared_lm_head=True, drafter=cls.name,
                          attention_heads=attention_heads)

    @classmethod
    def stored_heads(cls, keys: Iterable[str], declared: dict) -> int | None:
        """Its depth, as the metadata beside the tensors declares it (the names alone cannot
        tell)."""
        num = declared.get("num_heads")
        return num if isinstance(num, int) else None

    @classmethod
    def training_config(cls, num_heads: int, num_layers: int, hidden_size: int, vocab_size: int,
                        shared_lm_head: bool, attention_heads: int) -> HeadConfig:
        """One decoder layer projected by the shared lm_head, whatever the head-block settings
        say."""
        return HeadConfig(num_heads, 0, hidden_size, vocab_size, True, drafter=cls.name,
                          attention_heads=attention_heads)
