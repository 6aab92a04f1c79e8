"""Batched greedy generation (left padding) gives the same tokens as one-at-a-time decoding in fp32."""

from __future__ import annotations

from conftest import make_model

from medusa.training.batch_generate import batched_greedy
from medusa.decoding import generate, make_strategy
from medusa.model import MedusaModel


def test_batched_equals_sequential():
    base = make_model("llama", seed=7)
    model = MedusaModel(base, tokenizer=None)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]
    free = [generate(model, make_strategy("single-head"), p, 12, set()).tokens for p in prompts]
    stop = free[1][5]  # one prompt stops early on this token
    expected = [generate(model, make_strategy("single-head"), p, 12, {stop}).tokens for p in prompts]
    got = batched_greedy(base, prompts, 12, [stop], pad_id=0, batch_size=3)
    assert got == expected
    assert len(got[1]) < 12
