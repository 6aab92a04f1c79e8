"""Drafting: the assignment's beam search across the LM head and S Medusa heads, merged into a trie.
"""

from __future__ import annotations

import torch

from medusa.decoding.base import Tree


def beam_candidates(
    level_logprobs: list[torch.Tensor], width: int
) -> tuple[list[list[int]], list[float]]:
    """W best token sequences, one token per level, by summed log-probability (the assignment's step
    2)."""
    return beam_candidates_ranked([lp.float().topk(width) for lp in level_logprobs], width)


def beam_candidates_ranked(levels: list[tuple[torch.Tensor, torch.Tensor]], width: int
                           ) -> tuple[list[list[int]], list[float]]:
    """:func:`beam_candidates` from each level's best (log-probs, ids), sorted best first, at least
    W of them.

    Taking ranked lists lets a replay precompute them for thousands of positions at once.
    """
    seqs, scores = beam_search(levels, width)
    return seqs.tolist(), scores.tolist()


def beam_search(
    levels: list[tuple[torch.Tensor, torch.Tensor]], width: int, keep_levels: bool = False
):
    """The W best sequences [W, levels] and their summed log-probabilities, as tensors on the
    levels' device.

    The heads' distributions do not depend on the earlier draft tokens, so each level extends every
    beam by the same top-W tokens; the W best of the W×W extensions survive. No host sync: the fast
    engine drafts with it inside a captured step. ``keep_levels`` returns the beams after every
    level instead (the search over fewer levels is this search stopped early).
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
    """Merge candidates sharing a prefix, so each distinct prefix is verified once; leaves mark the
    candidates."""
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


def beam_search_by_level(base_logprobs: torch.Tensor, level_logits, levels: int, width: int,
                         root: int | None = None) -> tuple[list[list[int]], list[float]]:
    """:func:`beam_candidates` for sequential heads, whose level-l distribution depends on each
    beam's tokens so far: every beam is extended by its own top-W (one batched head call per level),
    the W best survive. ``root`` fixes the first token (greedy acceptance keeps only beams that
    start with the base argmax)."""
    root_t = None if root is None else torch.tensor(root, device=base_logprobs.device)
    seqs, scores = beam_states_by_level(
        base_logprobs, level_logits, levels, width, root_t, with_scores=True
    )
    return seqs.tolist(), scores.tolist()


def beam_states_by_level(base_logprobs: torch.Tensor, level_logits, levels: int, width: int,
                         root: torch.Tensor | None = None, with_scores: bool = False):
    """The search of :func:`beam_search_by_level` as tensors, without host syncs (the fast engine
    drafts with it): the beams after every level (``keep_levels`` of :func:`beam_search`; a fixed
    root gives one beam at level 0), or the last beams and their scores."""
    if root is None:
        values, ids = base_logprobs.float().topk(width)
    else:
        ids = root.reshape(1)
        values = base_logprobs.float().index_select(0, ids)
    seqs, scores = ids[:, None], values
    kept = [seqs]
    for _ in range(levels):
        # [beams, V], beam b below its own path
        lp = level_logits(seqs).float().log_softmax(-1).to(scores.device)
        top_lp, top_ids = lp.topk(width, dim=-1)
        total = (scores[:, None] + top_lp).reshape(-1)
        best = total.topk(min(width, total.numel()))
        beam_idx, tok_idx = best.indices // width, best.indices % width
        seqs = torch.cat([seqs[beam_idx], top_ids[beam_idx, tok_idx][:, None]], dim=1)
        scores = best.values
        kept.append(seqs)
    return (seqs, scores) if with_scores else kept
