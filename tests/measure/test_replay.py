"""Replay must reproduce the decode loop's per-step accepted counts exactly (fp32), for every
strategy it measures."""

from __future__ import annotations

import pytest
import torch

from conftest import make_model
from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.model import MedusaModel
from medusa.measure.replay import head_topk_hits, ranked_positions, replay_steps

STOPS = {2}


def _medusa(seed: int, noise: float, token_input: bool = False, sequential: bool = False,
            num_heads: int = 4) -> MedusaModel:
    base = make_model("llama", seed=seed)
    kind = "sequential" if sequential else "token-input" if token_input else "medusa"
    config = HeadConfig(num_heads, 1, base.config.hidden_size, base.config.vocab_size, drafter=kind)
    heads = MedusaHeads(config, base.get_output_embeddings(), base.get_input_embeddings())
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for p in heads.parameters():
            if p is not base.get_output_embeddings().weight:
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    return MedusaModel(base, tokenizer=None, heads=heads).eval()


SETTINGS = [
    DecodeSettings(strategy="multi-head", num_heads=s, beam_width=w)
    for w, s in ((1, 1), (2, 2), (3, 4))
]
SETTINGS += [DecodeSettings(strategy="tree", num_heads=k) for k in (2, 4)]


@pytest.mark.parametrize(
    "seed,noise,token_input", [(0, 0.0, False), (1, 0.05, False), (2, 0.2, False), (3, 0.1, True)]
)
def test_replay_equals_the_decode_loop_step_for_step(seed, noise, token_input):
    # float64: no near-tie flips between forward shapes
    model = _medusa(seed, noise, token_input).double()
    prompts = [[5 + seed, 17, 40 + i, 9] for i in range(4)]
    max_new = 24
    single = make_strategy("single-head")
    gens = [generate(model, single, p, max_new, STOPS).tokens for p in prompts]
    ranked = ranked_positions(model, list(zip(prompts, gens)), num_heads=4, batch_size=3)
    multi_token_steps = 0
    for settings in SETTINGS:
        strategy = make_strategy(settings)
        for prompt, gen, rk in zip(prompts, gens, ranked):
            real = generate(model, strategy, prompt, max_new, STOPS)
            assert real.tokens == gen  # greedy verification is lossless
            assert replay_steps(strategy, gen, rk, max_new, STOPS) == real.accepted_per_step
            multi_token_steps += sum(a > 1 for a in real.accepted_per_step)
    assert multi_token_steps > 0  # the comparison covered steps that accepted drafted tokens


def test_replay_counts_the_stop_token_like_the_loop():
    model = _medusa(0, 0.0)
    prompt = [3, 4, 5]
    max_new = 40
    stops = set(range(model.base_model.config.vocab_size)) - {3, 4, 5}  # nearly anything stops
    gen = generate(model, make_strategy("single-head"), prompt, max_new, stops)
    assert gen.stop_reason == "eos"
    rk = ranked_positions(model, [(prompt, gen.tokens)], num_heads=4)[0]
    strategy = make_strategy(DecodeSettings(strategy="tree", num_heads=4))
    real = generate(model, strategy, prompt, max_new, stops)
    assert replay_steps(strategy, gen.tokens, rk, max_new, stops) == real.accepted_per_step


def test_head_topk_hits_on_crafted_ranks():
    from medusa.measure.replay import RankedPositions

    generated = [10, 11, 12, 13, 14]
    k, r = 2, 3
    p = len(generated) + 1
    head_ids = torch.zeros(k, p, r, dtype=torch.long)
    # head 0 at state p predicts generated[p + 1]; put it at rank 0 for p=0, rank 2 for p=1, absent
    # for p=2
    head_ids[0, 0, 0], head_ids[0, 1, 2] = 11, 12
    head_ids[1, 0, 1] = 12  # head 1 at state 0 predicts generated[2] = 12, at rank 1
    ranked = RankedPositions(
        torch.zeros(p, r), torch.zeros(p, r, dtype=torch.long), torch.zeros(k, p, r), head_ids
    )
    hits, n = head_topk_hits(ranked, generated, ks=(1, 3))
    assert n == 3
    assert hits.tolist() == [[1, 0], [2, 1]]


def test_replay_refuses_a_strategy_it_cannot_replay():
    model = _medusa(0, 0.0)
    rk = ranked_positions(model, [([3, 4], [5, 6, 7])], num_heads=2)[0]
    with pytest.raises(MedusaError):
        replay_steps(make_strategy("single-head"), [5, 6, 7], rk, 10, STOPS)


@pytest.mark.parametrize(
    "drafter", ["token-input", "sequential", "autoregressive", "context", "vocab"]
)
def test_drafted_replay_equals_the_decode_loop_step_for_step(drafter):
    """Path-dependent drafters draft for real at each visited position (float64, as above);
    independent heads give the ranked replay's counts too. The context drafter's replay builds its
    cache from the whole row at once."""
    import test_autoregressive_drafter
    import test_context_drafter

    from medusa.measure.replay import drafted_replay

    if drafter in ("autoregressive", "vocab"):
        model = test_autoregressive_drafter._model(4, 0.15).double()
        if drafter == "vocab":  # drafts from half the tokens: some of the text's are never drafted
            model.heads.set_draft_vocab(
                torch.randperm(400, generator=torch.Generator().manual_seed(5))[:200]
            )
    elif drafter == "context":
        model = test_context_drafter._model(4, 0.15).double()
    else:
        model = _medusa(
            4, 0.2, token_input=drafter == "token-input", sequential=drafter == "sequential"
        ).double()
    # lengths differ: rows get sorted
    prompts = [[9, 17, 40 + i, 9][: 4 - i % 2] + [11] * i for i in range(4)]
    max_new = 24
    gens = [
        generate(model, make_strategy("single-head"), p, max_new, STOPS).tokens for p in prompts
    ]
    strategies = {
        str(i): make_strategy(s)
        for i, s in enumerate(SETTINGS + [DecodeSettings("tree", 4, dynamic_tree=10)])
    }
    replayed = drafted_replay(
        model, strategies, list(zip(prompts, gens)), max_new, STOPS, batch_size=3
    )
    ranked = (
        None if model.path_dependent_heads else ranked_positions(model, list(zip(prompts, gens)), 4)
    )
    multi_token_steps = 0
    for key, strategy in strategies.items():
        for i, (prompt, gen) in enumerate(zip(prompts, gens)):
            real = generate(
                model,
                make_strategy(SETTINGS[int(key)]) if int(key) < len(SETTINGS) else strategy,
                prompt,
                max_new,
                STOPS,
            )
            assert real.tokens == gen
            assert replayed[key][i] == real.accepted_per_step, (key, i)
            if ranked is not None and int(key) < len(SETTINGS):
                assert replayed[key][i] == replay_steps(strategy, gen, ranked[i], max_new, STOPS), (
                    key,
                    i,
                )
            multi_token_steps += sum(a > 1 for a in real.accepted_per_step)
    assert multi_token_steps > 0


def test_drafted_replay_refuses_what_it_cannot_replay():
    from medusa.measure.replay import drafted_replay

    model = _medusa(0, 0.1)
    for settings in (
        DecodeSettings("tree", 3, acceptance="typical"),
        DecodeSettings("tree", 3, adaptive=True),
    ):
        with pytest.raises(MedusaError, match="greedy multi-head and tree"):
            drafted_replay(model, {"x": make_strategy(settings)}, [([5, 6], [7, 8])], 8, STOPS)
