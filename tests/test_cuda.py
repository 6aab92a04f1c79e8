"""GPU checks (skipped without CUDA): the same decoding contract on the device, timings
synchronised."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model

from medusa.decoding import generate, make_strategy
from medusa.model import MedusaModel
from medusa.runner import Timer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_single_head_on_cuda_equals_generate_fp32():
    model = make_model("llama", seed=21).cuda()
    wrapped = MedusaModel(model, tokenizer=None)
    prompt = [5, 17, 33, 48, 60]
    ours = generate(wrapped, make_strategy("single-head"), prompt, 32, stop_ids=set()).tokens
    ref = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=32, do_sample=False,
                         pad_token_id=0, eos_token_id=[])[0, len(prompt):].tolist()
    assert ours == ref


def test_single_head_on_cuda_bf16_runs_and_respects_length():
    model = make_model("llama", seed=22).to("cuda", torch.bfloat16)
    result = generate(
        MedusaModel(model, tokenizer=None), make_strategy("single-head"), [5, 6, 7], 16, set()
    )
    assert len(result.tokens) == 16


def test_timer_waits_for_queued_kernels():
    a = torch.randn(4096, 4096, device="cuda")
    with Timer(torch.device("cuda")) as t:
        for _ in range(20):
            a = a @ a / 64
    assert t.seconds > 0


def _cuda_heads_model(dtype):
    from test_decoding_multi_head import with_heads

    return with_heads("llama", 0, num_heads=4, noise=0.0).to("cuda", dtype)


def test_multi_head_and_tree_greedy_equal_single_head_fp32_on_cuda():
    from medusa.decoding import DecodeSettings

    model = _cuda_heads_model(torch.float32)
    for prompt in ([5, 17, 33, 48, 60], [9, 8, 7]):
        ref = generate(model, make_strategy("single-head"), prompt, 40, set()).tokens
        for s in (
            DecodeSettings("multi-head", 3, 2),
            DecodeSettings("tree", 4),
            DecodeSettings("tree", 3, adaptive=True),
        ):
            assert generate(model, make_strategy(s), prompt, 40, set()).tokens == ref



def test_token_input_heads_greedy_and_replay_on_cuda_fp32():
    from test_replay import _medusa

    from medusa.decoding import DecodeSettings
    from medusa.measure.replay import ranked_positions, replay_steps

    model = _medusa(3, 0.1, token_input=True).to("cuda")
    prompt = [5, 17, 33, 48, 60]
    ref = generate(model, make_strategy("single-head"), prompt, 40, {2}).tokens
    rk = ranked_positions(model, [(prompt, ref)], num_heads=4)[0]
    for s in (
        DecodeSettings(strategy="multi-head", num_heads=3, beam_width=2),
        DecodeSettings(strategy="tree", num_heads=4),
    ):
        strategy = make_strategy(s)
        got = generate(model, strategy, prompt, 40, {2})
        assert got.tokens == ref
        assert replay_steps(strategy, ref, rk, 40, {2}) == got.accepted_per_step


# ---- the graphs engine: static cache + captured steps, exactly the eager tokens in fp32 ----

def _graphs_cases():
    from medusa.decoding import DecodeSettings

    return [
        DecodeSettings("single-head"),
        DecodeSettings("tree", 4),
        DecodeSettings("tree", 3, adaptive=True),
        DecodeSettings("multi-head", 2, 2),
        DecodeSettings("multi-head", 3, 4),
        DecodeSettings("multi-head", 5, 5),
    ]


@pytest.mark.parametrize(
    "kind,overrides", [("llama", {}), ("llama", {"num_key_value_heads": 1}), ("qwen2", {})]
)
def test_graphs_engine_equals_eager_single_head_fp32(kind, overrides):
    from test_decoding_multi_head import with_heads

    from medusa.decoding.engine import StaticEngine

    model = with_heads(kind, 1, num_heads=5, noise=0.3, **overrides).to("cuda")
    engine = StaticEngine(model, capture=True, quiet=True)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 400, (n,), generator=g).tolist() for n in (3, 31, 200)]
    for prompt in prompts:
        free = generate(model, make_strategy("single-head"), prompt, 40, set()).tokens
        for stops in (set(), {free[5]}):
            ref = generate(model, make_strategy("single-head"), prompt, 40, stops)
            for settings in _graphs_cases():
                got = engine.generate(make_strategy(settings), prompt, 40, stops)
                assert got.tokens == ref.tokens and got.stop_reason == ref.stop_reason, settings


def test_graphs_replay_equals_the_uncaptured_step_for_every_rule():
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = with_heads("llama", 2, num_heads=4, noise=0.3).to("cuda")
    captured, plain = StaticEngine(model, capture=True, quiet=True), StaticEngine(
        model, capture=False
    )
    for settings in (
        DecodeSettings("tree", 4, acceptance="typical"),
        DecodeSettings("multi-head", 3, 3, "typical"),
        DecodeSettings("multi-head", 2, 3, "rescore"),
        DecodeSettings("tree", 4, adaptive=True),
    ):
        for prompt in ([5, 17, 33, 48, 60], [9] * 50):
            a = plain.generate(make_strategy(settings), prompt, 40, {7})
            b = captured.generate(make_strategy(settings), prompt, 40, {7})
            assert (b.tokens, b.accepted_per_step, b.drafted_depth_per_step) == (
                a.tokens, a.accepted_per_step, a.drafted_depth_per_step), settings


@pytest.mark.parametrize("drafter", ["medusa", "sequential", "autoregressive"])
def test_sampled_decodes_captured_equal_uncaptured_and_eager_fp32(drafter):
    """Speculative sampling (and sampled typical acceptance) inside the captured step: the draws are
    device tensors filled before each replay, so captured, uncaptured and eager decodes of one seed
    give the same tokens, and a captured step still reads the host once."""
    import test_autoregressive_drafter
    import test_sequential_heads
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = {
        "medusa": lambda: with_heads("llama", 2, num_heads=4, noise=0.3),
        "sequential": lambda: test_sequential_heads._model(2, 0.25),
        "autoregressive": lambda: test_autoregressive_drafter._model(2, 0.15),
    }[drafter]().to("cuda")
    captured, plain = StaticEngine(model, capture=True, quiet=True), StaticEngine(
        model, capture=False
    )
    for settings in (
        DecodeSettings(temperature=0.8, seed=1),
        DecodeSettings("tree", 4, temperature=0.7, seed=2),
        DecodeSettings("tree", 3, temperature=1.0, top_p=0.9, adaptive=True, seed=3),
        DecodeSettings("multi-head", 3, 3, temperature=0.7, top_k=20, seed=4),
        DecodeSettings("tree", 4, acceptance="typical", temperature=0.7, seed=5),
    ):
        for prompt in ([5, 17, 33, 48, 60], [9] * 40):
            ref = generate(model, make_strategy(settings), prompt, 40, {2})
            a = plain.generate(make_strategy(settings), prompt, 40, {2})
            b = captured.generate(make_strategy(settings), prompt, 40, {2})
            assert b.tokens == a.tokens == ref.tokens, settings
            assert b.accepted_per_step == a.accepted_per_step == ref.accepted_per_step
    assert captured.fell_back == []


@pytest.mark.parametrize("drafter", ["medusa", "autoregressive"])
def test_batched_captured_rows_equal_one_row_captured_fp32(drafter):
    """The batched step under capture (B rows, per-row masks and acceptance, refill): every row's
    tokens and per-step counts equal its one-row captured decode, greedy and sampled."""
    import test_autoregressive_drafter
    from test_decoding_multi_head import prompts, with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = {
        "medusa": lambda: with_heads("llama", 2, num_heads=4, noise=0.3),
        "autoregressive": lambda: test_autoregressive_drafter._model(2, 0.15),
    }[drafter]().to("cuda")
    engine = StaticEngine(model, capture=True, quiet=True)
    rows = prompts(3, n=6) + [[9] * 40, [5, 6]]
    for settings in (
        DecodeSettings("single-head"),
        DecodeSettings("tree", 4),
        DecodeSettings("multi-head", 3, 3),
        DecodeSettings("tree", 4, temperature=0.7, seed=2),
    ):
        ref = [engine.generate(make_strategy(settings), ids, 40, {2}) for ids in rows]
        for batch_size in (3, 16):
            done = engine.generate_batch(make_strategy(settings), rows, 40, {2}, batch_size)
            for f in done:
                assert f.result.tokens == ref[f.index].tokens, (settings, batch_size, f.index)
                assert f.result.accepted_per_step == ref[f.index].accepted_per_step
    assert engine.fell_back == []


def test_graphs_engine_token_input_heads_and_capture_once():
    from test_replay import _medusa

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = _medusa(3, 0.1, token_input=True).to("cuda")
    engine = StaticEngine(model, capture=True, quiet=True)
    strategy = make_strategy(DecodeSettings("tree", 4))
    engine.prepare(strategy, 20, 40)
    setup = engine.setup_seconds
    for prompt in ([5, 17, 33, 48, 60], [7] * 12):
        ref = generate(model, make_strategy("single-head"), prompt, 40, {2}).tokens
        assert engine.generate(strategy, prompt, 40, {2}).tokens == ref
    assert engine.setup_seconds == setup > 0  # captured once, in prepare


def test_graphs_engine_captures_the_prefill_per_bucket():
    """prepare() captures every prefill bucket up to the longest prompt; prompts of changing lengths
    (old padding left behind) then decode exactly the eager tokens without another capture."""
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = with_heads("llama", 3, num_heads=4, noise=0.3).to("cuda")
    engine = StaticEngine(model, capture=True, quiet=True)
    g = torch.Generator().manual_seed(3)
    lengths = (150, 3, 150, 40, 97, 1)
    for settings in (
        DecodeSettings("single-head"),
        DecodeSettings("tree", 4),
        DecodeSettings("multi-head", 2, 3),
    ):
        strategy = make_strategy(settings)
        engine.prepare(strategy, max(lengths), 30)
        setup = engine.setup_seconds
        prefill = engine.prefill_for(engine._plan(strategy).decoders[0][0])
        assert sorted(prefill.graphs) == [32, 64, 96, 128, 160]
        for n in lengths:
            prompt = torch.randint(3, 400, (n,), generator=g).tolist()
            ref = generate(model, make_strategy("single-head"), prompt, 30, set()).tokens
            assert engine.generate(strategy, prompt, 30, set()).tokens == ref, (settings, n)
        assert engine.setup_seconds == setup


def test_graphs_engine_bf16_runs_and_respects_length():
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import make_engine

    model = with_heads("llama", 0, num_heads=3, noise=0.3).to("cuda", torch.bfloat16)
    engine = make_engine(model, "auto")
    assert engine.name == "graphs"
    for settings in ("single-head", DecodeSettings("tree", 3), DecodeSettings("multi-head", 2, 2)):
        assert len(engine.generate(make_strategy(settings), [5, 6, 7], 16, set()).tokens) == 16


def test_compiled_engine_gives_the_eager_tokens_fp32():
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import make_engine

    model = with_heads("llama", 1, num_heads=4, noise=0.3).to("cuda")
    engine = make_engine(model, "compiled")
    assert engine.name == "compiled"
    for settings in (
        "single-head",
        DecodeSettings("tree", 3),
        DecodeSettings("multi-head", 2, 2, "typical"),
    ):
        strategy = make_strategy(settings)
        for prompt in ([5, 17, 33, 48, 60], [9] * 40):
            ref = generate(model, make_strategy(settings), prompt, 30, {7})
            assert engine.generate(strategy, prompt, 30, {7}).tokens == ref.tokens, settings


def test_capture_warm_up_stays_inside_a_small_cache():
    """Deep drafts, a one-token prompt and one new token: the smallest cache; the warm-up before
    capture must not write past it (rescore accepts whole candidates, the deepest paths)."""
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = with_heads("llama", 3, num_heads=8, noise=0.3).to("cuda")
    engine = StaticEngine(model, capture=True, quiet=True)
    strategy = make_strategy(DecodeSettings("multi-head", 8, 11, "rescore"))
    engine.prepare(strategy, 1, 1)
    assert len(engine.generate(strategy, [5], 1, set()).tokens) == 1
    torch.cuda.synchronize()


@pytest.mark.parametrize("drafter", ["sequential", "autoregressive", "context"])
def test_graphs_engine_path_dependent_drafters_fp32(drafter):
    """Sequential heads and the (context) autoregressive drafter, drafted depth by depth inside the
    captured step (the context drafter's cache written in place there, and by the captured prefill):
    exactly the eager tokens and statistics."""
    import test_autoregressive_drafter
    import test_context_drafter
    import test_sequential_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    make = {
        "sequential": test_sequential_heads._model,
        "autoregressive": test_autoregressive_drafter._model,
        "context": test_context_drafter._model,
    }[drafter]
    model = make(2, 0.25 if drafter == "sequential" else 0.15).to("cuda")
    captured, plain = StaticEngine(model, capture=True, quiet=True), StaticEngine(
        model, capture=False
    )
    for settings in (DecodeSettings("tree", 4), DecodeSettings("multi-head", 3, 3),
                     DecodeSettings("tree", 3, adaptive=True)):
        for prompt in ([5, 17, 33, 48, 60], [9] * 40):
            ref = generate(model, make_strategy("single-head"), prompt, 40, {2}).tokens
            a = plain.generate(make_strategy(settings), prompt, 40, {2})
            b = captured.generate(make_strategy(settings), prompt, 40, {2})
            assert b.tokens == a.tokens == ref, settings
            assert (b.accepted_per_step, b.drafted_depth_per_step) == (
                a.accepted_per_step,
                a.drafted_depth_per_step,
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_attention_on_cuda_equals_sdpa(dtype):
    """The captured steps' attention against transformers' sdpa on the device, at the shapes the
    engine uses."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from medusa.decoding.attention import grouped_attention

    class Module(torch.nn.Module):
        num_key_value_groups, is_causal = 3, False

    for queries in (1, 31, 127):
        q = torch.randn(1, 9, queries, 64, device="cuda", dtype=dtype)
        k, v = (torch.randn(1, 3, 384, 64, device="cuda", dtype=dtype) for _ in range(2))
        allowed = torch.rand(1, 1, queries, 384, device="cuda") < 0.5
        allowed[..., 0] = True
        mask = torch.zeros(allowed.shape, device="cuda", dtype=dtype).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )
        ours, _ = grouped_attention(Module(), q, k, v, mask, scaling=0.125)
        theirs, _ = sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.125)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(ours.float(), theirs.float(), atol=tol, rtol=tol)


def test_graphs_engine_with_either_attention_gives_the_eager_tokens_fp32():
    from test_decoding_multi_head import with_heads

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = with_heads("llama", 4, num_heads=4, noise=0.3).to("cuda")
    engines = [
        StaticEngine(model, capture=True, quiet=True, attention=a) for a in ("grouped", "model")
    ]
    for prompt in ([5, 17, 33, 48, 60], [9] * 70):
        ref = generate(model, make_strategy("single-head"), prompt, 40, {2})
        for settings in (
            "single-head",
            DecodeSettings("tree", 4),
            DecodeSettings("multi-head", 3, 3),
        ):
            for engine in engines:
                got = engine.generate(make_strategy(settings), prompt, 40, {2})
                assert got.tokens == ref.tokens, (settings, engine.attention)


def test_replayed_decodes_leave_the_attention_switch_alone(monkeypatch):
    """Captured steps and prefills hold the grouped attention from their capture: a decode that only
    replays them neither switches the model's implementation nor runs the Python attention."""
    from test_decoding_multi_head import with_heads

    import medusa.decoding.attention as attention
    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    model = with_heads("llama", 5, num_heads=4, noise=0.3).to("cuda")
    engine = StaticEngine(model, capture=True, quiet=True)
    strategy = make_strategy(DecodeSettings("tree", 4))
    engine.prepare(strategy, 20, 30)
    calls = {"attention": 0, "switch": 0}
    real, real_switch = attention.grouped_attention, type(model.base_model).set_attn_implementation

    def counting(*args, **kwargs):
        calls["attention"] += 1
        return real(*args, **kwargs)

    def switching(self, *args, **kwargs):
        calls["switch"] += 1
        return real_switch(self, *args, **kwargs)

    monkeypatch.setitem(attention.AttentionInterface._global_mapping, attention.NAME, counting)
    monkeypatch.setattr(type(model.base_model), "set_attn_implementation", switching)
    ref = generate(model, make_strategy("single-head"), [5, 17, 33, 48, 60], 30, {2}).tokens
    assert engine.generate(strategy, [5, 17, 33, 48, 60], 30, {2}).tokens == ref
    assert calls == {"attention": 0, "switch": 0}


@pytest.mark.parametrize("drafter", ["medusa", "autoregressive"])
def test_graphs_engine_course_reference_equals_the_course_solution_fp32(drafter):
    """The course reference inside the captured step (rescore, whole candidates cut at the limit,
    heads along the drafter's greedy path): the tokens of the course solution of tests/submissions,
    and of the eager loop."""
    import sys
    from pathlib import Path

    import test_autoregressive_drafter

    from medusa.decoding import DecodeSettings
    from medusa.decoding.engine import StaticEngine

    sys.path.insert(0, str(Path(__file__).parent / "submissions"))
    from course_step3 import CachedMedusaTextGenerator

    if drafter == "medusa":  # noisy heads: identity heads make every candidate tie with another
        from test_decoding_multi_head import with_heads

        model = with_heads("llama", 1, num_heads=4, noise=0.05).to("cuda")
    else:
        model = test_autoregressive_drafter._model(2, 0.15).to("cuda")
    captured = StaticEngine(model, capture=True, quiet=True)
    for width, heads in ((2, 2), (5, 3)):
        strategy = make_strategy(
            DecodeSettings("multi-head", heads, width, "rescore", course_reference=True)
        )
        for prompt, mol in (([5, 17, 33, 48, 60], 30), ([9] * 40, 50)):
            solution = CachedMedusaTextGenerator(model, "multi-head", 2, heads, width, mol)
            with torch.no_grad():
                expected = solution(torch.tensor([prompt], device="cuda")).tolist()
            expected = expected[
                : next((i for i, t in enumerate(expected) if t == 2), len(expected))
            ]
            assert generate(model, strategy, prompt, mol, {2}).tokens == expected
            assert captured.generate(strategy, prompt, mol, {2}).tokens == expected, (
                drafter,
                width,
                heads,
            )


@pytest.mark.parametrize("sandbox", [False, True])
def test_grading_on_cuda_runs_the_submission_in_its_own_process(
    student_heads_dir, tmp_path, capsys, sandbox
):
    """The submission's process loads its own copy on the GPU (in the sandbox too, where user
    namespaces are allowed); ours decodes under the graphs engine."""
    if sandbox:
        from test_grading_isolation import sandbox_works

        if not sandbox_works():
            pytest.skip("this machine refuses user namespaces")
    import json
    from pathlib import Path

    from medusa.cli import main

    solution = Path(__file__).parent / "submissions" / "course_step3.py"
    out_dir = tmp_path / "g"
    code = main(
        [
            "-m",
            str(student_heads_dir),
            "-n",
            "3",
            "-mol",
            "30",
            "--prompt-style",
            "seed",
            "-o",
            str(out_dir),
            "--generator",
            f"{solution}:CachedMedusaTextGenerator",
            "-ds",
            "multi-head",
            "-w",
            "2",
            "-nmh",
            "3",
            "--device",
            "cuda",
            "--engine",
            "graphs",
            "--timeout",
            "120",
            *(["--sandbox"] if sandbox else []),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((out_dir / "grading.json").read_text())
    assert rep["reference"]["agreement"]["identical"] == 3, rep["reference"]
    assert json.loads((out_dir / "summary.json").read_text())["engine"]["name"] == "graphs"
    assert rep["sandbox"] == sandbox
    # the submission's own load, on the GPU
    assert "on cuda" in (out_dir / "submission.log").read_text()
