"""Sampling at temperature > 0 (medusa/decoding/sampling.py and single-head): the processed
distribution equals its closed form, decoding draws from it (a chi-square test, seeded so it is
deterministic), temperature → 0 gives the greedy tokens, and a seed and prompt fix the output."""

from __future__ import annotations

import math

import pytest
import torch
from test_bad_input import bad_input
from test_decoding_multi_head import prompts, with_heads

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import StaticEngine
from medusa.decoding.sampling import Sampling, processed_probs
from medusa.decoding.static_tree import StaticTree
from medusa.errors import MedusaError


def test_the_processed_distribution_is_temperature_then_top_k_then_top_p():
    logits = torch.tensor([4.0, 2.0, 1.0, 0.0, -1.0])
    t = 2.0
    soft = torch.softmax(logits / t, -1)
    assert torch.allclose(processed_probs(logits, Sampling(t)), soft)
    # top-k 3: the three best, renormalised
    top3 = torch.zeros(5)
    top3[:3] = soft[:3] / soft[:3].sum()
    assert torch.allclose(processed_probs(logits, Sampling(t, top_k=3)), top3)
    # top-p: the smallest prefix of the top-3 distribution reaching p (the first two here)
    p = float(top3[0]) + 1e-3
    top2 = torch.zeros(5)
    top2[:2] = top3[:2] / top3[:2].sum()
    assert torch.allclose(processed_probs(logits, Sampling(t, top_k=3, top_p=p)), top2)
    # a tiny top-p still keeps the most likely token
    only = processed_probs(logits, Sampling(t, top_p=1e-6))
    assert only.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_single_head_draws_from_the_processed_distribution():
    """4,000 one-token decodes (each reseeded from its own seed) against the top-4 distribution of
    the base model after the prompt: chi-square with 3 degrees of freedom below 21.1 (a false alarm
    once in 10,000 seeds; the seeds are fixed, so CI sees the same counts every time)."""
    model = with_heads("llama", 3, num_heads=1)
    prompt = prompts(5)[0]
    sampling = Sampling(temperature=1.3, top_k=4)
    with torch.inference_mode():
        logits = model.step(torch.tensor([prompt]), None, last_only=True).logits[0, -1]
    probs = processed_probs(logits, sampling)
    support = probs.nonzero().flatten().tolist()
    assert len(support) == 4
    counts = dict.fromkeys(support, 0)
    n = 4000
    for seed in range(n):
        strategy = make_strategy(DecodeSettings(temperature=1.3, top_k=4, seed=seed))
        token = generate(model, strategy, prompt, 1, set()).tokens[0]
        counts[token] += 1  # a token outside the top 4 would be a KeyError
    chi2 = sum((counts[t] - n * float(probs[t])) ** 2 / (n * float(probs[t])) for t in support)
    assert chi2 < 21.1, (counts, probs[support])


def test_temperature_near_zero_is_greedy_and_a_seed_fixes_the_output():
    model = with_heads("llama", 4, num_heads=2)
    greedy = make_strategy("single-head")
    for prompt in prompts(6):
        ref = generate(model, greedy, prompt, 20, set()).tokens
        cold = make_strategy(DecodeSettings(temperature=1e-4))
        assert generate(model, cold, prompt, 20, set()).tokens == ref
        hot = [generate(model, make_strategy(DecodeSettings(temperature=1.5, seed=s)), prompt, 20,
                        set()).tokens for s in (7, 7, 8)]
        assert hot[0] == hot[1] and hot[0] != hot[2]


def test_the_static_engine_decodes_samples_with_the_eager_step():
    model = with_heads("llama", 4, num_heads=2)
    prompt = prompts(7)[0]
    settings = DecodeSettings(temperature=0.9, top_p=0.9, seed=3)
    eager = generate(model, make_strategy(settings), prompt, 16, set()).tokens
    static = StaticEngine(model, capture=False, quiet=True)
    assert static.generate(make_strategy(settings), prompt, 16, set()).tokens == eager
    assert not math.isnan(sum(eager))


def test_a_strategy_that_cannot_sample_refuses_a_temperature(monkeypatch):
    monkeypatch.setattr(StaticTree, "samples", False)
    with pytest.raises(MedusaError, match="decodes at temperature 0 only"):
        make_strategy(DecodeSettings("tree", 2, temperature=0.7))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-k", "-2"], "--top-k"),
        (["-ds", "multi-head", "--acceptance", "rescore", "--temperature", "0.7"],
         "rescore verifies at temperature 0"),
    ],
)
def test_bad_sampling_flags_are_one_line_errors(args, needle, tiny_model_dir, tmp_path, capsys):
    bad_input(["-m", str(tiny_model_dir), "-n", "1", "-o", str(tmp_path / "o")] + args, capsys,
              needle)
