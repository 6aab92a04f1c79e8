"""Lossless speculative sampling over draft trees (medusa/decoding/accept.py): the rule's outcomes
have their closed-form probabilities, full decodes of every tree strategy draw their first tokens
from the base model's processed distribution, the fast engine draws the eager loop's tokens, and
temperature → 0 is greedy.

Distribution checks are chi-square tests on seeded draws: each threshold is the 1 − 10⁻⁴ quantile
of its chi-square law (a correct sampler fails once in 10,000 seeds), and since the seeds are fixed
CI sees the same counts every run. Outcomes expected fewer than 5 times share one bin."""

from __future__ import annotations

import math

import pytest
import torch
from test_decoding_multi_head import with_heads
from test_replay import _medusa

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.accept import SpeculativeSampling
from medusa.decoding.base import DecodeState, Tree, Verified
from medusa.decoding.engine import StaticEngine
from medusa.decoding.sampling import Sampling, processed_probs
from medusa.errors import MedusaError

PROMPT = [5, 17, 40, 9, 33, 12]
Z_FALSE_ALARM = 3.719  # the standard normal's 1 − 10⁻⁴ quantile


def chi2_limit(df: int) -> float:
    """The chi-square law's 1 − 10⁻⁴ quantile (Wilson–Hilferty: at most 4% above it for df ≥ 3,
    so slightly fewer false alarms)."""
    a = 2 / (9 * df)
    return df * (1 - a + Z_FALSE_ALARM * math.sqrt(a)) ** 3


def chi2_check(counts: dict, expected: dict[object, float]) -> None:
    """``counts`` of outcomes against ``expected`` probabilities (summing to 1); an outcome with
    probability 0 must never occur."""
    n = sum(counts.values())
    assert abs(sum(expected.values()) - 1) < 1e-5
    impossible = {k: c for k, c in counts.items() if expected.get(k, 0.0) == 0.0}
    assert not impossible, f"outcomes of probability 0 occurred: {impossible}"
    big = [k for k, p in expected.items() if n * p >= 5]
    bins = [(counts.get(k, 0), n * expected[k]) for k in big]
    small = [k for k in expected if k not in big and expected[k] > 0]
    if small:
        bins.append((sum(counts.get(k, 0) for k in small), n * sum(expected[k] for k in small)))
    chi2 = sum((c - e) ** 2 / e for c, e in bins)
    assert len(bins) >= 4, bins
    assert chi2 < chi2_limit(len(bins) - 1), (chi2, len(bins), bins)


def test_chi2_limit_matches_the_tables():
    # the 1 − 10⁻⁴ quantiles for 3, 10 and 30 degrees of freedom: 21.11, 35.56 and 67.63
    for df, table in ((3, 21.11), (10, 35.56), (30, 67.63)):
        assert table <= chi2_limit(df) < 1.04 * table


# the rule on a fixed tree: root r (node 0) with children a (node 1) and b (node 2); c (node 3)
# under a. Verify logits: row i is the base distribution after node i's token.
VOCAB, A, B, C = 6, 1, 3, 2
PARENTS, TOKENS = [-1, 0, 0, 1], [4, A, B, C]


def _rule_outcomes(sampling: Sampling, logits: torch.Tensor, n: int) -> dict:
    counts: dict[tuple[int, ...], int] = {}
    for seed in range(n):
        rule = SpeculativeSampling(Sampling(sampling.temperature, seed=seed))
        rule.sampler.for_depth(2)
        state = DecodeState(torch.zeros(VOCAB), None, drawn=TOKENS[0])
        verified = Verified(logits, torch.zeros(4, 1), torch.tensor(TOKENS))
        path = rule.accept(state, Tree(TOKENS, PARENTS), verified)
        assert path[0] == 0
        key = tuple(TOKENS[i] for i in path[1:]) + (verified.bonus,)
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_the_rule_emits_the_base_models_tokens_with_their_probabilities():
    """20,000 steps on one tree: the emitted tokens after the root (accepted children, then the
    bonus) are distributed as sampling the base model token by token, and a bonus after rejected
    children follows the residual max(p − Σ q, 0) / Z with one-hot q."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, VOCAB, generator=gen) * 1.5
    logits[0, A] += 1.0  # the children are likely enough to be accepted often
    logits[1, C] += 1.0
    sampling = Sampling(temperature=0.9)
    p = processed_probs(logits, sampling)
    expected: dict[tuple[int, ...], float] = {}
    for y in range(VOCAB):
        expected[(y,)] = float(p[0, y]) if y not in (A, B) else 0.0
        expected[(A, y)] = float(p[0, A] * p[1, y]) if y != C else 0.0
        expected[(A, C, y)] = float(p[0, A] * p[1, C] * p[3, y])
        expected[(B, y)] = float(p[0, B] * p[2, y])
    counts = _rule_outcomes(sampling, logits, 20_000)
    chi2_check(counts, expected)
    # the bonus when both children of the root are rejected, against the closed-form residual
    q = torch.zeros(VOCAB)
    q[[A, B]] = 1.0
    residual = (p[0] - q).clamp_min(0)
    residual = residual / residual.sum()
    rejected = {k[0]: c for k, c in counts.items() if len(k) == 1}
    chi2_check(rejected, {y: float(residual[y]) for y in range(VOCAB)})


def _base_distribution(model, prompt: list[int], k: int, sampling: Sampling) -> dict:
    """Exact: the probability of every first-``k``-token sequence under the processed
    distribution, by enumerating the support token by token."""
    out: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(k):
        grown = {}
        for seq, prob in out.items():
            with torch.inference_mode():
                logits = model.step(torch.tensor([prompt + list(seq)]), None,
                                    last_only=True).logits[0, -1]
            probs = processed_probs(logits, sampling)
            for t in probs.nonzero().flatten().tolist():
                grown[seq + (t,)] = prob * float(probs[t])
        out = grown
    return out


@pytest.mark.parametrize(
    "settings, sequential",
    [
        (DecodeSettings("tree", 2), False),
        (DecodeSettings("multi-head", 2, 3), False),
        (DecodeSettings("tree", 2, dynamic_tree=6), False),
        (DecodeSettings("tree", 3), True),
    ],
    ids=["tree", "multi-head", "dynamic-tree", "tree-sequential-heads"],
)
def test_every_strategy_samples_the_base_models_first_tokens(settings, sequential):
    """20,000 decodes of 3 tokens (each from its own seed) against the exact distribution of the
    base model's first 3 tokens under temperature 0.15 and top-k 3 (27 sequences; the tiny
    model is nearly uniform, so a low temperature makes its top tokens differ: 0.52, 0.25, 0.23
    after the prompt). The heads must
    get drafts accepted in many steps, or the check would only test single-head."""
    model = (_medusa(3, 0.1, sequential=True, num_heads=3) if sequential
             else with_heads("llama", 3, num_heads=2, vocab_size=64))
    sampling = Sampling(temperature=0.15, top_k=3)
    expected = _base_distribution(model, PROMPT, 3, sampling)
    counts: dict[tuple[int, ...], int] = {}
    accepted = []
    for seed in range(20_000):
        settings.temperature, settings.top_k, settings.seed = 0.15, 3, seed
        result = generate(model, make_strategy(settings), PROMPT, 3, set())
        key = tuple(result.tokens)
        counts[key] = counts.get(key, 0) + 1
        accepted += result.accepted_per_step
    assert sum(a > 1 for a in accepted) > 0.1 * len(accepted)
    chi2_check(counts, expected)


FAST_SETTINGS = [
    DecodeSettings(temperature=0.8),
    DecodeSettings("tree", 3, temperature=0.8, top_k=20),
    DecodeSettings("tree", 3, temperature=1.2, top_p=0.9, adaptive=True),
    DecodeSettings("multi-head", 2, 3, temperature=0.7),
    DecodeSettings("multi-head", 3, 2, temperature=1.0, top_k=8),
    DecodeSettings("tree", 3, acceptance="typical", temperature=0.7),
    DecodeSettings("multi-head", 2, 2, acceptance="typical", temperature=0.9),
]


@pytest.mark.parametrize("settings", FAST_SETTINGS, ids=lambda s: f"{s.strategy}-{s.acceptance}")
@pytest.mark.parametrize("sequential", [False, True], ids=["heads", "sequential-heads"])
def test_the_fast_engine_samples_the_eager_loops_tokens(settings, sequential):
    """The fixed-shape step (uncaptured here; captured on a GPU) reads the same uniforms as the
    eager step, so it gives the same tokens and the same accepted lengths."""
    model = _medusa(2, 0.2, sequential=sequential, num_heads=3)
    engine = StaticEngine(model, capture=False, quiet=True)
    for seed, (prompt, max_new) in enumerate((([5, 17, 40, 9], 30), ([7] * 12, 25), ([3], 4))):
        settings.seed = seed
        ref = generate(model, make_strategy(settings), prompt, max_new, {2})
        got = engine.generate(make_strategy(settings), prompt, max_new, {2})
        assert (got.tokens, got.accepted_per_step) == (ref.tokens, ref.accepted_per_step)
    assert engine.fell_back == []


@pytest.mark.parametrize("settings", [
    DecodeSettings("tree", 3), DecodeSettings("multi-head", 2, 3),
    DecodeSettings("tree", 3, dynamic_tree=8), DecodeSettings("tree", 2, acceptance="typical"),
], ids=["tree", "multi-head", "dynamic-tree", "typical"])
def test_temperature_near_zero_is_greedy_and_a_seed_fixes_the_output(settings):
    """Near 0 the processed distribution is the argmax alone, so every rule (typical too: only the
    argmax passes its threshold) decodes the greedy tokens."""
    model = _medusa(4, 0.2, num_heads=3)
    for prompt in ([5, 17, 40, 9], [8, 8, 30]):
        greedy = generate(model, make_strategy("single-head"), prompt, 24, set()).tokens
        settings.temperature = 1e-5
        assert generate(model, make_strategy(settings), prompt, 24, set()).tokens == greedy
        settings.temperature = 1.5
        hot = []
        for seed in (7, 7, 8):
            settings.seed = seed
            hot.append(generate(model, make_strategy(settings), prompt, 24, set()).tokens)
        assert hot[0] == hot[1] and hot[0] != hot[2]


def test_rescore_refuses_a_temperature():
    with pytest.raises(MedusaError, match="rescore verifies at temperature 0"):
        make_strategy(DecodeSettings("multi-head", 2, 2, "rescore", temperature=0.7))
