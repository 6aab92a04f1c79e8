"""Adaptive control (the seed's "dynamic head selection"): draft as deep as recent steps have been
accepting.

Wraps any drafting strategy and clamps the draft depth it may use each step to ``ceil(EMA of
accepted tokens)`` heads, between 1 and the strategy's own maximum; the EMA starts at the maximum in
every decode. Deep drafts that keep failing
cost verify width (compute on a CPU, memory traffic for the heads) for nothing; when acceptance
rises, the depth follows.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from medusa.decoding.base import DecodeState, Strategy, Tree, Verified
from medusa.decoding.fixed_tree import DevicePlan


class Adaptive(Strategy):
    def __init__(self, inner: Strategy, smoothing: float = 0.3) -> None:
        self.inner = inner
        self.name = f"{inner.name}+adaptive"
        self.num_heads = inner.num_heads
        self.by_path = inner.by_path
        self.sampler = inner.sampler
        self.smoothing = smoothing
        self.mean_accepted = float(inner.num_heads + 1)  # start optimistic: every head in use
        self.depth_counts: Counter[int] = Counter()  # heads used per step, for the report
        self._depth = inner.num_heads

    @property
    def whole_candidates(self) -> bool:
        return self.inner.whole_candidates

    def begin(self, prompt_ids: list[int]) -> None:
        """Each decode starts optimistic again, so a row's output and statistics do not depend on
        the rows decoded before it (nor on their order in a batch, nor on a resumed run)."""
        super().begin(prompt_ids)
        self.mean_accepted = float(self.num_heads + 1)

    def heads_to_use(self) -> int:
        return max(1, min(self.num_heads, math.ceil(self.mean_accepted - 1e-9)))

    def first_token(self, state: DecodeState) -> int | None:
        return self.inner.first_token(state)

    def depth_limit(self) -> int:
        """The heads this step drafts with (counted for the report): asked once per step, by
        :meth:`draft` in the eager step and by the fast engine's stepper, whose draft runs on the
        device."""
        self._depth = self.heads_to_use()
        self.depth_counts[self._depth] += 1
        return self._depth

    def observe(self, accepted: int) -> None:
        self.mean_accepted += self.smoothing * (accepted - self.mean_accepted)

    def draft(self, state: DecodeState, budget: int) -> Tree:
        return self.inner.draft(state, min(budget, self.depth_limit() + 1))

    def accept(self, state: DecodeState, tree: Tree, verified: Verified) -> list[int]:
        path = self.inner.accept(state, tree, verified)
        self.observe(len(path))
        return path

    def device_plan(self, device: torch.device, sequential: bool = False) -> DevicePlan | None:
        return self.inner.device_plan(device, sequential)
