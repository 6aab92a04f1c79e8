"""What every drafter is: K heads on the base model's last hidden state, behind one interface.

Head k (0-based) predicts the token k+2 positions ahead of the current one, i.e. k+1 positions after
the base model's own next token. Every kind keeps its K heads in ``self.heads``, each L residual
blocks followed by a vocabulary projection, laid out exactly as FasterDecoding's ``medusa_head``
ModuleList (``{k}.{j}.linear.weight``, ``{k}.{L}.weight``) so that their checkpoints load without
key renaming and code written against their model can index ``model.medusa_head[k]``. A kind adds
its own modules beside them (:meth:`Drafter.build`) and stores them under its own key prefixes
(:meth:`Drafter.own_tensors`).

The strategies and engines ask a drafter for head logits at a hidden state (:meth:`Drafter.forward`)
or, when its drafts depend on the tokens above them (:attr:`Drafter.path_dependent`), for one
level's logits below each draft path (:meth:`Drafter.level_logits`, built on
:meth:`PathDrafter.path_start` and :meth:`PathDrafter.path_advance`). The registry
(:data:`DRAFTERS`, filled by :func:`register`) maps ``--drafter`` names to classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

DRAFT_VOCAB = "draft_vocab"  # the stored ids a drafter drafts from (Drafter.set_draft_vocab)


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a drafter and its kind's name; ``shared_lm_head`` reuses the base projection instead
    of K vocab-sized copies, ``attention_heads`` sizes the attention of a drafter with a decoder
    layer."""

    num_heads: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    shared_lm_head: bool = False
    drafter: str = "medusa"  # the registry name (``train-heads --drafter``)
    attention_heads: int = 0

    def to_dict(self) -> dict:
        """The shape as ``medusa_heads.json`` stores it, one flag per kind that has one and the
        attention heads under ``autoregressive``: every kind's file keeps its layout (loading reads
        the kind from the tensors)."""
        return {"num_heads": self.num_heads, "num_layers": self.num_layers,
                "hidden_size": self.hidden_size, "vocab_size": self.vocab_size,
                "shared_lm_head": self.shared_lm_head, "token_input": self.drafter == "token-input",
                "sequential": self.drafter == "sequential", "autoregressive": self.attention_heads,
                "context": self.drafter == "context"}


class ResBlock(nn.Module):
    """``x + SiLU(W x + b)`` with W and b zero-initialised, so a fresh head starts as the identity.

    (FasterDecoding zeroes only W, leaving a random bias: their fresh heads are not quite the
    base model.)
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


def zero_projections(config: HeadConfig) -> nn.ModuleList:
    """K bias-free hidden×hidden maps starting at zero (token embeddings added to the hidden state):
    fresh heads that read them are still plain heads."""
    width = config.hidden_size
    projections = nn.ModuleList(nn.Linear(width, width, bias=False)
                                for _ in range(config.num_heads))
    for proj in projections:
        nn.init.zeros_(proj.weight)
    return projections


class Drafter(nn.Module, metaclass=ABCMeta):
    """K heads; ``self.heads[k](x)`` gives head k's logits from what it reads, whether its
    projection is owned or shared. Subclasses set the class attributes, build their own modules in
    :meth:`build` and answer :meth:`head_logits`; independent kinds need nothing else."""

    name: ClassVar[str] = ""  # the registry name
    # drafts depend on the tokens above them: trees and beams are drafted depth by depth
    path_dependent: ClassVar[bool] = False
    reads_next_token: ClassVar[bool] = False  # its logits need t_0, the base's next token
    needs_context: ClassVar[bool] = False  # drafts attend over the committed context
    predicts_hidden: ClassVar[bool] = False  # its path states stand for the base's hidden states
    joint_training: ClassVar[bool] = False  # train-heads --joint-lora can train it with the base
    medusa1_layout: ClassVar[bool] = False  # FasterDecoding's Medusa-1 files can hold it
    key_prefixes: ClassVar[tuple[str, ...]] = ()  # its tensors beside the heads' ``{k}.{j}…``

    def __init__(self, config: HeadConfig, lm_head: nn.Module, embedding: nn.Module | None = None
                 ) -> None:
        super().__init__()
        if config.drafter != self.name:
            raise ValueError(f"a {config.drafter} head config cannot build a {self.name} drafter")
        self.check_config(config)
        self.config = config
        if self.reads_next_token:
            if embedding is None:
                raise ValueError(f"{self.name} heads need the base model's input embedding")
            # the base's module, not registered: never trained or saved here
            self._embedding = (embedding,)
        self.build(config)  # the kind's modules first: parameters keep their order in every file
        heads = []
        for _ in range(config.num_heads):
            blocks: list[nn.Module] = [ResBlock(config.hidden_size)
                                       for _ in range(config.num_layers)]
            if config.shared_lm_head:
                blocks.append(lm_head)  # the same module object in every head: no copies in memory
            else:
                proj = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
                with torch.no_grad():
                    proj.weight.copy_(lm_head.weight)
                blocks.append(proj)
            heads.append(nn.Sequential(*blocks))
        self.heads = nn.ModuleList(heads)
        self.draft_vocab: torch.Tensor | None  # set_draft_vocab: the ids drafts come from, or None
        self.register_buffer("draft_vocab", None, persistent=False)  # saved by head_state_dict
        self.register_buffer("_vocab_weight", None, persistent=False)

    # ---------------------------------------------------------------- what a kind defines

    @classmethod
    def check_config(cls, config: HeadConfig) -> None:
        """Refuse shapes this kind cannot take (a ValueError saying which)."""
        if config.attention_heads:
            raise ValueError(f"{cls.name} heads have no attention layer (attention_heads must be "
                             "0)")

    def build(self, config: HeadConfig) -> None:
        """Create the kind's own modules (none for plain heads)."""

    def own_tensors(self) -> dict[str, torch.Tensor]:
        """The kind's own parameters and buffers under their stored names (``token_proj.0.weight``,
        …)."""
        return {}

    @abstractmethod
    def head_logits(self, hidden: torch.Tensor, next_tokens: torch.Tensor | None, num_heads: int
                    ) -> torch.Tensor:
        """The first ``num_heads`` heads' logits [K, *hidden.shape[:-1], V]; ``next_tokens`` where
        it reads them."""

    # ---------------------------------------------------------------- the interface callers use

    def __len__(self) -> int:
        return self.config.num_heads

    def forward(self, hidden: torch.Tensor, num_heads: int | None = None,
                next_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the first ``num_heads`` heads, stacked as [K, *hidden.shape[:-1], V];
        path-dependent kinds give them along their own greedy path. ``next_tokens`` (shaped like
        ``hidden`` without its last dimension) is needed where :attr:`reads_next_token`."""
        k = self.config.num_heads if num_heads is None else num_heads
        if self.reads_next_token and next_tokens is None:
            raise ValueError(f"{self.name} heads need the base model's next token at each position")
        return self.head_logits(hidden, next_tokens, k)

    def level_logits(self, hidden: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Head d's logits below each draft path: ``paths`` [N, d+1] holds t_0..t_d; ``hidden`` [H]
        or [N, H].

        Independent heads ignore the path beyond t_0 (and plain ones t_0 too), so every drafter can
        be asked the same question.
        """
        d = paths.shape[-1] - 1
        paths = paths.to(hidden.device)
        hidden = hidden.expand(paths.shape[0], hidden.shape[-1]) if hidden.dim() == 1 else hidden
        return self._level(hidden, paths, d)

    def _level(self, hidden: torch.Tensor, paths: torch.Tensor, d: int) -> torch.Tensor:
        return self(hidden, d + 1, paths[:, 0])[d]

    def teacher_forced(self, hidden: torch.Tensor, paths: torch.Tensor, num_heads: int | None = None
                       ) -> torch.Tensor:
        """[K, *hidden.shape[:-1], V] with each head fed the true tokens before its target
        (training, evaluation).

        ``paths[..., j]`` is t_j, the j-th token after the position (t_0 its next token); only
        path-dependent drafters read past t_0.
        """
        k = self.config.num_heads if num_heads is None else num_heads
        return self(hidden, k, paths[..., 0])

    def teacher_forced_states(self, hidden: torch.Tensor, paths: torch.Tensor,
                              num_heads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`teacher_forced`'s logits and the states the heads projected (path-dependent
        drafters only)."""
        raise ValueError(f"{self.name} heads have no per-path states")

    def one_head(self, hidden: torch.Tensor, next_tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Head k's logits alone (FasterDecoding's ``medusa_head[k]``)."""
        return self.head_logits(hidden, next_tokens, k + 1)[k]

    def standalone(self, lm_head: nn.Module) -> nn.ModuleList:
        """Heads callable on hidden states alone, as FasterDecoding's ``medusa_head[k](hidden)``:
        heads that read the next token take the base model's argmax from ``lm_head`` themselves;
        plain heads are returned as they are."""
        if not self.reads_next_token:
            return self.heads
        return nn.ModuleList(_StandaloneHead(self, k, lm_head)
                             for k in range(self.config.num_heads))

    def context_entries(self, hidden: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of committed positions, for kinds that :attr:`needs_context`."""
        raise ValueError(f"{self.name} heads keep no context")

    def new_context(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed key and value buffers for ``capacity`` positions, for kinds that
        :attr:`needs_context`."""
        raise ValueError(f"{self.name} heads keep no context")

    def embed(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The base model's input embedding of ``tokens``, on ``like``'s device and in its dtype."""
        table = self._embedding[0]
        return table(tokens.to(table.weight.device)).to(like.device, like.dtype)

    # ---------------------------------------------------------------- the draft vocabulary

    def set_draft_vocab(self, ids: torch.Tensor | None) -> None:
        """Draft from ``ids`` only (None: the whole vocabulary). Path-dependent drafters project
        their states with the base ``lm_head`` once per tree level; restricted to the tokens the
        drafter's own text uses most (FR-Spec's frequency-ranked draft vocabulary) that projection
        and its top-k read a fraction of the rows. Verification still scores the whole vocabulary,
        so outputs do not change: a token outside ``ids`` is never drafted, and decoding takes one
        step more where it comes. Set it before an engine captures its steps: the rows are copied
        here, and captured graphs keep the tensors they were captured with."""
        self.draft_vocab = self._vocab_weight = None
        if ids is None:
            return
        if not (self.path_dependent and self.config.shared_lm_head):
            raise ValueError("a draft vocabulary is for sequential and autoregressive drafters "
                             "that share the base lm_head")
        projection = self.heads[0][-1].weight
        ids = torch.as_tensor(ids, dtype=torch.long).flatten().unique()  # sorted, no repeats
        ids = ids.to(projection.device)
        if not len(ids) or int(ids[0]) < 0 or int(ids[-1]) >= projection.shape[0]:
            raise ValueError(f"draft vocabulary ids must lie in 0..{projection.shape[0] - 1}")
        self.draft_vocab = ids
        # a copy of the projection's rows (moved and cast with the heads; the base lm_head is
        # frozen)
        self._vocab_weight = projection.detach().index_select(0, ids).clone()

    def draft_logits(self, state: torch.Tensor, depth: int) -> torch.Tensor:
        """Head ``depth``'s logits [N, V] from what it reads; -inf outside the draft vocabulary."""
        if self.draft_vocab is None:
            return self.heads[depth](state)
        sub = self._vocab_logits(state, depth)
        full = sub.new_full((sub.shape[0], self.heads[depth][-1].weight.shape[0]), float("-inf"))
        return full.index_copy_(1, self.draft_vocab, sub)

    def draft_top(self, state: torch.Tensor, depth: int, k: int) -> torch.Tensor:
        """The ``k`` best token ids [N, k] of :meth:`draft_logits`, best first, without building
        [N, V] logits."""
        # (a vocabulary smaller than k: -inf ranks too)
        if self.draft_vocab is None or k > len(self.draft_vocab):
            return torch.topk(self.draft_logits(state, depth), k, dim=-1).indices
        return self.draft_vocab[torch.topk(self._vocab_logits(state, depth), k, dim=-1).indices]

    def _vocab_logits(self, state: torch.Tensor, depth: int) -> torch.Tensor:
        head = self.heads[depth]
        for block in list(head)[:-1]:
            state = block(state)
        return nn.functional.linear(state, self._vocab_weight)

    # ---------------------------------------------------------------- stored tensors

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The drafter's own tensors in FasterDecoding's key layout plus the kind's prefixed ones; a
        shared projection is left out."""
        skip = f".{self.config.num_layers}.weight" if self.config.shared_lm_head else None
        state = {k: v.detach() for k, v in self.heads.state_dict().items()
                 if skip is None or not k.endswith(skip)}
        state.update({k: v.detach() for k, v in self.own_tensors().items()})
        if self.draft_vocab is not None:
            state[DRAFT_VOCAB] = self.draft_vocab.detach()
        return state

    def load_head_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors in the stored layout; every tensor this drafter owns must be present."""
        # optional: drafters without one draft from every token
        self.set_draft_vocab(state.get(DRAFT_VOCAB))
        own = self.head_state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise KeyError(f"head weights missing: {', '.join(missing[:4])}")
        params = {**dict(self.heads.named_parameters(remove_duplicate=False)), **self.own_tensors()}
        with torch.no_grad():
            for name in set(own) - {DRAFT_VOCAB}:
                target = params[name]
                src = state[name]
                if tuple(src.shape) != tuple(target.shape):
                    raise ValueError(f"head weight {name} has shape {tuple(src.shape)}, expected "
                                     f"{tuple(target.shape)}")
                target.copy_(src.to(dtype=target.dtype, device=target.device))

    @classmethod
    def matches_keys(cls, keys: Iterable[str]) -> bool:
        """Whether stored tensor names are this kind's: besides the heads' ``{k}.`` keys, exactly
        its prefixes."""
        found = {key.split(".", 1)[0] + "." for key in keys
                 if key != DRAFT_VOCAB and not key.split(".", 1)[0].isdigit()}
        return found == set(cls.key_prefixes)

    @classmethod
    def recognises(cls, state: dict[str, torch.Tensor]) -> bool:
        """Whether these tensors (the draft vocabulary left out) are a drafter of this kind."""
        return cls.matches_keys(state)

    @classmethod
    def infer_config(cls, state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int
                     ) -> HeadConfig:
        """Read K, L and projection sharing from the tensors themselves (some uploaded configs
        understate K)."""
        num_heads, num_layers, owned = read_heads(state, hidden_size, vocab_size, cls.key_prefixes)
        return HeadConfig(num_heads, num_layers, hidden_size, vocab_size, shared_lm_head=not owned,
                          drafter=cls.name)

    @classmethod
    def stored_heads(cls, keys: Iterable[str], declared: dict) -> int | None:
        """The head count of stored tensors of this kind from their names (``declared``: the
        metadata beside them)."""
        found = {int(key.split(".", 1)[0]) for key in keys if key.split(".", 1)[0].isdigit()}
        return max(found) + 1 if found else None

    @classmethod
    def training_config(cls, num_heads: int, num_layers: int, hidden_size: int, vocab_size: int,
                        shared_lm_head: bool, attention_heads: int) -> HeadConfig:
        """The config ``train-heads`` builds this kind with (``attention_heads``: what a decoder
        layer would use)."""
        return HeadConfig(num_heads, num_layers, hidden_size, vocab_size, shared_lm_head,
                          drafter=cls.name)


class PathDrafter(Drafter):
    """A drafter whose head j reads the draft tokens t_0..t_j above it. A kind defines two steps:
    the state after t_0 (:meth:`path_start`) and after each t_j (:meth:`path_advance`), whose first
    element is what head j projects; teacher forcing, greedy chains, level logits and
    :class:`~medusa.model.level_drafter.LevelDrafter` are built on them."""

    path_dependent = True
    reads_next_token = True

    @abstractmethod
    def path_start(self, hidden: torch.Tensor, tokens: torch.Tensor, context=None
                   ) -> tuple[torch.Tensor, ...]:
        """The state after t_0 (``tokens`` [N]) at ``hidden`` [N, H]; ``context``: what a kind
        that :attr:`needs_context` attends over (a
        :class:`~medusa.model.drafter_context.ContextView`)."""

    @abstractmethod
    def path_advance(self, state: tuple[torch.Tensor, ...], tokens: torch.Tensor, j: int,
                     context=None) -> tuple[torch.Tensor, ...]:
        """The state after t_j from the state after t_{j-1} (rows aligned)."""

    def head_logits(self, hidden: torch.Tensor, next_tokens: torch.Tensor | None, num_heads: int
                    ) -> torch.Tensor:
        return self.greedy_chain(hidden, next_tokens, num_heads)

    def _level(self, hidden: torch.Tensor, paths: torch.Tensor, d: int) -> torch.Tensor:
        return self.draft_logits(self._path_states(hidden, paths)[-1], d)

    def teacher_forced(self, hidden: torch.Tensor, paths: torch.Tensor, num_heads: int | None = None
                       ) -> torch.Tensor:
        return self.teacher_forced_states(hidden, paths, num_heads)[0]

    def teacher_forced_states(self, hidden: torch.Tensor, paths: torch.Tensor,
                              num_heads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`teacher_forced`'s logits and the states the heads projected, [K, *hidden.shape]:
        for the autoregressive drafter its predicted hidden states, which training can also hold to
        the base model's own (EAGLE's feature loss)."""
        k = self.config.num_heads if num_heads is None else num_heads
        states = self._path_states(hidden, paths[..., :k])
        # with a draft vocabulary (set after training) the logits are the drafted ones: calibration
        # and measurement rank what the decoder can draft
        logits = torch.stack([self.draft_logits(states[i], i) for i in range(k)], dim=0)
        return logits, torch.stack(states, dim=0)

    def greedy_chain(self, hidden: torch.Tensor, next_tokens: torch.Tensor, num_heads: int
                     ) -> torch.Tensor:
        """The heads along their own greedy path (t_j = head j−1's argmax): the path a chain draft
        takes, and what a caller that asks for "each head's logits" without a path gets."""
        lead = hidden.shape[:-1]
        state = self.path_start(hidden.reshape(-1, hidden.shape[-1]), next_tokens.reshape(-1))
        out = []
        for i in range(num_heads):
            logits = self.draft_logits(state[0], i)
            out.append(logits.reshape(*lead, -1))
            if i + 1 < num_heads:
                state = self.path_advance(state, logits.argmax(-1), i + 1)
        return torch.stack(out, dim=0)

    def _path_states(self, hidden: torch.Tensor, paths: torch.Tensor) -> list[torch.Tensor]:
        """What head j reads below t_0..t_j, for every j < ``paths.shape[-1]``, each shaped like
        ``hidden``."""
        lead = hidden.shape[:-1]
        flat_p = paths.reshape(-1, paths.shape[-1])
        state = self.path_start(hidden.reshape(-1, hidden.shape[-1]), flat_p[:, 0])
        states = [state[0].reshape(*lead, -1)]
        for j in range(1, flat_p.shape[-1]):
            state = self.path_advance(state, flat_p[:, j], j)
            states.append(state[0].reshape(*lead, -1))
        return states


class _StandaloneHead(nn.Module):
    """Head k with its next token from the base projection (the same result as the decoder's)."""

    def __init__(self, drafter: Drafter, k: int, lm_head: nn.Module) -> None:
        super().__init__()
        self._refs = (drafter, lm_head)  # not registered: the drafter and the base own the weights
        self.k = k

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        drafter, lm_head = self._refs
        return drafter.one_head(hidden, lm_head(hidden).argmax(-1), self.k)


def read_heads(state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int,
               skip: tuple[str, ...] = ()) -> tuple[int, int, bool]:
    """(K, L, whether the heads own their projection) of the ``{k}.{j}...`` tensors in
    FasterDecoding's layout, checked against the base model's widths; keys starting with ``skip``
    belong to the kind."""
    heads: dict[int, set[int]] = {}
    for key in state:
        if key.startswith(skip):
            continue
        parts = key.split(".")
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"unexpected head weight name {key!r}")
        heads.setdefault(int(parts[0]), set()).add(int(parts[1]))
    if not heads:
        raise ValueError("no head weights found")
    num_heads = max(heads) + 1
    if sorted(heads) != list(range(num_heads)):
        raise ValueError(f"head indices are not contiguous: {sorted(heads)}")
    layers = {k: {j for j in js if f"{k}.{j}.linear.weight" in state} for k, js in heads.items()}
    num_layers = len(layers[0])
    if any(len(v) != num_layers for v in layers.values()):
        raise ValueError("heads have different numbers of residual blocks")
    owned = [f"{k}.{num_layers}.weight" in state for k in range(num_heads)]
    if any(owned) and not all(owned):
        raise ValueError("some heads own a vocabulary projection and some do not")
    sample = state["0.0.linear.weight"] if num_layers else state[f"0.{num_layers}.weight"]
    width = sample.shape[-1]
    if width != hidden_size:
        raise ValueError(f"heads were trained for hidden size {width}, the base model has "
                         f"{hidden_size}")
    rows = state[f"0.{num_layers}.weight"].shape[0] if owned[0] else vocab_size
    if rows != vocab_size:
        raise ValueError(f"heads project to {rows} tokens, the base model has {vocab_size}")
    return num_heads, num_layers, owned[0]


DRAFTERS: dict[str, type[Drafter]] = {}  # the registry: --drafter name → class, in registered order


def register(cls: type[Drafter]) -> type[Drafter]:
    """Add a drafter kind under its ``name`` (a class decorator); a name is registered once."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name to register under")
    if DRAFTERS.get(cls.name, cls) is not cls:
        raise ValueError(f"a drafter named {cls.name!r} is registered already "
                         f"({DRAFTERS[cls.name].__name__})")
    DRAFTERS[cls.name] = cls
    return cls
