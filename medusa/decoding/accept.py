"""Acceptance rules: which path of the verified draft tree becomes output.

Every rule sees, for each node, the base model's distribution at its parent (the committed
sequence's last logits for first-level nodes, the verify pass's logits for the others).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from medusa.errors import MedusaError
from medusa.decoding.base import DecodeState, Tree, Verified
from medusa.decoding.fixed_tree import FixedTree

ACCEPTANCE_RULES = ("greedy", "typical", "rescore")
# typical acceptance (Medusa's): a draft token is kept when its base probability is above
# min(TYPICAL_THRESHOLD, TYPICAL_ALPHA * exp(-entropy)); every command's default
TYPICAL_THRESHOLD = 0.09
TYPICAL_ALPHA = 0.3


def parent_logits(state: DecodeState, tree: Tree, verified: Verified) -> torch.Tensor:
    """[N, V] base logits that each node's token is judged by."""
    rows = torch.cat([state.logits[None], verified.logits], dim=0)
    index = torch.tensor([p + 1 for p in tree.parents], device=rows.device)
    return rows.index_select(0, index).float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(-1).gather(1, tokens[:, None])[:, 0]


def deepest_valid_path(tree: Tree, ok: list[bool], scores: list[float]) -> list[int]:
    """Longest root-to-node path whose every node is ok; ties go to the higher summed score."""
    good = [False] * len(tree)
    total = [0.0] * len(tree)
    depths = tree.depths
    best = -1
    for i, p in enumerate(tree.parents):
        good[i] = ok[i] and (p < 0 or good[p])
        if not good[i]:
            continue
        total[i] = scores[i] + (total[p] if p >= 0 else 0.0)
        if (
            best < 0
            or depths[i] > depths[best]
            or (depths[i] == depths[best] and total[i] > total[best])
        ):
            best = i
    return tree.path_to(best) if best >= 0 else []


class Acceptance(ABC):
    name = ""
    whole_candidates = False  # see Strategy.whole_candidates

    def first_token(self, state: DecodeState) -> int | None:
        return None

    def prune(self, state: DecodeState, tree: Tree) -> Tree:
        """Drop draft nodes this rule can never accept, before paying for their verification."""
        return tree

    @abstractmethod
    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        """Node indices of the accepted path; never empty."""

    @abstractmethod
    def select_on_device(self, tree: FixedTree, last_logits: torch.Tensor, logits: torch.Tensor,
                         tokens: torch.Tensor, max_depth: torch.Tensor) -> torch.Tensor:
        """The same rule as tensor ops on a fixed layout: the accepted path's last node (no host
        sync)."""


class Greedy(Acceptance):
    """Accept while each draft token is the base model's argmax: output identical to single-head
    greedy."""

    name = "greedy"

    def first_token(self, state: DecodeState) -> int:
        return state.argmax()

    def prune(self, state: DecodeState, tree: Tree) -> Tree:
        """Only the subtree under the argmax first token can be accepted; the other beams are not
        verified."""
        first = self.first_token(state)
        keep = [i for i, p in enumerate(tree.parents) if p < 0 and tree.tokens[i] == first]
        if len(keep) == sum(p < 0 for p in tree.parents):
            return tree
        index: dict[int, int] = {}
        tokens, parents = [], []
        for i, p in enumerate(tree.parents):
            if (p < 0 and i in keep) or (p >= 0 and p in index):
                index[i] = len(tokens)
                tokens.append(tree.tokens[i])
                parents.append(-1 if p < 0 else index[p])
        # bf16 ties can push the argmax out of the beams: verify it alone, stay lossless
        if not tokens:
            return Tree([first], [-1], [0])
        leaves = (
            [index[leaf] for leaf in tree.leaves if leaf in index]
            if tree.leaves is not None
            else None
        )
        return Tree(tokens, parents, leaves)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        logits = parent_logits(state, tree, verified)
        ok = (logits.argmax(-1) == verified.tokens).tolist()
        path = deepest_valid_path(tree, ok, [0.0] * len(tree))
        if not path:
            raise RuntimeError(
                "greedy acceptance needs the base model's argmax among the first-level draft nodes"
            )
        return path

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth):
        predicted = torch.cat([last_logits.argmax()[None], logits.argmax(-1)]).index_select(
            0, tree.parent_row
        )
        return tree.deepest(tree.valid(tokens == predicted, max_depth))


class Typical(Acceptance):
    """The confidence threshold: accept a token if p_base(token) > min(ε, α·exp(−H(p_base))).

    Since max p ≥ exp(−H) for every distribution, the argmax always passes when α ≤ 1, so a step
    never stalls.
    """

    name = "typical"

    def __init__(self, threshold: float = TYPICAL_THRESHOLD, alpha: float = TYPICAL_ALPHA) -> None:
        if not (0 < threshold <= 1 and 0 < alpha <= 1):
            raise MedusaError("--posterior-threshold and --posterior-alpha must be in (0, 1]")
        self.threshold, self.alpha = threshold, alpha

    def passes(
        self, logits: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per node: whether its token passes the threshold under its parent's ``logits`` [N, V],
        and its log-prob."""
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        limit = torch.minimum(
            torch.full_like(entropy, self.threshold), self.alpha * torch.exp(-entropy)
        )
        tok_lp = logp.gather(1, tokens[:, None])[:, 0]
        return tok_lp.exp() > limit, tok_lp

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        ok, tok_lp = self.passes(parent_logits(state, tree, verified), verified.tokens)
        path = deepest_valid_path(tree, ok.tolist(), tok_lp.tolist())
        # only possible through rounding at a near-uniform distribution: fall back to the best first
        # token
        if not path:
            firsts = [i for i, p in enumerate(tree.parents) if p < 0]
            lps = tok_lp.tolist()
            path = [max(firsts, key=lambda i: lps[i])]
        return path

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth):
        ok, tok_lp = self.passes(tree.parent_rows(last_logits, logits), tokens)
        valid = tree.valid(ok, max_depth)
        best = tree.deepest(valid, tree.path_scores(tok_lp))
        return torch.where(valid.any(), best, tree.best_of(tree.first_level, tok_lp.double()))


class Rescore(Acceptance):
    """The assignment's step 3: append the whole candidate with the highest summed base
    log-probability (lossy)."""

    name = "rescore"
    whole_candidates = True

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        tok_lp = token_logprobs(parent_logits(state, tree, verified), verified.tokens).tolist()
        leaves = tree.leaves if tree.leaves is not None else [
            i for i in range(len(tree)) if i not in set(tree.parents)
        ]
        best_leaf = max(leaves, key=lambda leaf: sum(tok_lp[i] for i in tree.path_to(leaf)))
        return tree.path_to(best_leaf)

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth):
        """Whole candidates (leaves); under a depth limit, the candidates cut at that depth."""
        tok_lp = token_logprobs(tree.parent_rows(last_logits, logits), tokens)
        eligible = (tree.leaf & (tree.depth <= max_depth)) | (tree.depth == max_depth)
        return tree.best_of(eligible, tree.path_scores(tok_lp))


def make_acceptance(name: str, threshold: float = TYPICAL_THRESHOLD, alpha: float = TYPICAL_ALPHA
                    ) -> Acceptance:
    if name == "greedy":
        return Greedy()
    if name == "typical":
        return Typical(threshold, alpha)
    if name == "rescore":
        return Rescore()
    raise MedusaError(
        f"unknown acceptance rule '{name}'; use one of: {', '.join(ACCEPTANCE_RULES)}"
    )
