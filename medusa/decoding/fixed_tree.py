"""Fixed-shape draft trees for the fast engine: every index tensor is built once, so a step is pure
tensor work.

A strategy that runs on the device drafts the same node layout every step (a static tree;
multi-head's W beams as W separate chains of S+1 nodes, unmerged, so the node count never changes).
From the parents alone this module precomputes, on the device: each node's depth, its ancestors (a
boolean matrix), its root-to-node path (padded), and which rows of the verify logits judge it.
Acceptance then needs no host round trip: a node is accepted when all its ancestors pass the rule
(one masked ``any`` over the ancestor matrix), and the deepest such node wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from medusa.decoding.sampling import Sampling


class FixedTree:
    """Index tensors of one draft layout; ``parents[i] < i`` or -1 for first-level nodes (as
    :class:`Tree`)."""

    def __init__(self, parents: list[int], device: torch.device | str) -> None:
        n = len(parents)
        depths: list[int] = []
        for i, p in enumerate(parents):
            if not -1 <= p < i:
                raise ValueError(f"node {i} has parent {p}: parents must precede their children")
            depths.append(0 if p < 0 else depths[p] + 1)
        ancestors = torch.zeros(n, n, dtype=torch.bool)
        paths = []
        for i, p in enumerate(parents):
            ancestors[i, i] = True
            if p >= 0:
                ancestors[i] |= ancestors[p]
            # ancestors precede descendants: root first
            path = [j for j in range(i + 1) if ancestors[i, j]]
            paths.append(path)
        self.parents = list(parents)
        self.size = n
        self.max_depth = max(depths)
        width = self.max_depth + 1
        self.device = torch.device(device)
        self.depth = torch.tensor(depths, device=device)
        self.ancestors = ancestors.to(device)
        self.path = torch.tensor(
            [path + [path[-1]] * (width - len(path)) for path in paths], device=device
        )
        # row 0: the committed last logits
        self.parent_row = torch.tensor([p + 1 for p in parents], device=device)
        has_child = set(parents)
        self.leaf = torch.tensor([i not in has_child for i in range(n)], device=device)
        self.first_level = torch.tensor([p < 0 for p in parents], device=device)

    def mask(
        self, committed: torch.Tensor, columns: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        """Additive mask [1, 1, N, capacity] (``committed`` 0-d) or [B, 1, N, capacity]
        (``committed`` [B], one row per sequence): the committed prefix, then each node's ancestors
        and itself, which sit at slots ``committed + node``."""
        rel = columns - committed[..., None]
        inside = (rel >= 0) & (rel < self.size)
        own = self.ancestors.index_select(1, rel.clamp(0, self.size - 1).reshape(-1))
        own = own.view(self.size, *rel.shape).movedim(0, -2)
        allowed = (rel < 0)[..., None, :] | (inside[..., None, :] & own)
        blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        blocked = blocked.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(-3)
        return blocked if committed.dim() else blocked[None]

    def parent_rows(self, last_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """[N, V] float logits each node's token is judged by: its parent's, or the committed last
        ones."""
        return (
            torch.cat([last_logits[None], logits], dim=0).index_select(0, self.parent_row).float()
        )

    def valid(self, ok: torch.Tensor, max_depth: torch.Tensor) -> torch.Tensor:
        """Nodes whose whole root-to-node path is ok, no deeper than ``max_depth``."""
        return ~(self.ancestors & ~ok[None, :]).any(-1) & (self.depth <= max_depth)

    def path_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Summed ``scores`` along every root-to-node path, in float64 (the host rules sum Python
        floats)."""
        return self.ancestors.double() @ scores.double()

    def deepest(self, valid: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        """The deepest valid node; ties go to the higher score, then the lower index (as the host
        rule's scan)."""
        depth = torch.where(valid, self.depth, -1)
        return self.best_of(valid & (depth == depth.max()), scores)

    @staticmethod
    def best_of(eligible: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
        """The eligible node with the highest score (the first eligible one without scores), the
        lower index on ties."""
        if scores is not None:
            masked = torch.where(eligible, scores, -torch.inf)
            eligible = eligible & (masked == masked.max())
        return eligible.to(torch.int32).argmax()


def causal_prefill_mask(length: int, columns: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, P, capacity]: prompt token i sees slots 0..i."""
    rows = torch.arange(length, device=columns.device)
    allowed = columns[None, :] <= rows[:, None]
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=columns.device)
    return blocked.masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


Select = Callable[..., torch.Tensor]
Draft = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DevicePlan:
    """What a strategy gives the fast engine: its fixed layout, how many heads it reads, and two
    tensor functions.

    ``draft(last_logits [V], head_logits [K, V] | None, max_depth, root) → tokens [N]`` fills the
    layout (nodes deeper than ``max_depth`` are verified but never accepted; ``root`` is the first
    token: the argmax, or the token the last step drew); ``select(tree, last_logits, logits [N, V],
    tokens [N], max_depth, root, noise) → best node`` applies the acceptance rule (``noise``: the
    step's uniforms when it samples). Neither may synchronise with the host: both run inside a
    captured CUDA graph. ``sampling``: the distribution the next first token is drawn from after
    each step (None: the argmax).
    """

    tree: FixedTree
    num_heads: int
    draft: Draft
    select: Select
    sampling: "Sampling | None" = None
