"""Drafting: the assignment's beam search across the LM head and S Medusa heads, merged into a trie."""

from __future__ import annotations

import torch

from .base import Tree


def beam_candidates(level_logprobs: list[torch.Tensor], width: int) -> tuple[list[list[int]], list[float]]:
    """W best token sequences, one token per level, by summed log-probability (the assignment's step 2)."""
    return beam_candidates_ranked([lp.float().topk(width) for lp in level_logprobs], width)


def beam_candidates_ranked(levels: list[tuple[torch.Tensor, torch.Tensor]], width: int
                           ) -> tuple[list[list[int]], list[float]]:
    """:func:`beam_candidates` from each level's best (log-probs, ids), sorted best first, at least W of them.

    Taking ranked lists lets a replay precompute them for thousands of positions at once.
    """
    seqs, scores = beam_search(levels, width)
    return seqs.tolist(), scores.tolist()


def beam_search(levels: list[tuple[torch.Tensor, torch.Tensor]], width: int, keep_levels: bool = False):
    """The W best sequences [W, levels] and their summed log-probabilities, as tensors on the levels' device.

    The heads' distributions do not depend on the earlier draft tokens, so each level extends every beam by the
    same top-W tokens; the W best of the W×W extensions survive. No host sync: the fast engine drafts with it
    inside a captured step. ``keep_levels`` returns the beams after every level instead (the search over fewer
    levels is this search stopped early).
    """
    device = levels[0][0].device
    seqs = torch.empty(1, 0, dtype=torch.long, device=device)
    scores = torch.zeros(1, device=device)
    kept: list[torch.Tensor] = []
    for values, ids in levels:
        top_lp, top_ids = values[:width].float(), ids[:width]
        total = (scores[:, None] + top_lp[None, :]).reshape(-1)  # [beams * W], beam-major
        best = total.topk(min(width, total.numel()))
        beam_idx, tok_idx = best.indices // width, best.indices % width
        seqs = torch.cat([seqs[beam_idx], top_ids[tok_idx][:, None]], dim=1)
        scores = best.values
        kept.append(seqs)
    return kept if keep_levels else (seqs, scores)


def trie_from_candidates(candidates: list[list[int]]) -> Tree:
    """Merge candidates sharing a prefix, so each distinct prefix is verified once; leaves mark the candidates."""
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}
    leaves: list[int] = []
    for cand in candidates:
        node = -1
        for tok in cand:
            key = (node, tok)
            if key not in children:
                children[key] = len(tokens)
                tokens.append(tok)
                parents.append(node)
            node = children[key]
        leaves.append(node)
    return Tree(tokens, parents, leaves)
