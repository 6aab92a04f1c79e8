"""The one host loop every engine runs: prefill, then steps until the budget or a stop token ends
the output.

The budget, the stop rules and the statistics live here once; a
:class:`~medusa.decoding.stepper.Stepper` runs each draft → verify → accept → update-cache step (the
eager reference in :mod:`medusa.decoding.stepper`, the fast engine's device step in
:mod:`medusa.decoding.fast_loop`).
"""

from __future__ import annotations

import torch

from medusa.model import MedusaModel
from medusa.decoding.base import GenerationResult, Strategy
from medusa.decoding.stepper import EagerStepper, Stepper

UNLIMITED = 1 << 30  # the reach of a draft of whole candidates (cut to the real budget afterwards)


class RowProgress:
    """One decode's budget, stop rules and statistics, step by step: the bookkeeping every loop
    shares (:func:`decode` for one row, :func:`medusa.decoding.batch_loop.decode_batch` for many).
    Per step: :meth:`reach` (how deep the next draft may go; None once the output is complete),
    then :meth:`take` with the step's accepted path."""

    def __init__(self, strategy: Strategy, max_new_tokens: int, stop_ids: set[int]) -> None:
        self.strategy, self.max_new_tokens, self.stop_ids = strategy, max_new_tokens, stop_ids
        self.result = GenerationResult([], [], "length", [])

    def reach(self, state) -> int | None:
        """The next step's reach, or None when the output is complete: the budget is spent, or
        the first token (known without another forward) is a stop or the last one allowed."""
        result = self.result
        budget = self.max_new_tokens - len(result.tokens)
        if budget <= 0:
            return None
        first = self.strategy.first_token(state)
        if first is not None and (first in self.stop_ids or budget == 1):
            if first in self.stop_ids:
                result.stop_reason = "eos"
                return None
            result.tokens.append(first)
            result.accepted_per_step.append(1)
            result.drafted_depth_per_step.append(1)
            return None
        return UNLIMITED if self.strategy.whole_candidates else budget

    def take(self, path: list[int], depth: int) -> bool:
        """Append a step's accepted tokens (cut to the budget, ended by a stop token); whether the
        decode goes on."""
        result = self.result
        result.drafted_depth_per_step.append(depth)
        tokens = path[: self.max_new_tokens - len(result.tokens)]
        for j, t in enumerate(tokens):
            # the stop counts as accepted; drafted tokens past it were never output
            if t in self.stop_ids:
                result.accepted_per_step.append(j + 1)
                result.stop_reason = "eos"
                return False
            result.tokens.append(t)
        result.accepted_per_step.append(len(tokens))
        return True


def depth_limit(max_depth: int, strategy: Strategy, reach: int) -> int:
    """The deepest draft node a step may accept: the layout's depth, cut to the reach and to the
    strategy's adaptive depth."""
    limit = min(max_depth, reach - 1)
    wanted = strategy.depth_limit()
    return limit if wanted is None else min(limit, wanted)


@torch.inference_mode()
def decode(stepper: Stepper, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int,
           stop_ids: set[int]) -> GenerationResult:
    """Generated ids only (no prompt, no stop token), at most ``max_new_tokens`` of them, with
    per-step counts: tokens accepted (a stop counts, tokens past it do not) and the depth drafted.
    """
    row = RowProgress(strategy, max_new_tokens, stop_ids)
    strategy.begin(prompt_ids)
    state = stepper.prefill(strategy, prompt_ids, row.result.tokens)
    while (reach := row.reach(state)) is not None:
        if not row.take(*stepper.step(strategy, state, reach)):
            break
        state = stepper.advance(state)
    return row.result


def generate(model: MedusaModel, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int,
             stop_ids: set[int]) -> GenerationResult:
    """:func:`decode` with the eager reference step."""
    return decode(EagerStepper(model), strategy, prompt_ids, max_new_tokens, stop_ids)
