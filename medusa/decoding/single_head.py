"""Greedy decoding with the base LM head alone: the reference every other strategy is checked
against."""

from __future__ import annotations

import torch

from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.fixed_tree import DevicePlan, FixedTree


class SingleHead(Strategy):
    """Drafts one node, the base model's argmax, which is accepted by definition."""

    name = "single-head"
    uses_heads = False

    @classmethod
    def table_label(cls, beam_width: int | None, heads: int | None) -> str:
        return "Single head"

    def first_token(self, state: DecodeState) -> int:
        return state.argmax()

    def draft(self, state: DecodeState, budget: int) -> Tree:
        return Tree([self.first_token(state)], [-1])

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        return [0]

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan:
        root = torch.zeros((), dtype=torch.long, device=device)
        return DevicePlan(
            FixedTree([-1], device),
            0,
            draft=lambda logits, heads, max_depth: logits.argmax()[None],
            select=lambda tree, last, logits, tokens, max_depth: root,
        )
