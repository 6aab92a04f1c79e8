"""Drafting level by level with path-dependent drafters, each level computed from the one before.

A tree (static or dynamic) or a beam search asks, depth by depth, for the head logits below a set of
draft paths, and every path of a level extends a path of the level before by one token. Asked afresh
each time, a sequential head recomputes ``h + Σ V_j·embed(t_j)`` along the whole path, and the
autoregressive drafter runs its layer over the whole path (1 + 2 + … + D positions for a depth-D
draft, plus a token's worth of attention each). A :class:`LevelDrafter` lives for one draft and
keeps each row's state from the last level (the running sum; the drafter's prediction and its
attention keys/values), finds each new path's parent row by comparing token prefixes on the device,
and computes the one new position: one layer pass per level (PathDrafter.path_advance, the step that
teacher forcing and greedy chains take too).

Every caller here asks level after level (the tests check that no call falls back). A call that does
not extend the last one (its depth, or a prefix not among the last level's paths) starts over from
the hidden state, which gives the same logits. On CUDA the prefix check is skipped, since it would
synchronise with the host inside a captured step; there a caller that broke the contract would only
draft worse tokens: under greedy acceptance that never changes the output (verification decides what
is kept), under typical acceptance it changes which tokens pass.
"""

from __future__ import annotations

import torch


class LevelDrafter:
    """``drafter(paths [N, d+1]) → [N, V]``: head d's logits below each path (t_0 = the next token)
    at ``hidden`` [H], for one draft of ``heads`` (a :class:`~medusa.drafters.Drafter`). ``hidden``
    sits with the heads; ``out_device`` (a model split over GPUs: the caller's device) is where
    logits and ids are returned."""

    def __init__(
        self, heads, hidden: torch.Tensor, context=None, out_device: torch.device | None = None
    ) -> None:
        # context: the context drafter's view
        self.heads, self.hidden, self.context = heads, hidden, context
        self.out_device = out_device
        self._paths: torch.Tensor | None = None  # the last level's paths [M, d]
        self._state: tuple[torch.Tensor, ...] = ()  # per row: (sum,) or (prediction, keys, values)
        # calls that had to start over (for tests: callers ask level after level)
        self.fallbacks = 0
        # compare prefixes on the host (CPU only); off under torch.vmap (the batched step)
        self.check_prefixes = True

    def __call__(self, paths: torch.Tensor) -> torch.Tensor:
        paths = paths.to(self.hidden.device)
        if not self.heads.path_dependent:
            return self._out(self.heads.level_logits(self.hidden, paths))
        return self._out(self.heads.draft_logits(self._advance(paths), paths.shape[1] - 1))

    def top(self, paths: torch.Tensor, k: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The ``k`` best token ids [N, k] below each path, best first: ``topk(self(paths), k)``,
        which with a draft vocabulary (Drafter.set_draft_vocab) needs logits for its tokens only.
        ``rows``: each path's parent row among the last level's paths, where the caller knows them
        (a static tree: no prefix comparison)."""
        paths = paths.to(self.hidden.device)
        if not self.heads.path_dependent:
            return torch.topk(self(paths), k, dim=-1).indices
        rows = None if rows is None else rows.to(self.hidden.device)
        return self._out(self.heads.draft_top(self._advance(paths, rows), paths.shape[1] - 1, k))

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.out_device is None else t.to(self.out_device)

    def _advance(self, paths: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The drafter's state below each path (what head d reads), kept for the next level."""
        heads = self.heads
        depth = paths.shape[1] - 1
        extends = self._paths is not None and self._paths.shape[1] == depth and depth > 0
        rows = rows if rows is not None and extends else self._parent_rows(paths)
        # a first level, or a call that does not extend the last one: from the hidden state
        if rows is None:
            hidden = (
                self.hidden.expand(paths.shape[0], -1) if self.hidden.dim() == 1 else self.hidden
            )
            state = heads.path_start(hidden, paths[:, 0], self.context)
            for j in range(1, depth + 1):
                state = heads.path_advance(state, paths[:, j], j, self.context)
        else:
            state = heads.path_advance(
                tuple(t.index_select(0, rows) for t in self._state),
                paths[:, depth],
                depth,
                self.context,
            )
        self._paths, self._state = paths, state
        return state[0]

    def _parent_rows(self, paths: torch.Tensor) -> torch.Tensor | None:
        """Each path's row among the last level's paths (its prefix), or None when this call does
        not extend them."""
        last = self._paths
        if paths.shape[1] == 1 or last is None or last.shape[1] != paths.shape[1] - 1:
            if paths.shape[1] > 1:
                self.fallbacks += 1
            return None
        same = (paths[:, None, :-1] == last[None]).all(-1)  # [N, M]
        # a prefix the last level did not have
        if self.check_prefixes and not paths.is_cuda and not bool(same.any(1).all()):
            self.fallbacks += 1
            return None
        return same.to(torch.int32).argmax(1)
