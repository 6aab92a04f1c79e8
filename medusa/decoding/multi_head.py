"""The assignment's multi-head strategy: beam search of width W over the LM head and S heads, verified as a trie."""

from __future__ import annotations

import torch

from ..errors import MedusaError
from .accept import Acceptance
from .base import DecodeState, Strategy, Tree, Verified
from .draft import beam_candidates, beam_candidates_ranked, trie_from_candidates


class MultiHead(Strategy):
    name = "multi-head"

    def __init__(self, num_heads: int, beam_width: int, acceptance: Acceptance) -> None:
        if num_heads < 1 or beam_width < 1:
            raise MedusaError("--use-no-medusa-heads and --beam-width must be at least 1")
        self.num_heads, self.beam_width, self.acceptance = num_heads, beam_width, acceptance

    def first_token(self, state: DecodeState) -> int | None:
        return self.acceptance.first_token(state)

    def draft(self, state: DecodeState, budget: int) -> Tree:
        levels = [state.logits] + [state.head_logits[h] for h in range(min(self.num_heads, budget - 1))]
        candidates, _ = beam_candidates([lv.float().log_softmax(-1) for lv in levels], self.beam_width)
        return self.acceptance.prune(state, trie_from_candidates(candidates))

    def draft_ranked(self, levels: list[tuple[torch.Tensor, torch.Tensor]], budget: int) -> Tree:
        """The same trie from precomputed (log-probs, ids) per level: base first, then the heads (for replay)."""
        candidates, _ = beam_candidates_ranked(levels[: min(self.num_heads, budget - 1) + 1], self.beam_width)
        return trie_from_candidates(candidates)

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return self.acceptance.accept(state, tree, verified)
