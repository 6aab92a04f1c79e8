"""Static sparse trees: the base model's next token as root, then fixed top-k choices of each head
below it."""

from __future__ import annotations

import torch

from medusa.decoding.trees import (
    MAX_TREE_DEPTH,
    TreePath,
    builtin_tree,
    load_tree,
    resized_tree,
    tree_nodes,
)
from medusa.decoding.accept import Acceptance, make_acceptance
from medusa.decoding.dynamic_tree import DynamicTree
from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.fixed_tree import DevicePlan, FixedTree
from medusa.decoding.sampling import Sampling


class StaticTree(Strategy):
    """Drafts the same tree shape every step (so its attention mask is built once); only the tokens
    change."""

    name = "tree"
    replayable = True
    samples = True

    @classmethod
    def from_settings(cls, settings) -> Strategy:
        """A dynamic tree when the settings ask for one (--dynamic-tree), else the tree file, the
        tree rebuilt at --tree-size from its calibration, or the built-in tree for the heads."""
        acceptance = make_acceptance(
            settings.acceptance, settings.posterior_threshold, settings.posterior_alpha,
            Sampling(settings.temperature, settings.top_k, settings.top_p, settings.seed),
        )
        if settings.dynamic_tree:
            return DynamicTree(settings.dynamic_tree, settings.num_heads, acceptance)
        if settings.tree_size is not None:
            paths = resized_tree(settings.tree_file, settings.num_heads, settings.tree_size)
        elif settings.tree_file:
            paths = load_tree(settings.tree_file, MAX_TREE_DEPTH)
        else:
            paths = builtin_tree(settings.num_heads)
        return cls(paths, acceptance)

    @classmethod
    def title_details(cls, settings: dict, summary: dict) -> list[str]:
        if settings.get("dynamic_tree"):
            return [f"dynamic, {settings['dynamic_tree']} nodes"]
        return [f"{summary['tree_nodes']} nodes"] if summary.get("tree_nodes") else []

    def __init__(self, paths: list[TreePath], acceptance: Acceptance) -> None:
        parents, heads, ranks = tree_nodes(paths)
        self.paths = paths
        self.acceptance = acceptance
        self.num_heads = max(heads) + 1
        self.sampler = acceptance.sampler and acceptance.sampler.for_depth(self.num_heads)
        self.max_rank = max(ranks) + 1
        # node 0 is the root; path i becomes node i + 1
        self._parents = [-1] + [p + 1 if p >= 0 else 0 for p in parents]
        self._heads, self._ranks = heads, ranks
        # canonical order, as parents (head d - 1 drafts depth d)
        self._depths = [0] + [h + 1 for h in heads]

    def first_token(self, state: DecodeState) -> int | None:
        return self.acceptance.first_token(state)

    def ranked(self, head_logits: torch.Tensor) -> torch.Tensor:
        """[K, R] each head's R best token ids: what the tree's (head, rank) nodes draw from."""
        return torch.topk(head_logits[: self.num_heads], self.max_rank, dim=-1).indices

    def draft(self, state: DecodeState, budget: int) -> Tree:
        root = self.first_token(state)
        root = state.argmax() if root is None else root
        if state.level_logits is not None:
            return self.draft_by_depth(root, state.level_logits, budget)
        return self.draft_ranked(root, self.ranked(state.head_logits).tolist(), budget)

    def draft_by_depth(self, root: int, level_logits, budget: int) -> Tree:
        """Sequential heads: depth d's nodes are the ranked tokens of head d−1 below *their own
        parent's path*, one batched head call per depth (the same tree shape; only the tokens depend
        on the path)."""
        keep = [i for i, d in enumerate(self._depths) if d < budget]
        tokens = {0: root}
        paths = {0: [root]}
        for depth in range(1, max(self._depths[i] for i in keep) + 1):
            nodes = [i for i in keep if self._depths[i] == depth]
            parents = sorted({self._parents[i] for i in nodes})
            top = level_top(
                level_logits, torch.tensor([paths[p] for p in parents]), self.max_rank
            ).tolist()
            row = {p: r for r, p in enumerate(parents)}
            for i in nodes:
                tokens[i] = top[row[self._parents[i]]][self._ranks[i - 1]]
                paths[i] = paths[self._parents[i]] + [tokens[i]]
        index = {old: new for new, old in enumerate(keep)}
        return Tree([tokens[i] for i in keep], [-1] + [index[self._parents[i]] for i in keep[1:]])

    def draft_ranked(self, root: int, top: list[list[int]], budget: int) -> Tree:
        """The tree from the root token and each head's ranked token ids (``top[head][rank]``)."""
        # depth-limited subtrees stay closed
        keep = [i for i, d in enumerate(self._depths) if d < budget]
        if len(keep) == len(self._depths):
            tokens = [root] + [top[h][r] for h, r in zip(self._heads, self._ranks)]
            return Tree(tokens, self._parents)
        index = {old: new for new, old in enumerate(keep)}
        tokens = [root] + [top[self._heads[i - 1]][self._ranks[i - 1]] for i in keep[1:]]
        parents = [-1] + [index[self._parents[i]] for i in keep[1:]]
        return Tree(tokens, parents)

    def draft_from_ranks(self, root, base, heads, budget):
        return self.draft_ranked(root, heads[1][: self.num_heads].tolist(), budget)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return self.acceptance.accept(state, tree, verified)

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan:
        """The root is the base argmax; node i + 1 is rank ``ranks[i]`` of head ``heads[i]``,
        gathered by index. Sequential heads fill the layout depth by depth: each depth's parents'
        paths (gathered from the tokens drafted so far), one head call for all of them, each child
        the right rank below its own parent."""
        tree = FixedTree(self._parents, device)
        heads = torch.tensor(self._heads, device=device)
        ranks = torch.tensor(self._ranks, device=device)

        def draft(logits: torch.Tensor, head_logits: torch.Tensor, max_depth: torch.Tensor,
                  root: torch.Tensor) -> torch.Tensor:
            return torch.cat([root[None], self.ranked(head_logits)[heads, ranks]])

        rule, sampling = self.acceptance.select_on_device, self.acceptance.sampling
        if not sequential:
            return DevicePlan(tree, self.num_heads, draft, rule, sampling)
        # per depth: parent nodes' path columns, each parent's row in the level above, each child's
        levels = []
        # node → its row among the last level's parents      parent row and rank
        last_row: dict[int, int] = {}
        for depth in range(1, max(self._depths) + 1):
            nodes = [i for i, d in enumerate(self._depths) if d == depth]
            parents = sorted({self._parents[i] for i in nodes})
            row = {p: r for r, p in enumerate(parents)}
            above = [last_row[self._parents[p]] for p in parents] if depth > 1 else None
            levels.append((torch.tensor(nodes, device=device), tree.path[parents, :depth],
                           None if above is None else torch.tensor(above, device=device),
                           torch.tensor([row[self._parents[i]] for i in nodes], device=device),
                           torch.tensor([self._ranks[i - 1] for i in nodes], device=device)))
            last_row = row

        def draft_by_depth(
            logits: torch.Tensor, level_logits, max_depth: torch.Tensor, root: torch.Tensor
        ) -> torch.Tensor:
            # every node below the root is written level by level (the root's copies included:
            # out of place, so torch.vmap can batch the draft)
            tokens = root.expand(tree.size).clone()
            for nodes, path_columns, above, rows, node_ranks in levels:
                top = level_top(level_logits, tokens[path_columns], self.max_rank, above)
                tokens[nodes] = top[rows, node_ranks]
            return tokens

        return DevicePlan(tree, self.num_heads, draft_by_depth, rule, sampling)


def level_top(
    level_logits, paths: torch.Tensor, k: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """The ``k`` best ids [N, k] below each path: the drafter's own ``top`` where it has one (a
    level drafter with a draft vocabulary computes logits for that vocabulary alone; ``rows``, each
    path's parent among the last level's paths, spare it the prefix comparison), else the top-k of
    its logits."""
    top = getattr(level_logits, "top", None)
    return (
        top(paths, k, rows)
        if top is not None
        else torch.topk(level_logits(paths), k, dim=-1).indices
    )
