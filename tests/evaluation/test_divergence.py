"""The divergence report (medusa/evaluation/divergence.py): the first differing position and the
base model's top-1 / top-2 margin there, told as a near tie only within the logits' rounding."""

from __future__ import annotations

import torch
from test_decoding_multi_head import with_heads

from medusa.decoding import generate, make_strategy
from medusa.evaluation.divergence import (
    Divergence,
    describe,
    divergences,
    first_difference,
    margin_at,
)


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2  # one output ended first
    assert first_difference([], [4]) == 0


def test_a_differing_output_reports_the_base_models_margin_where_it_parts():
    model = with_heads("llama", 3, num_heads=1)
    prompt = [5, 17, 40, 9]
    greedy = generate(model, make_strategy("single-head"), prompt, 8, set()).tokens
    with torch.inference_mode():
        logits = model.step(torch.tensor([prompt + greedy[:3]]), None, last_only=True).logits[0, -1]
    second = int(logits.topk(2).indices[1])
    parted = greedy[:3] + [second] + greedy[4:]
    rows = [{"index": 0, "token_ids": greedy}, {"index": 1, "token_ids": parted}]
    baseline = [{"index": 0, "token_ids": greedy}, {"index": 1, "token_ids": greedy}]
    (found,) = divergences(model, {0: prompt, 1: prompt}, rows, baseline)
    top = logits.topk(2).values
    assert (found.index, found.position, found.single_head_token, found.strategy_token) == (
        1, 3, greedy[3], second)
    assert abs(found.margin - float(top[0] - top[1])) < 1e-4
    # fp32 rounds to about 1e-7 of the logit: a random model's margin is no tie
    assert found.rounding_step < 1e-5 and not found.near_tie
    assert "1 not at a near tie" in describe([found]) and "#1 at token 3" in describe([found])


def test_bf16_logits_round_in_steps_of_two_to_the_minus_seven():
    model = with_heads("llama", 4, num_heads=1)
    model.base_model.to(torch.bfloat16)
    model.heads.to(torch.bfloat16)
    with torch.inference_mode():
        logits = model.step(torch.tensor([[3, 4, 5]]), None, last_only=True).logits[0, -1]
    top = logits.float().max()
    margin, step = margin_at(model, [3, 4, 5], [])
    assert margin >= 0 and step == 2 ** -7 * max(abs(float(top)), 1.0)
    tie = Divergence(7, 2, 11, 12, margin=step, rounding_step=step, near_tie=True)
    assert "numerics, not a bug" in describe([tie])
    assert describe([]) == "every output equals single-head's"
