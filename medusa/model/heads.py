"""Medusa heads: K small residual MLPs on the base model's last hidden state.

Head k (0-based) predicts the token k+2 positions ahead of the current one, i.e. k+1 positions after the base
model's own next token. Each head is L residual blocks followed by a vocabulary projection, laid out exactly as
FasterDecoding's ``medusa_head`` ModuleList (``{k}.{j}.linear.weight``, ``{k}.{L}.weight``) so that their
checkpoints load without key renaming and code written against their model can index ``model.medusa_head[k]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from medusa.model.context_layer import ContextDraftLayer
from medusa.model.draft_layer import DraftLayer

DRAFT_VOCAB = "draft_vocab"  # the optional tensor of token ids a drafter drafts from (MedusaHeads.set_draft_vocab)


@dataclass(frozen=True)
class HeadConfig:
    """Shape of a set of heads; ``shared_lm_head`` reuses the base projection instead of K vocab-sized copies."""

    num_heads: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    shared_lm_head: bool = False
    token_input: bool = False  # heads also see the embedding of the base model's next token (see MedusaHeads)
    sequential: bool = False  # head k also sees the draft tokens before it on its path (Hydra-style; see MedusaHeads)
    autoregressive: int = 0  # > 0: an EAGLE-style one-layer drafter with this many attention heads (draft_layer.py)
    context: bool = False  # the autoregressive drafter also attends over the whole context (context_layer.py)

    @property
    def drafter(self) -> str:
        """The drafter name ``train-heads --drafter`` uses for this layout."""
        if self.autoregressive:
            return "context" if self.context else "autoregressive"
        return "sequential" if self.sequential else "token-input" if self.token_input else "medusa"

    @property
    def path_dependent(self) -> bool:
        """Drafts depend on the tokens above them: trees and beams are drafted depth by depth."""
        return self.sequential or bool(self.autoregressive)

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    """``x + SiLU(W x + b)`` with W and b zero-initialised, so a fresh head starts as the identity.

    (FasterDecoding zeroes only W, leaving a random bias: their fresh heads are not quite the base model.)
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


class MedusaHeads(nn.Module):
    """K heads; ``self.heads[k](hidden)`` gives head k's logits, whether its projection is owned or shared.

    With ``token_input`` each head first adds ``U_k · embed(next token)`` to the hidden state, where the next token
    is the base model's own argmax at that position. That token is known before drafting (it is the tree's root,
    and under greedy acceptance it is always accepted), so the heads need not guess it: head k then predicts
    token k+1 after a *known* token, as EAGLE/Hydra heads do, but without their per-depth sequential calls.
    U_k starts at zero, so fresh heads still reproduce the base model. FasterDecoding's format cannot hold U_k.

    With ``sequential`` (Hydra-style) head k sees every token of its draft path: its input is
    ``h + Σ_{j≤k} V_j · embed(t_j)``, where t_0 is the next token and t_1..t_k the draft tokens chosen at depths
    1..k. A tree is then drafted depth by depth, one batched head call per depth (:meth:`level_logits`), and each
    node's children depend on the tokens above it. V_j (one per depth, shared by the heads below it) start at zero:
    fresh sequential heads are plain Medusa heads.
    """

    def __init__(self, config: HeadConfig, lm_head: nn.Module, embedding: nn.Module | None = None) -> None:
        super().__init__()
        if sum(map(bool, (config.token_input, config.sequential, config.autoregressive))) > 1:
            raise ValueError("heads are token-input, sequential or autoregressive: one of them")
        if config.autoregressive and (config.num_layers or not config.shared_lm_head):
            raise ValueError("the autoregressive drafter projects with the shared lm_head and has no head blocks")
        if config.context and not config.autoregressive:
            raise ValueError("only the autoregressive drafter attends over the context")
        self.config = config
        self.token_proj: nn.ModuleList | None = None
        self.seq_proj: nn.ModuleList | None = None
        self.drafter: DraftLayer | None = None
        if config.autoregressive:
            if embedding is None:
                raise ValueError("the autoregressive drafter needs the base model's input embedding")
            self._embedding = (embedding,)
            layer = ContextDraftLayer if config.context else DraftLayer
            self.drafter = layer(config.hidden_size, config.autoregressive)
            self.register_buffer("drafter_depth", torch.tensor([config.num_heads, config.autoregressive]
                                                               + [1] * config.context))
        if config.token_input or config.sequential:
            if embedding is None:
                raise ValueError(f"{config.drafter} heads need the base model's input embedding")
            self._embedding = (embedding,)  # the base's module, not registered: never trained or saved here
            projections = nn.ModuleList(
                nn.Linear(config.hidden_size, config.hidden_size, bias=False) for _ in range(config.num_heads))
            for proj in projections:
                nn.init.zeros_(proj.weight)
            if config.sequential:
                self.seq_proj = projections
            else:
                self.token_proj = projections
        heads = []
        for _ in range(config.num_heads):
            blocks: list[nn.Module] = [ResBlock(config.hidden_size) for _ in range(config.num_layers)]
            if config.shared_lm_head:
                blocks.append(lm_head)  # the same module object in every head: no copies in memory
            else:
                proj = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
                with torch.no_grad():
                    proj.weight.copy_(lm_head.weight)
                blocks.append(proj)
            heads.append(nn.Sequential(*blocks))
        self.heads = nn.ModuleList(heads)
        self.draft_vocab: torch.Tensor | None  # set_draft_vocab: the token ids drafts are chosen from, or None
        self.register_buffer("draft_vocab", None, persistent=False)  # saved by head_state_dict
        self.register_buffer("_vocab_weight", None, persistent=False)

    def set_draft_vocab(self, ids: torch.Tensor | None) -> None:
        """Draft from ``ids`` only (None: the whole vocabulary). Path-dependent drafters project their states with
        the base ``lm_head`` once per tree level; restricted to the tokens the drafter's own text uses most (FR-Spec's
        frequency-ranked draft vocabulary) that projection and its top-k read a fraction of the rows. Verification
        still scores the whole vocabulary, so outputs do not change: a token outside ``ids`` is never drafted, and
        decoding takes one step more where it comes. Set it before an engine captures its steps: the rows are
        copied here, and captured graphs keep the tensors they were captured with."""
        self.draft_vocab = self._vocab_weight = None
        if ids is None:
            return
        if not (self.config.path_dependent and self.config.shared_lm_head):
            raise ValueError("a draft vocabulary is for sequential and autoregressive drafters that share the base "
                             "lm_head")
        projection = self.heads[0][-1].weight
        ids = torch.as_tensor(ids, dtype=torch.long).flatten().unique().to(projection.device)  # sorted, no repeats
        if not len(ids) or int(ids[0]) < 0 or int(ids[-1]) >= projection.shape[0]:
            raise ValueError(f"draft vocabulary ids must lie in 0..{projection.shape[0] - 1}")
        self.draft_vocab = ids
        # a copy of the projection's rows (moved and cast with the heads; the base lm_head is frozen)
        self._vocab_weight = projection.detach().index_select(0, ids).clone()

    def draft_logits(self, state: torch.Tensor, depth: int) -> torch.Tensor:
        """Head ``depth``'s logits [N, V] from what it reads; outside the draft vocabulary they are -inf."""
        if self.draft_vocab is None:
            return self.heads[depth](state)
        sub = self._vocab_logits(state, depth)
        full = sub.new_full((sub.shape[0], self.heads[depth][-1].weight.shape[0]), float("-inf"))
        return full.index_copy_(1, self.draft_vocab, sub)

    def draft_top(self, state: torch.Tensor, depth: int, k: int) -> torch.Tensor:
        """The ``k`` best token ids [N, k] of :meth:`draft_logits`, best first, without building [N, V] logits."""
        if self.draft_vocab is None or k > len(self.draft_vocab):  # (a vocabulary smaller than k: -inf ranks too)
            return torch.topk(self.draft_logits(state, depth), k, dim=-1).indices
        return self.draft_vocab[torch.topk(self._vocab_logits(state, depth), k, dim=-1).indices]

    def _vocab_logits(self, state: torch.Tensor, depth: int) -> torch.Tensor:
        head = self.heads[depth]
        for block in list(head)[:-1]:
            state = block(state)
        return nn.functional.linear(state, self._vocab_weight)

    def __len__(self) -> int:
        return self.config.num_heads

    def forward(self, hidden: torch.Tensor, num_heads: int | None = None,
                next_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the first ``num_heads`` heads, stacked as [K, *hidden.shape[:-1], V].

        ``next_tokens`` (shaped like ``hidden`` without its last dimension) is needed by token-input heads only.
        """
        k = self.config.num_heads if num_heads is None else num_heads
        if self.config.path_dependent:
            if next_tokens is None:
                raise ValueError(f"{self.config.drafter} heads need the next token at each position")
            return self.greedy_chain(hidden, next_tokens, k)
        if self.token_proj is None:
            return torch.stack([self.heads[i](hidden) for i in range(k)], dim=0)
        if next_tokens is None:
            raise ValueError("token-input heads need the base model's next token at each position")
        emb = self._embed(next_tokens, hidden)
        return torch.stack([self.heads[i](hidden + self.token_proj[i](emb)) for i in range(k)], dim=0)

    def teacher_forced(self, hidden: torch.Tensor, paths: torch.Tensor, num_heads: int | None = None) -> torch.Tensor:
        """[K, *hidden.shape[:-1], V] with each head fed the true tokens before its target (training, evaluation).

        ``paths[..., j]`` is t_j, the j-th token after the position (t_0 its next token); only path-dependent
        drafters (sequential, autoregressive) read past t_0.
        """
        k = self.config.num_heads if num_heads is None else num_heads
        if not self.config.path_dependent:
            return self(hidden, k, paths[..., 0])
        return self.teacher_forced_states(hidden, paths, k)[0]

    def teacher_forced_states(self, hidden: torch.Tensor, paths: torch.Tensor, num_heads: int | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`teacher_forced`'s logits and the states the heads projected, [K, *hidden.shape]: for the
        autoregressive drafter its predicted hidden states, which training can also hold to the base model's own
        (EAGLE's feature loss). Path-dependent drafters only."""
        if not self.config.path_dependent:
            raise ValueError(f"{self.config.drafter} heads have no per-path states")
        k = self.config.num_heads if num_heads is None else num_heads
        states = self._path_states(hidden, paths[..., :k])
        # with a draft vocabulary (set after training) the logits are the drafted ones: calibration and measurement
        # rank what the decoder can draft
        return torch.stack([self.draft_logits(states[i], i) for i in range(k)], dim=0), torch.stack(states, dim=0)

    def greedy_chain(self, hidden: torch.Tensor, next_tokens: torch.Tensor, num_heads: int) -> torch.Tensor:
        """Path-dependent heads along their own greedy path (t_j = head j−1's argmax): the path a chain draft takes,
        and what a caller that asks for "each head's logits" without a path gets."""
        lead = hidden.shape[:-1]
        state = self.path_start(hidden.reshape(-1, hidden.shape[-1]), next_tokens.reshape(-1))
        out = []
        for i in range(num_heads):
            logits = self.draft_logits(state[0], i)
            out.append(logits.reshape(*lead, -1))
            if i + 1 < num_heads:
                state = self.path_advance(state, logits.argmax(-1), i + 1)
        return torch.stack(out, dim=0)

    def level_logits(self, hidden: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Head d's logits below each draft path: ``paths`` [N, d+1] holds t_0..t_d; ``hidden`` [H] or [N, H].

        Independent heads ignore the path beyond t_0 (and plain ones t_0 too), so every drafter can be asked
        the same question.
        """
        d = paths.shape[-1] - 1
        paths = paths.to(hidden.device)
        hidden = hidden.expand(paths.shape[0], hidden.shape[-1]) if hidden.dim() == 1 else hidden
        if not self.config.path_dependent:
            return self(hidden, d + 1, paths[:, 0])[d]
        return self.draft_logits(self._path_states(hidden, paths)[-1], d)

    def _path_states(self, hidden: torch.Tensor, paths: torch.Tensor) -> list[torch.Tensor]:
        """What head j reads below t_0..t_j, for every j < ``paths.shape[-1]`` (each shaped like ``hidden``)."""
        lead = hidden.shape[:-1]
        flat_p = paths.reshape(-1, paths.shape[-1])
        state = self.path_start(hidden.reshape(-1, hidden.shape[-1]), flat_p[:, 0])
        states = [state[0].reshape(*lead, -1)]
        for j in range(1, flat_p.shape[-1]):
            state = self.path_advance(state, flat_p[:, j], j)
            states.append(state[0].reshape(*lead, -1))
        return states

    def path_start(self, hidden: torch.Tensor, tokens: torch.Tensor, context=None) -> tuple[torch.Tensor, ...]:
        """A path-dependent drafter's state after t_0 (``tokens`` [N]) at ``hidden`` [N, H]; its first element is
        what head 0 reads. Sequential heads: ``(h + V_0·embed(t_0),)``. The autoregressive drafter: its predicted
        hidden state and its layer's keys and values, so that :meth:`path_advance` adds one layer pass per token.
        The context drafter also needs the ``context`` below the draft (a
        :class:`~medusa.model.drafter_context.ContextView`; the draft starts at its position)."""
        emb = self._embed(tokens, hidden)
        if self.seq_proj is not None:
            return (hidden + self.seq_proj[0](emb),)
        prediction, (keys, values) = self.drafter.path_step(self.drafter.inputs(hidden, emb), 0, None, context)
        return prediction, keys, values

    def path_advance(self, state: tuple[torch.Tensor, ...], tokens: torch.Tensor, j: int, context=None
                     ) -> tuple[torch.Tensor, ...]:
        """The state after t_j from the state after t_{j-1} (rows aligned): ``h + Σ_{i≤j} V_i·embed(t_i)`` for
        sequential heads; for the drafter, its prediction from (ĥ_j, t_j) attending over the path so far (and,
        for the context drafter, over ``context`` too)."""
        emb = self._embed(tokens, state[0])
        if self.seq_proj is not None:
            return (state[0] + self.seq_proj[j](emb),)
        prediction, keys, values = state
        prediction, (keys, values) = self.drafter.path_step(self.drafter.inputs(prediction, emb), j, (keys, values),
                                                            context)
        return prediction, keys, values

    def context_entries(self, hidden: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The context drafter's keys and values [heads, m, d] for positions ``positions`` [m]: the base model's
        hidden states there [m, H] (any device and dtype) and the tokens after them [m]. Both its caches, the
        eager loop's and the fast engine's buffer, are filled by this."""
        weight = self.drafter.fc.weight
        hidden = hidden.to(weight.device, weight.dtype)
        tokens = torch.as_tensor(tokens, device=weight.device, dtype=torch.long)
        return self.drafter.entries(hidden, self._embed(tokens, hidden), positions.to(weight.device))

    def _embed(self, next_tokens: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        table = self._embedding[0]
        return table(next_tokens.to(table.weight.device)).to(hidden.device, hidden.dtype)

    def standalone(self, lm_head: nn.Module) -> nn.ModuleList:
        """Heads callable on hidden states alone, as FasterDecoding's ``medusa_head[k](hidden)``: token-input heads
        take the base model's argmax from ``lm_head`` themselves; plain heads are returned as they are."""
        if self.token_proj is None and not self.config.path_dependent:
            return self.heads
        return nn.ModuleList(_StandaloneHead(self, k, lm_head) for k in range(self.config.num_heads))

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The heads' own tensors in FasterDecoding's key layout (+ ``token_proj.k.weight``); a shared projection is
        left out."""
        skip = f".{self.config.num_layers}.weight" if self.config.shared_lm_head else None
        state = {
            k: v.detach()
            for k, v in self.heads.state_dict().items()
            if skip is None or not k.endswith(skip)
        }
        for prefix, projections in self._projections():
            state.update({f"{prefix}.{k}": v.detach() for k, v in projections.state_dict().items()})
        if self.drafter is not None:
            state.update({f"drafter.{k}": v.detach() for k, v in self.drafter.state_dict().items()})
            state["drafter.depth"] = self.drafter_depth.detach()
        if self.draft_vocab is not None:
            state[DRAFT_VOCAB] = self.draft_vocab.detach()
        return state

    def _projections(self) -> list[tuple[str, nn.ModuleList]]:
        return [(name, m) for name, m in (("token_proj", self.token_proj), ("seq_proj", self.seq_proj))
                if m is not None]

    def _own_parameters(self) -> dict[str, torch.Tensor]:
        params = dict(self.heads.named_parameters(remove_duplicate=False))
        for prefix, projections in self._projections():
            params.update({f"{prefix}.{k}": v for k, v in projections.named_parameters()})
        if self.drafter is not None:
            params.update({f"drafter.{k}": v for k, v in self.drafter.named_parameters()})
            params["drafter.depth"] = self.drafter_depth
        return params

    def load_head_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load tensors in FasterDecoding's layout; every tensor this head set owns must be present."""
        self.set_draft_vocab(state.get(DRAFT_VOCAB))  # optional: heads without one draft from every token
        own = self.head_state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise KeyError(f"head weights missing: {', '.join(missing[:4])}")
        with torch.no_grad():
            params = self._own_parameters()
            for name in set(own) - {DRAFT_VOCAB}:
                target = params[name]
                src = state[name]
                if tuple(src.shape) != tuple(target.shape):
                    raise ValueError(f"head weight {name} has shape {tuple(src.shape)}, expected {tuple(target.shape)}")
                target.copy_(src.to(dtype=target.dtype, device=target.device))


class _StandaloneHead(nn.Module):
    """Token-input head k with its next token computed from the base projection (same result as the decoder's)."""

    def __init__(self, heads: MedusaHeads, k: int, lm_head: nn.Module) -> None:
        super().__init__()
        self._refs = (heads, lm_head)  # not registered: the weights belong to the heads and the base
        self.k = k

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        heads, lm_head = self._refs
        next_tokens = lm_head(hidden).argmax(-1)
        if heads.config.path_dependent:  # along the heads' own greedy path
            return heads.greedy_chain(hidden, next_tokens, self.k + 1)[self.k]
        emb = heads._embed(next_tokens, hidden)
        return heads.heads[self.k](hidden + heads.token_proj[self.k](emb))


def infer_head_config(state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int) -> HeadConfig:
    """Read K, L and projection sharing from the tensors themselves (some uploaded configs understate K)."""
    heads: dict[int, set[int]] = {}
    if "drafter.depth" in state:  # the autoregressive drafter: its depth and attention heads are stored
        depth, attention_heads, *context = (int(x) for x in state["drafter.depth"].tolist())
        width = state["drafter.fc.weight"].shape[0]
        if width != hidden_size:
            raise ValueError(f"the drafter was trained for hidden size {width}, the base model has {hidden_size}")
        return HeadConfig(depth, 0, hidden_size, vocab_size, shared_lm_head=True, autoregressive=attention_heads,
                          context=bool(context and context[0]))
    state = {k: v for k, v in state.items() if k != DRAFT_VOCAB}
    token_input = any(key.startswith("token_proj.") for key in state)
    sequential = any(key.startswith("seq_proj.") for key in state)
    if token_input and sequential:
        raise ValueError("head weights hold both token_proj and seq_proj: not one drafter")
    for key in state:
        if key.startswith(("token_proj.", "seq_proj.")):
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
        raise ValueError(f"heads were trained for hidden size {width}, the base model has {hidden_size}")
    if owned[0] and state[f"0.{num_layers}.weight"].shape[0] != vocab_size:
        raise ValueError(
            f"heads project to {state[f'0.{num_layers}.weight'].shape[0]} tokens, the base model has {vocab_size}"
        )
    for prefix, used in (("token_proj", token_input), ("seq_proj", sequential)):
        if used and any(f"{prefix}.{k}.weight" not in state for k in range(num_heads)):
            raise ValueError(f"some heads have a {prefix} projection and some do not")
    return HeadConfig(num_heads, num_layers, hidden_size, vocab_size, shared_lm_head=not owned[0],
                      token_input=token_input, sequential=sequential)
