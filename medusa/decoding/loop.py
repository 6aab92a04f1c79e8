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


@torch.inference_mode()
def decode(stepper: Stepper, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int,
           stop_ids: set[int]) -> GenerationResult:
    """Generated ids only (no prompt, no stop token), at most ``max_new_tokens`` of them, with
    per-step counts: tokens accepted (a stop counts, tokens past it do not) and the depth drafted.
    """
    result = GenerationResult([], [], "length", [])
    generated, accepted, drafted = (
        result.tokens,
        result.accepted_per_step,
        result.drafted_depth_per_step,
    )
    strategy.begin(prompt_ids)
    state = stepper.prefill(strategy, prompt_ids, generated)
    while True:
        budget = max_new_tokens - len(generated)
        if budget <= 0:
            return result
        first = strategy.first_token(state)
        # decided without another forward
        if first is not None and (first in stop_ids or budget == 1):
            if first in stop_ids:
                result.stop_reason = "eos"
                return result
            generated.append(first)
            accepted.append(1)
            drafted.append(1)
            return result
        path, depth = stepper.step(
            strategy, state, UNLIMITED if strategy.whole_candidates else budget
        )
        drafted.append(depth)
        tokens = path[:budget]
        for j, t in enumerate(tokens):
            # the stop counts as accepted; drafted tokens past it were never output
            if t in stop_ids:
                accepted.append(j + 1)
                result.stop_reason = "eos"
                return result
            generated.append(t)
        accepted.append(len(tokens))
        state = stepper.advance(state)


def generate(model: MedusaModel, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int,
             stop_ids: set[int]) -> GenerationResult:
    """:func:`decode` with the eager reference step."""
    return decode(EagerStepper(model), strategy, prompt_ids, max_new_tokens, stop_ids)
