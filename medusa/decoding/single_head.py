"""Decoding with the base LM head alone: greedy, the reference every other strategy is checked
against, or sampled at a temperature above 0 (:mod:`medusa.decoding.sampling`)."""

from __future__ import annotations

import torch

from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.fixed_tree import DevicePlan, FixedTree
from medusa.decoding.sampling import Sampler, Sampling


class SingleHead(Strategy):
    """Drafts one node, the base model's argmax (or a token drawn from its processed
    distribution), which is accepted by definition. Sampled, each step draws the token after that
    node from row 1 of its uniforms, as every sampled rule draws below a depth-0 node."""

    def __init__(self, sampling: Sampling | None = None) -> None:
        self.sampler = None if sampling is None or sampling.greedy else Sampler(sampling)

    @classmethod
    def from_settings(cls, settings) -> "SingleHead":
        return cls(Sampling(settings.temperature, settings.top_k, settings.top_p, settings.seed))

    name = "single-head"
    uses_heads = False
    samples = True

    @classmethod
    def table_label(cls, beam_width: int | None, heads: int | None) -> str:
        return "Single head"

    def first_token(self, state: DecodeState) -> int:
        if self.sampler is None:
            return state.argmax()
        return self.sampler.first_token(state)

    def draft(self, state: DecodeState, budget: int) -> Tree:
        return Tree([self.first_token(state)], [-1])

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        if self.sampler is not None:
            uniforms = self.sampler.step_block(verified.logits)[1]
            verified.bonus = int(self.sampler.draw(verified.logits[0], uniforms))
        return [0]

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan | None:
        node = torch.zeros((), dtype=torch.long, device=device)
        return DevicePlan(
            FixedTree([-1], device),
            0,
            draft=lambda logits, heads, max_depth, root: root[None],
            select=lambda tree, last, logits, tokens, max_depth, root, noise: node,
            sampling=None if self.sampler is None else self.sampler.sampling,
        )
