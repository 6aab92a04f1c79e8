"""Dynamic trees (EAGLE-2 style): the draft tree's shape follows the drafter's own confidence each
step.

Depth by depth, the ``branch`` frontier nodes with the highest cumulative draft log-probability are
expanded by their ``branch`` best next tokens; after the last depth, the ``size`` nodes with the
highest cumulative log-probability are kept. A path's cumulative log-probability never rises along
it, so the kept set holds every kept node's ancestors (ties are broken towards earlier, shallower
nodes). Any drafter works: path-dependent ones (sequential heads, the autoregressive drafter) score
each node below its own path; independent heads score every node of a depth alike.
"""

from __future__ import annotations

import torch

from medusa.decoding.accept import Acceptance
from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.errors import MedusaError

BRANCH = 8  # frontier width and children per expanded node (EAGLE-2 uses 10 for 7B models)


class DynamicTree(Strategy):
    """``size`` drafted nodes below the root, at most ``depth`` deep; eager loop only (its shape
    changes each step)."""

    name = "tree"  # built by StaticTree.from_settings when --dynamic-tree is given
    replayable = True

    def __init__(self, size: int, depth: int, acceptance: Acceptance, branch: int = BRANCH) -> None:
        if size < 1 or depth < 1 or branch < 1:
            raise MedusaError("--dynamic-tree needs at least 1 node, 1 head and 1 branch")
        self.size, self.num_heads, self.branch, self.acceptance = size, depth, branch, acceptance
        self.sampler = acceptance.sampler and acceptance.sampler.for_depth(depth)

    def first_token(self, state: DecodeState) -> int | None:
        return self.acceptance.first_token(state)

    def draft(self, state: DecodeState, budget: int) -> Tree:
        root = self.first_token(state)
        root = state.argmax() if root is None else root
        levels = state.level_logits or (
            lambda paths: state.head_logits[paths.shape[1] - 1].expand(len(paths), -1)
        )
        tokens, parents, scores, paths = [root], [-1], [0.0], [[root]]
        frontier = [0]
        for _ in range(min(self.num_heads, budget - 1)):
            lp = levels(torch.tensor([paths[n] for n in frontier])).float().log_softmax(-1)
            top = lp.topk(min(self.branch, lp.shape[-1]), dim=-1)
            new = []
            for parent, values, ids in zip(frontier, top.values.tolist(), top.indices.tolist()):
                # every child joins the tree; the best become the frontier
                for value, token in zip(values, ids):
                    tokens.append(token)
                    parents.append(parent)
                    scores.append(scores[parent] + value)
                    paths.append(paths[parent] + [token])
                    new.append(len(tokens) - 1)
            frontier = sorted(new, key=lambda n: (-scores[n], n))[: self.branch]
        keep = sorted(sorted(range(1, len(tokens)), key=lambda n: (-scores[n], n))[: self.size])
        index = {0: 0, **{old: new for new, old in enumerate(keep, start=1)}}
        return Tree([root] + [tokens[n] for n in keep], [-1] + [index[parents[n]] for n in keep])

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return self.acceptance.accept(state, tree, verified)
