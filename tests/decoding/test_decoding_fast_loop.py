"""The fast loop (static cache, fixed-shape drafts, on-device acceptance) against the reference
loop, on the CPU.

The graphs engine replays exactly this step; here it runs uncaptured
(``StaticEngine(capture=False)``), so every line of its logic is checked without a GPU.
tests/test_cuda.py checks the captured version on a GPU.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_decoding_multi_head import prompts, with_heads
from test_replay import _medusa

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import EagerEngine, StaticEngine, make_engine, resolve_engine
from medusa.decoding.fast_loop import FastDecoder, prefill_bucket, prefill_buckets
from medusa.decoding.static_cache import StaticKVCache
from medusa.decoding.single_head import SingleHead
from medusa.errors import MedusaError

GREEDY = [
    DecodeSettings("single-head"),
    DecodeSettings("tree", 1),
    DecodeSettings("tree", 3),
    DecodeSettings("tree", 4),
    DecodeSettings("multi-head", 1, 1),
    DecodeSettings("multi-head", 2, 2),
    DecodeSettings("multi-head", 4, 3),
    DecodeSettings("multi-head", 2, 5),
    DecodeSettings("tree", 4, adaptive=True),
    DecodeSettings("multi-head", 3, 2, adaptive=True),
]


def _same(a, b, stats: bool = True) -> None:
    assert b.tokens == a.tokens
    if not stats:
        return
    assert b.accepted_per_step == a.accepted_per_step
    assert b.drafted_depth_per_step == a.drafted_depth_per_step
    assert b.stop_reason == a.stop_reason


@pytest.mark.parametrize(
    "kind,seed,overrides",
    [
        ("llama", 0, {}),
        ("llama", 1, {"tie_word_embeddings": True}),
        ("llama", 2, {"num_key_value_heads": 1}),
        ("qwen2", 3, {}),
        ("mistral", 5, {}),
    ],
)
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_greedy_fast_loop_equals_the_reference_loop(kind, seed, overrides, noise):
    """A fixed node count (multi-head padded to W × (S+1) unmerged nodes) gives the reference tokens
    and statistics.

    Identity heads (noise 0) give every level the same distribution, so permuted beams tie exactly
    and the last-bit differences between two forwards decide which W survive: there only the tokens
    must agree."""
    model = with_heads(kind, seed, num_heads=5, noise=noise, **overrides)
    engine = StaticEngine(model, capture=False)
    for settings in GREEDY:
        for prompt in prompts(seed, n=2):
            ref = generate(model, make_strategy(settings), prompt, 30, set())
            got = engine.generate(make_strategy(settings), prompt, 30, set())
            _same(ref, got, stats=noise > 0 or settings.strategy != "multi-head")
            assert ref.tokens == generate(model, SingleHead(), prompt, 30, set()).tokens


@pytest.mark.parametrize("max_new", [1, 2, 3, 5, 17])
def test_length_limit_and_stop_tokens(max_new):
    model = with_heads("llama", 4, num_heads=4, noise=0.2)
    engine = StaticEngine(model, capture=False)
    prompt = prompts(4)[0]
    free = generate(model, SingleHead(), prompt, 40, set()).tokens
    for stops in (set(), {free[0]}, {free[3]}, {free[min(max_new, len(free) - 1)]}):
        for settings in (
            DecodeSettings("single-head"),
            DecodeSettings("tree", 4),
            DecodeSettings("multi-head", 3, 4),
        ):
            ref = generate(model, make_strategy(settings), prompt, max_new, stops)
            _same(ref, engine.generate(make_strategy(settings), prompt, max_new, stops))


@pytest.mark.parametrize("seed,noise", [(0, 0.05), (3, 0.1)])
def test_token_input_heads(seed, noise):
    model = _medusa(seed, noise, token_input=True)
    engine = StaticEngine(model, capture=False)
    for settings in (DecodeSettings("tree", 4), DecodeSettings("multi-head", 2, 3)):
        for prompt in ([5 + seed, 17, 40, 9], [7] * 20):
            ref = generate(model, make_strategy(settings), prompt, 24, {2})
            _same(ref, engine.generate(make_strategy(settings), prompt, 24, {2}))


@pytest.mark.parametrize("settings", [
    DecodeSettings("tree", 3, acceptance="typical"), DecodeSettings("multi-head", 2, 3, "typical"),
    DecodeSettings("multi-head", 3, 2, "typical", posterior_threshold=0.3, posterior_alpha=0.5),
    DecodeSettings("tree", 3, acceptance="rescore"), DecodeSettings("multi-head", 2, 2, "rescore"),
])
def test_lossy_rules_on_device_give_the_reference_tokens(settings):
    """Typical and rescore on the device: the same tokens and per-step counts as the host rules
    (noisy heads: no exact score ties); near the length limit the depth limit picks the draft the
    reference loop makes there."""
    for seed in (1, 2):
        model = with_heads("llama", seed, num_heads=4, noise=0.3)
        engine = StaticEngine(model, capture=False)
        for prompt in prompts(seed, n=2):
            ref = generate(model, make_strategy(settings), prompt, 30, {7})
            got = engine.generate(make_strategy(settings), prompt, 30, {7})
            _same(ref, got)


def test_adaptive_statistics_follow_the_same_depths():
    model = with_heads("llama", 1, num_heads=4, noise=0.3)
    eager, fast = make_strategy(DecodeSettings("tree", 4, adaptive=True)), make_strategy(
        DecodeSettings("tree", 4, adaptive=True))
    engine = StaticEngine(model, capture=False)
    for prompt in prompts(1, n=3):
        _same(generate(model, eager, prompt, 30, set()), engine.generate(fast, prompt, 30, set()))
    assert eager.depth_counts == fast.depth_counts and eager.mean_accepted == fast.mean_accepted


def test_caches_are_sized_once_and_reused(capsys):
    model = with_heads("llama", 0, num_heads=3)
    engine = StaticEngine(model, capture=False)
    strategy = make_strategy(DecodeSettings("tree", 3))
    engine.prepare(strategy, 40, 20)
    prepared = engine._plan(strategy)
    assert len(prepared.decoders) == 1 and prepared.decoders[0][0].cache.capacity % 128 == 0
    engine.generate(strategy, [5] * 10, 20, set())
    assert len(prepared.decoders) == 1  # a shorter prompt reuses the prepared cache
    engine.generate(strategy, [5] * 300, 20, set())
    assert len(prepared.decoders) == 2 and prepared.decoders[1][0].cache.capacity >= 300 + 20 + 31
    other = make_strategy("single-head")
    engine.prepare(other, 40, 20)
    # same size: shared
    assert engine._plan(other).decoders[0][0].cache is prepared.decoders[0][0].cache


def test_prefill_buckets_are_few_and_pad_little():
    for capacity in (128, 384, 1152, 4096):
        for length in range(1, capacity):
            bucket = prefill_bucket(length, capacity)
            assert length <= bucket <= capacity
            if length >= 128 and bucket < capacity:
                assert bucket - length < length / 4
        buckets = prefill_buckets(capacity - 1, capacity)
        assert buckets == sorted(set(buckets)) and buckets[-1] == capacity
        assert {prefill_bucket(n, capacity) for n in range(1, capacity)} == set(buckets)
    assert prefill_buckets(406, 640) == [32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448]


@pytest.mark.parametrize("length", [1, 5, 32, 37, 100])
def test_padded_prefill_equals_the_prompt_at_its_own_length(length):
    """Padding after the prompt changes nothing the decode reads: the prompt's cache rows, the
    committed length and the state the first draft starts from (old padding left in the buffer
    included)."""
    model = with_heads("llama", 1, num_heads=3, noise=0.3)
    plan = make_strategy(DecodeSettings("tree", 3)).device_plan(model.device)
    g = torch.Generator().manual_seed(length)
    prompt = torch.randint(3, 400, (length,), generator=g).tolist()
    ref, got = (
        FastDecoder(model, plan, StaticKVCache(model.config, 256, model.device, model.dtype))
        for _ in "ab"
    )
    with torch.inference_mode():
        ref.prefill(prompt)
        # a longer prompt's leftovers
        got.stage(torch.randint(3, 400, (200,), generator=g).tolist())
        got.prefill_padded(prefill_bucket(200, 256))
        got.stage(prompt)
        got.prefill_padded(prefill_bucket(length, 256))
    assert int(got.committed) == int(ref.committed) == length
    assert got.out.tolist() == ref.out.tolist()
    torch.testing.assert_close(got.last_logits, ref.last_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.last_hidden, ref.last_hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        got.cache.kv[..., :length, :], ref.cache.kv[..., :length, :], rtol=1e-5, atol=1e-5
    )


def test_prompts_of_changing_lengths_in_one_engine():
    """Long, short, long again through the same decoders and cache: nothing from one prompt reaches
    the next."""
    model = with_heads("llama", 2, num_heads=4, noise=0.3)
    engine = StaticEngine(model, capture=False)
    g = torch.Generator().manual_seed(7)
    lengths = (70, 3, 70, 33, 64, 1)
    for settings in (
        DecodeSettings("single-head"),
        DecodeSettings("tree", 4),
        DecodeSettings("multi-head", 2, 3),
    ):
        strategy = make_strategy(settings)
        engine.prepare(strategy, max(lengths), 20)
        for n in lengths:
            prompt = torch.randint(3, 400, (n,), generator=g).tolist()
            _same(
                generate(model, make_strategy(settings), prompt, 20, set()),
                engine.generate(strategy, prompt, 20, set()),
            )


def test_a_strategy_without_device_tensors_runs_in_the_reference_loop():
    model = with_heads("llama", 0, num_heads=3)

    class HostOnly(SingleHead):
        def device_plan(self, device):
            return None

    prompt = prompts(0)[0]
    got = StaticEngine(model, capture=False).generate(HostOnly(), prompt, 12, set())
    assert got.tokens == generate(model, SingleHead(), prompt, 12, set()).tokens


def test_engine_choice():
    model = with_heads("llama", 0, num_heads=2)
    assert resolve_engine("auto", torch.device("cpu")) == "eager"
    assert resolve_engine("auto", torch.device("cuda")) == "graphs"
    assert isinstance(make_engine(model, "auto"), EagerEngine)
    assert make_engine(model, "eager").describe() == {"name": "eager", "setup_seconds": 0.0}
    assert resolve_engine("compiled", torch.device("cuda")) == "compiled"
    with pytest.raises(MedusaError, match="needs CUDA"):
        resolve_engine("graphs", torch.device("cpu"))
    with pytest.raises(MedusaError, match="needs CUDA"):
        resolve_engine("compiled", torch.device("cpu"))
    with pytest.raises(MedusaError, match="graphs needs CUDA"):
        StaticEngine(model, capture=True)
    assert StaticEngine(model, capture=False).name == "static"
    with pytest.raises(MedusaError, match="unknown engine"):
        resolve_engine("warp", torch.device("cpu"))


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message shown when CUDA is absent"
)
def test_cli_engine_graphs_without_cuda_is_one_line(tiny_model_dir, tmp_path, capsys):
    from medusa.cli import main

    code = main(
        ["-m", str(tiny_model_dir), "--engine", "graphs", "-n", "1", "-o", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and [x for x in err.splitlines() if x.startswith("error:")] == [
        "error: --engine graphs needs CUDA, and this run decodes on the CPU; use --engine eager or"
        " auto"
    ]
    assert "loading base model" not in err  # refused before any weights load


def test_cli_records_the_engine_and_resumes_runs_recorded_before_it(
    tiny_model_dir, tmp_path, capsys
):
    from medusa.cli import main

    out_dir = tmp_path / "run"
    base = ["-m", str(tiny_model_dir), "-mol", "5", "-o", str(out_dir), "--prompt-style", "seed"]
    assert main(base + ["-n", "2"]) == 0
    err = capsys.readouterr().err
    assert "engine eager" in err
    assert json.loads((out_dir / "summary.json").read_text())["engine"]["name"] == "eager"
    record = json.loads((out_dir / "run.json").read_text())
    # the engine used is what must match
    assert record["engine_used"] == "eager" and "engine" not in record
    del record["engine_used"]  # a run.json written before engines existed
    (out_dir / "run.json").write_text(json.dumps(record))
    assert main(base + ["-n", "3", "--resume"]) == 0
    capsys.readouterr()
    # auto → eager here: the same decode
    assert main(base + ["-n", "3", "--resume", "--engine", "eager"]) == 0


def test_a_step_that_cannot_be_built_is_one_line_or_falls_back(monkeypatch, capsys):
    """A model whose forward refuses capture (a host sync inside) gets a one-line error under an
    explicit engine, and under ``auto`` a printed note and the eager loop for that strategy."""
    model = with_heads("llama", 0, num_heads=3, noise=0.3)

    def refuse(self, decoder):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(StaticEngine, "_build", refuse)
    strategy = make_strategy(DecodeSettings("tree", 3))
    prompt = prompts(0)[0]
    with pytest.raises(
        MedusaError, match=r"cannot run under --engine static .*not permitted.*use --engine eager"
    ):
        StaticEngine(model, capture=False).prepare(strategy, 20, 10)
    engine = StaticEngine(model, capture=False, fallback=True)
    engine.prepare(strategy, 20, 10)
    assert "decoding it with the eager loop" in capsys.readouterr().err
    assert (
        engine.generate(strategy, prompt, 10, set()).tokens
        == generate(model, SingleHead(), prompt, 10, set()).tokens
    )
    assert engine.describe()["fell_back_to_eager"] == ["tree"]


def test_compiled_engines_may_compile_one_step_per_decoder():
    import torch._dynamo

    model = with_heads("llama", 0, num_heads=2)
    StaticEngine(model, capture=False, compile=True)
    # else the 9th strategy/cache would run uncompiled
    assert torch._dynamo.config.recompile_limit >= 256


def test_each_run_reports_its_own_setup_time():
    model = with_heads("llama", 0, num_heads=2)
    engine = StaticEngine(model, capture=False)
    engine.prepare(make_strategy("single-head"), 10, 10)
    before = engine.setup_seconds
    assert before > 0 and engine.describe(before)["setup_seconds"] == 0.0


def test_compile_options_reach_torch_compile_and_the_record(monkeypatch):
    """The inductor options an engine is built with are what torch.compile gets (for the step and
    for any other function the engine compiles), and describe() records them; without compile
    nothing is compiled."""
    model = with_heads("llama", seed=3)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    options = {"coordinate_descent_tuning": True}
    engine = StaticEngine(model, capture=False, compile=True, compile_options=options, quiet=True)

    def f():
        return 1

    assert engine.compiled(f) is f and calls == [{"dynamic": False, "options": options}]
    assert engine.describe()["compile_options"] == options
    plain = StaticEngine(model, capture=False, quiet=True)
    assert plain.compiled(f) is f and len(calls) == 1 and "compile_options" not in plain.describe()
    StaticEngine(model, capture=False, compile=True, quiet=True).compiled(f)
    assert calls[-1] == {"dynamic": False, "options": None}
