"""Acceptance rules: which path of the verified draft tree becomes output.

Every rule sees, for each node, the base model's distribution at its parent (the committed
sequence's last logits for first-level nodes, the verify pass's logits for the others).

At a temperature above 0 the lossless rule is speculative sampling over the tree
(:class:`SpeculativeSampling`); typical acceptance samples its first token and its bonus token the
same way but keeps its own, lossy, test. Rescore verifies at temperature 0 only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from medusa.errors import MedusaError
from medusa.decoding.base import DecodeState, Tree, Verified
from medusa.decoding.fixed_tree import FixedTree
from medusa.decoding.sampling import Sampler, Sampling, processed_logits

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


def node_draws(sampler: Sampler, tree: Tree, verified: Verified) -> torch.Tensor:
    """[N] the token drawn below each node: row ``depth + 1`` of this step's block of uniforms
    (row 0 is the prefill's), the same rows the fast engine's captured step reads."""
    block = sampler.step_block(verified.logits)
    rows = torch.tensor(tree.depths, device=block.device) + 1
    return sampler.draw_rows(verified.logits, block, rows)


class Acceptance(ABC):
    name = ""
    whole_candidates = False  # see Strategy.whole_candidates
    # the draws of a rule that samples (temperature above 0); None: it decodes deterministically
    sampler: Sampler | None = None

    @property
    def sampling(self) -> Sampling | None:
        return None if self.sampler is None else self.sampler.sampling

    def first_token(self, state: DecodeState) -> int | None:
        """The root every accepted path starts with when the rule fixes it before verification:
        the argmax (greedy), a draw (sampling); None: any first-level node may be accepted."""
        return None if self.sampler is None else self.sampler.first_token(state)

    def prune(self, state: DecodeState, tree: Tree) -> Tree:
        """Drop draft nodes this rule can never accept, before paying for their verification: with
        a fixed first token, only the subtree under it."""
        first = self.first_token(state)
        if first is None:
            return tree
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

    @abstractmethod
    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        """Node indices of the accepted path; never empty."""

    @abstractmethod
    def select_on_device(self, tree: FixedTree, last_logits: torch.Tensor, logits: torch.Tensor,
                         tokens: torch.Tensor, max_depth: torch.Tensor, root: torch.Tensor,
                         noise: torch.Tensor | None) -> torch.Tensor:
        """The same rule as tensor ops on a fixed layout: the accepted path's last node (no host
        sync). ``root`` is the first token (the argmax, or the last step's draw), ``noise`` this
        step's uniforms [depth + 2, V] when the rule samples."""


class Greedy(Acceptance):
    """Accept while each draft token is the base model's argmax: output identical to single-head
    greedy."""

    name = "greedy"

    def first_token(self, state: DecodeState) -> int:
        return state.argmax()

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        logits = parent_logits(state, tree, verified)
        ok = (logits.argmax(-1) == verified.tokens).tolist()
        path = deepest_valid_path(tree, ok, [0.0] * len(tree))
        if not path:
            raise RuntimeError(
                "greedy acceptance needs the base model's argmax among the first-level draft nodes"
            )
        return path

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth, root, noise):
        predicted = torch.cat([last_logits.argmax()[None], logits.argmax(-1)]).index_select(
            0, tree.parent_row
        )
        return tree.deepest(tree.valid(tokens == predicted, max_depth))


class SpeculativeSampling(Acceptance):
    """Lossless verification at a temperature above 0: the output has exactly the distribution
    of sampling from the base model token by token.

    The drafts are deterministic (the heads' ranked tokens: a one-hot draft distribution ``q``
    per child). SpecInfer's recursive rejection at a node with children x_1..x_m then accepts
    x_i with probability p'(x_i) / 1, where p' is the residual after x_1..x_{i-1} were rejected
    (p with those tokens zeroed, renormalised), and after the last rejection samples the bonus
    from max(p − Σ q_i, 0) normalised: p with every child zeroed. In one draw: sample y from p;
    descend to the child holding y, or stop with y as the bonus. This rule does exactly that,
    one Gumbel-max draw per node from row ``depth + 1`` of the step's uniforms. Nodes of one
    depth share a row, which is sound because the accepted path holds one node per depth.
    Deterministic drafts keep the captured step free of a draft distribution, and the ranked
    tokens are the ones a sampled draft would pick most often anyway.

    The bonus becomes the next step's first token (``Verified.bonus`` → ``DecodeState.drawn``),
    so no forward is spent on it.
    """

    name = "speculative"

    def __init__(self, sampling: Sampling) -> None:
        self.sampler = Sampler(sampling)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        drawn = node_draws(self.sampler, tree, verified)
        root = torch.tensor([self.first_token(state)], device=drawn.device)
        index = torch.tensor([p + 1 for p in tree.parents], device=drawn.device)
        ok = (torch.cat([root, drawn]).index_select(0, index) == verified.tokens).tolist()
        path = deepest_valid_path(tree, ok, [0.0] * len(tree))
        if not path:
            raise RuntimeError("speculative sampling needs the drawn first token in the draft")
        verified.bonus = int(drawn[path[-1]])
        return path

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth, root, noise):
        drawn = self.sampler.draw_rows(logits, noise, tree.depth + 1)
        predicted = torch.cat([root[None], drawn]).index_select(0, tree.parent_row)
        return tree.deepest(tree.valid(tokens == predicted, max_depth))


class Typical(Acceptance):
    """The confidence threshold: accept a token if p_base(token) > min(ε, α·exp(−H(p_base))).

    Since max p ≥ exp(−H) for every distribution, the argmax always passes when α ≤ 1, so a step
    never stalls. At a temperature above 0 (Medusa's sampling mode) p is the processed
    distribution, the first token is drawn from it, and so is the bonus token after the accepted
    path, which becomes the next step's first token; the accepted tokens between are still
    thresholded, so the output's distribution is not the base model's.
    """

    name = "typical"

    def __init__(self, threshold: float = TYPICAL_THRESHOLD, alpha: float = TYPICAL_ALPHA,
                 sampling: Sampling | None = None) -> None:
        if not (0 < threshold <= 1 and 0 < alpha <= 1):
            raise MedusaError("--posterior-threshold and --posterior-alpha must be in (0, 1]")
        self.threshold, self.alpha = threshold, alpha
        if sampling is not None and not sampling.greedy:
            self.sampler = Sampler(sampling)

    def passes(
        self, logits: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per node: whether its token passes the threshold under its parent's ``logits`` [N, V],
        and its log-prob (finite: a token top-k or top-p cut away scores the lowest float, so
        summed path scores never meet ``0 · −inf``)."""
        if self.sampler is not None:
            logits = processed_logits(logits, self.sampler.sampling)
        logp = logits.log_softmax(-1)
        entropy = torch.special.entr(logp.exp()).sum(-1)
        limit = torch.minimum(
            torch.full_like(entropy, self.threshold), self.alpha * torch.exp(-entropy)
        )
        tok_lp = logp.gather(1, tokens[:, None])[:, 0]
        return tok_lp.exp() > limit, tok_lp.clamp_min(torch.finfo(tok_lp.dtype).min)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        ok, tok_lp = self.passes(parent_logits(state, tree, verified), verified.tokens)
        if self.sampler is not None:  # the drawn first token, and no other first-level node
            first = self.first_token(state)
            firsts = torch.tensor([p < 0 for p in tree.parents], device=ok.device)
            ok = torch.where(firsts, verified.tokens == first, ok)
            block = self.sampler.step_block(verified.logits)
        path = deepest_valid_path(tree, ok.tolist(), tok_lp.tolist())
        # only possible through rounding at a near-uniform distribution: fall back to the best first
        # token
        if not path:
            firsts = [i for i, p in enumerate(tree.parents) if p < 0]
            lps = tok_lp.tolist()
            path = [max(firsts, key=lambda i: lps[i])]
        if self.sampler is not None:  # only the bonus is drawn: the rule thresholds the rest
            last = path[-1]
            verified.bonus = int(self.sampler.draw(verified.logits[last],
                                                   block[tree.depths[last] + 1]))
        return path

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth, root, noise):
        ok, tok_lp = self.passes(tree.parent_rows(last_logits, logits), tokens)
        if self.sampler is not None:
            ok = torch.where(tree.first_level, tokens == root, ok)
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

    def select_on_device(self, tree, last_logits, logits, tokens, max_depth, root, noise):
        """Whole candidates (leaves); under a depth limit, the candidates cut at that depth."""
        tok_lp = token_logprobs(tree.parent_rows(last_logits, logits), tokens)
        eligible = (tree.leaf & (tree.depth <= max_depth)) | (tree.depth == max_depth)
        return tree.best_of(eligible, tree.path_scores(tok_lp))


def make_acceptance(name: str, threshold: float = TYPICAL_THRESHOLD, alpha: float = TYPICAL_ALPHA,
                    sampling: Sampling | None = None) -> Acceptance:
    """The rule ``--acceptance`` names; at a temperature above 0 "greedy" (the lossless rule) is
    speculative sampling."""
    hot = sampling is not None and not sampling.greedy
    if name == "greedy":
        return SpeculativeSampling(sampling) if hot else Greedy()
    if name == "typical":
        return Typical(threshold, alpha, sampling)
    if name == "rescore":
        if hot:
            raise MedusaError(
                f"rescore verifies at temperature 0: drop --temperature {sampling.temperature:g}"
                " or use --acceptance greedy (lossless sampling) or typical"
            )
        return Rescore()
    raise MedusaError(
        f"unknown acceptance rule '{name}'; use one of: {', '.join(ACCEPTANCE_RULES)}"
    )
