"""Static sparse trees: the base model's next token as root, then fixed top-k choices of each head below it."""

from __future__ import annotations

import torch

from ..trees import TreePath, tree_nodes
from .accept import Acceptance
from .base import DecodeState, Strategy, Tree, Verified
from .fixed_tree import DevicePlan, FixedTree


class StaticTree(Strategy):
    """Drafts the same tree shape every step (so its attention mask is built once); only the tokens change."""

    name = "tree"

    def __init__(self, paths: list[TreePath], acceptance: Acceptance) -> None:
        parents, heads, ranks = tree_nodes(paths)
        self.paths = paths
        self.acceptance = acceptance
        self.num_heads = max(heads) + 1
        self.max_rank = max(ranks) + 1
        # node 0 is the root; path i becomes node i + 1
        self._parents = [-1] + [p + 1 if p >= 0 else 0 for p in parents]
        self._heads, self._ranks = heads, ranks
        self._depths = [0] + [len(p) for p in paths]

    def first_token(self, state: DecodeState) -> int | None:
        return self.acceptance.first_token(state)

    def ranked(self, head_logits: torch.Tensor) -> torch.Tensor:
        """[K, R] each head's R best token ids: what the tree's (head, rank) nodes draw from."""
        return torch.topk(head_logits[: self.num_heads], self.max_rank, dim=-1).indices

    def draft(self, state: DecodeState, budget: int) -> Tree:
        return self.draft_ranked(state.argmax(), self.ranked(state.head_logits).tolist(), budget)

    def draft_ranked(self, root: int, top: list[list[int]], budget: int) -> Tree:
        """The tree from the root token and each head's ranked token ids (``top[head][rank]``)."""
        keep = [i for i, d in enumerate(self._depths) if d < budget]  # depth-limited subtrees stay closed
        if len(keep) == len(self._depths):
            tokens = [root] + [top[h][r] for h, r in zip(self._heads, self._ranks)]
            return Tree(tokens, self._parents)
        index = {old: new for new, old in enumerate(keep)}
        tokens = [root] + [top[self._heads[i - 1]][self._ranks[i - 1]] for i in keep[1:]]
        parents = [-1] + [index[self._parents[i]] for i in keep[1:]]
        return Tree(tokens, parents)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return self.acceptance.accept(state, tree, verified)

    def device_plan(self, device: torch.device) -> DevicePlan:
        """The root is the base argmax; node i + 1 is rank ``ranks[i]`` of head ``heads[i]``, gathered by index."""
        heads = torch.tensor(self._heads, device=device)
        ranks = torch.tensor(self._ranks, device=device)

        def draft(logits: torch.Tensor, head_logits: torch.Tensor, max_depth: torch.Tensor) -> torch.Tensor:
            return torch.cat([logits.argmax()[None], self.ranked(head_logits)[heads, ranks]])

        return DevicePlan(FixedTree(self._parents, device), self.num_heads, draft, self.acceptance.select_on_device)
