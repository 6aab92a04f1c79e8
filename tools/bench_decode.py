"""Decoding speed of every method on the same prompts in one process: transformers ``generate``
(dynamic and static cache) against our strategies under the eager, graphs and compiled engines;
prints a table and writes a JSON record.

    python tools/bench_decode.py                                        # embedded default, 20
    IN22-Gen rows python tools/bench_decode.py --model shape:llama-2-7b --step-costs  # random
    weights, step costs python tools/bench_decode.py --model shape:llama-3.2-1b --project-tau 3.116
    --out bench.json

Method: one untimed warm-up per method (``generate`` static decodes every prompt once, since it
compiles per shape; our graphs engine captures its steps before timing), then ``--rounds``
interleaved rounds (the method order rotates each round), each method decoding every prompt, each
decode CUDA-synchronised and timed on its own. Reported per method: medians over rounds of tokens/s
and ms per decoding step (prefill included), τ (tokens per step), the speedup over ``generate``
dynamic, ``generate`` static and our single-head graphs, and how many outputs equal our single-head
eager output. Single-head rows also give ms per step ÷ the weight-read floor (weight bytes ÷ the
bandwidth of a 2 GiB device copy measured in the same run); ``--step-costs`` times the captured
steps alone (replays, CUDA events). Random-weight models have identity heads (τ ≈ 1): their tokens/s
for Medusa is projected as ``--project-tau`` ÷ step time and labelled a projection. Results: printed
table + ``--out`` JSON (with the command, GPU, torch and transformers versions, commit and date).
``tools/gpu/bench.sh`` runs the standard tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from medusa.decoding import DecodeSettings, make_strategy  # noqa: E402
from medusa.decoding.attention import use_attention  # noqa: E402
from medusa.decoding.engine import EagerEngine, StaticEngine, capture_run  # noqa: E402
from medusa.runner import Timer  # noqa: E402

SHAPES = {  # (hidden, intermediate, layers, heads, kv heads, vocab, tied)
    "llama-2-7b": (4096, 11008, 32, 32, 32, 32000, False),
    "llama-3.2-1b": (2048, 8192, 16, 32, 8, 128256, True),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, True),
    # checks this tool on a CPU (graphs then run uncaptured)
    "tiny": (64, 128, 2, 4, 2, 512, False),
}
# engine → torch.compile inductor options (gpt-fast decodes with coordinate-descent tuning on)
COMPILE_OPTIONS = {
    "compiled-tuned": {"coordinate_descent_tuning": True},
    "compiled-max": {"coordinate_descent_tuning": True, "max_autotune": True},
}
OURS = {  # method → decode settings (None: single-head)
    "single-head": DecodeSettings("single-head"),
    # embedded: its shipped 127-node tree; random shapes: the built-in 63 nodes
    "tree": DecodeSettings("tree", 4),
    "mh-w2s2": DecodeSettings("multi-head", 2, 2),
    "mh-w5s5": DecodeSettings("multi-head", 5, 5),
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, gib: float = 2.0) -> float:
    """Bytes/s of a device-to-device copy, counting bytes read plus written (median of 10)."""
    n = int((gib if device.type == "cuda" else 0.25) * 2**30) // 4
    a = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    times = []
    for _ in range(12):
        with Timer(device) as t:
            b.copy_(a)
        times.append(t.seconds)
    del a, b
    return 2 * n * 4 / statistics.median(times[2:])


def weight_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in module.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def load(args):
    """(model, prompts, stop ids, label): the embedded default from its files, or random weights of
    a shape."""
    if args.model == "embedded" or not args.model.startswith("shape:"):
        from medusa.cli import quiet_libraries
        from medusa.evaluation.data import load_examples
        from medusa.model.loader import LoadSettings, load_model
        from medusa.model import stop_token_ids
        from medusa.evaluation.prompts import encode_prompt

        quiet_libraries(False)
        model = load_model(LoadSettings(args.model, dtype=args.dtype, small_fp32=True))
        examples, _ = load_examples(args.dataset, "hin_Deva", "eng_Latn", args.n)
        prompts = [
            encode_prompt(model.tokenizer, ex.source, "hin_Deva", "eng_Latn", "chat", 1000)
            for ex in examples
        ]
        stops = stop_token_ids(model.tokenizer, model.base_model)
        return model, prompts, stops, f"{model.info.base} + heads {model.info.heads}"
    from transformers import LlamaConfig, LlamaForCausalLM

    from medusa.model.heads import HeadConfig, MedusaHeads
    from medusa.model import MedusaModel

    name = args.model.split(":", 1)[1]
    if name not in SHAPES:
        sys.exit(f"error: unknown shape {name}; use one of {', '.join(SHAPES)}")
    h, inter, layers, heads, kv, vocab, tied = SHAPES[name]
    config = LlamaConfig(
        hidden_size=h,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    dtype = {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "float32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        base = LlamaForCausalLM(config).to(dtype).eval()
    lm = base.get_output_embeddings()
    medusa_heads = MedusaHeads(HeadConfig(5, 1, h, vocab, shared_lm_head=True), lm).to(
        device, dtype
    )
    model = MedusaModel(base, tokenizer=None, heads=medusa_heads)
    model.info.extra.update(dtype=str(dtype).replace("torch.", ""), device=device)
    g = torch.Generator().manual_seed(1)
    prompts = [
        torch.randint(3, vocab, (args.prompt_len,), generator=g).tolist() for _ in range(args.n)
    ]
    return model, prompts, set(), f"random {name} shape, identity heads"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        "-m",
        default="embedded",
        help="embedded, a model path, or shape:" + "|".join(SHAPES),
    )
    p.add_argument(
        "--dataset", "-d", default="in22-gen-sample", help="rows for the embedded or a real model"
    )
    p.add_argument("-n", type=int, default=None, help="prompts (20 for a dataset, 2 for a shape)")
    p.add_argument(
        "--max-new-tokens", "-mol", type=int, default=None, help="128 for a dataset, 64 for a shape"
    )
    p.add_argument("--prompt-len", type=int, default=160, help="shape models: prompt tokens")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    p.add_argument(
        "--rounds", type=int, default=3, help="timed rounds (the method order rotates each round)"
    )
    p.add_argument("--methods", default=None,
                   help="default hf-dynamic,hf-static,single-head,tree,mh-w2s2,mh-w5s5 (with"
                   " --batch-sizes: hf-static,single-head,tree); also tree-N: the tree cut to N"
                   " nodes (e.g. tree-31)")
    p.add_argument("--batch-sizes", default=None,
                   help="comma list, e.g. 1,4,16,64: batched decoding instead"
                   " (tools/bench_batch.py: throughput, per-row latency, τ per batch size, against"
                   " generate static on the"
                   " same batches)")
    p.add_argument(
        "--engines",
        default="eager,graphs",
        help=(
            "ours: any of eager, graphs, compiled, graphs-eager-prefill, graphs-sdpa /"
            " compiled-sdpa (the base's own attention in the fast engine instead of the grouped"
            " one: the A/B of medusa/decoding/attention.py), compiled-tuned (inductor's"
            " coordinate-descent tuning of its kernels) and compiled-max (also autotuned matrix"
            " products: slow to build)"
        ),
    )
    p.add_argument(
        "--step-costs", action="store_true", help="also time the captured steps alone (replays)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help=(
            "with --step-costs: kernels per captured step and their "
            "busy time (torch.profiler), so wall minus busy is the gap between kernels"
        ),
    )
    p.add_argument(
        "--project-tau", type=float, default=None, help="project Medusa tokens/s from this τ"
    )
    p.add_argument(
        "--tree",
        default=None,
        help=(
            "tree file for tree and tree-N (default: the model's own, as shipped beside its heads)"
        ),
    )
    p.add_argument(
        "--attn", default=None, help="attention implementation of the base: sdpa (default) or eager"
    )
    p.add_argument(
        "--blas",
        default=None,
        choices=["cublas", "cublaslt"],
        help=(
            "torch's preferred BLAS library for the whole run (an A/B for the skinny fp32 GEMMs of"
            " a draft tree's verify; default: torch's choice)"
        ),
    )
    p.add_argument("--out", default=None, help="JSON results file")
    args = p.parse_args(argv)
    shape = args.model.startswith("shape:")
    if args.methods is None:
        args.methods = ("hf-static,single-head,tree" if args.batch_sizes else
                        "hf-dynamic,hf-static,single-head,tree,mh-w2s2,mh-w5s5")
    elif args.batch_sizes and "hf-dynamic" in args.methods.split(","):
        p.error("--batch-sizes compares against generate with a static cache: drop hf-dynamic")
    args.n = args.n or (2 if shape else 20)
    args.max_new_tokens = args.max_new_tokens or (64 if shape else 128)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.batch_sizes:
        import bench_batch

        return bench_batch.main_batched(args)
    cuda = torch.cuda.is_available()
    if not cuda:
        print(
            "no CUDA: 'graphs' runs the same static-cache step uncaptured (a check of this tool,"
            " not a timing)"
        )
    if args.blas and cuda:
        torch.backends.cuda.preferred_blas_library(args.blas)
    t0 = time.perf_counter()
    model, prompts, stops, label = load(args)
    # transformers' public switch: sdpa (default) or eager (matmul + softmax + matmul)
    if args.attn:
        model.base_model.set_attn_implementation(args.attn)
        label += f", attention {args.attn}"
    if args.blas:
        label += f", BLAS {args.blas}"
    print(
        f"model: {label}; {model.info.extra.get('dtype')}; {len(prompts)} prompts"
        f" ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), ≤ {args.max_new_tokens} new"
        f" tokens; loaded in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    bandwidth = copy_bandwidth(model.device)
    base_bytes = weight_bytes(model.base_model)
    floor_ms = base_bytes / bandwidth * 1e3
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; base weights {base_bytes / 1e9:.2f} GB; "
          f"weight-read floor {floor_ms:.3f} ms/step", flush=True)
    methods = make_methods(args, model, make_engines(model, args.engines, cuda))
    decoder = Decoder(model, stops, args.max_new_tokens)
    setup = warm_up(methods, decoder, prompts)
    results, outputs = timed_rounds(methods, decoder, prompts, args.rounds)
    summary = summarise(results, outputs, setup, floor_ms, args.project_tau)
    step_costs, drafts = {}, {}
    if args.step_costs and cuda:
        step_costs, drafts = time_steps(methods, prompts[0], args.max_new_tokens, floor_ms)
    profiles = (
        profile_steps(methods, prompts[0], args.max_new_tokens, drafts)
        if args.profile and cuda
        else {}
    )
    print_table(summary, floor_ms, len(prompts))
    print_step_costs(step_costs, profiles, floor_ms)
    record = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "model": label,
        "dtype": model.info.extra.get("dtype"),
        "prompts": len(prompts),
        "prompt_tokens": [len(x) for x in prompts],
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "copy_bandwidth_bytes_per_s": bandwidth,
        "base_weight_bytes": base_bytes,
        "weight_read_floor_ms": floor_ms,
        "methods": summary,
        "captured_step_ms": step_costs,
        "captured_step_profile": profiles,
        **provenance(),
    }
    write_record(record, args.out)


def provenance() -> dict:
    """Where a record was measured: GPU, library versions, commit and date."""
    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_record(record: dict, out: str | None) -> None:
    """The JSON record at ``out`` (when given)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=2) + "\n")
        print(f"results: {out}")


def make_engines(model, names: str, cuda: bool) -> dict[str, object]:
    """Our engines by name (``--engines``); without CUDA the captured ones run their step
    uncaptured."""
    engines = {}
    for name in names.split(","):
        if name == "eager":
            engines[name] = EagerEngine(model)
        # graphs+compile: compiled's older name
        elif name in ("graphs", "compiled", "graphs+compile"):
            engines[name] = StaticEngine(model, capture=cuda, compile=name != "graphs")
        # A/B: captured steps, the prompt run eagerly at its own length
        elif name == "graphs-eager-prefill":
            engines[name] = StaticEngine(model, capture=cuda, capture_prefill=False)
        # A/B: the base's own attention inside the captured steps
        elif name in ("graphs-sdpa", "compiled-sdpa"):
            engines[name] = StaticEngine(
                model, capture=cuda, compile=name.startswith("compiled"), attention="model"
            )
        # A/B of inductor's tuning: the batch-1 products are most of a 7B step
        elif name in COMPILE_OPTIONS:
            engines[name] = StaticEngine(
                model, capture=cuda, compile=True, compile_options=COMPILE_OPTIONS[name]
            )
        else:
            sys.exit(f"error: unknown engine {name}")
    return engines


def make_methods(args: argparse.Namespace, model, engines: dict) -> dict[str, object]:
    """``generate``'s methods by name, and ours as (strategy, engine) under ``method/engine``."""
    shape = args.model.startswith("shape:")
    tree_file = args.tree or (model.info.extra.get("tree") if not shape else None)
    methods: dict[str, object] = {}
    for m in args.methods.split(","):
        if m in ("hf-dynamic", "hf-static"):
            methods[m] = m
            continue
        # tree-N: the tree cut to N nodes (the embedded one by its calibration)
        if m.startswith("tree-"):
            settings = DecodeSettings(
                "tree", 4, tree_file=tree_file, tree_size=int(m.split("-", 1)[1])
            )
        elif m not in OURS:
            sys.exit(
                f"error: unknown method {m}; use hf-dynamic, hf-static, {', '.join(OURS)} or tree-N"
            )
        else:
            settings = OURS[m]
        if m == "tree" and tree_file:
            settings = DecodeSettings("tree", tree_file=tree_file)
        for e in engines:
            methods[f"{m}/{e}"] = (make_strategy(settings), engines[e])
    return methods


class Decoder:
    """One prompt through one method: ``generate`` (dynamic or static cache) or one of our
    (strategy, engine)."""

    def __init__(self, model, stops: set[int], max_new_tokens: int) -> None:
        self.model, self.stops, self.max_new_tokens = model, stops, max_new_tokens
        self.gen_kwargs = dict(do_sample=False, pad_token_id=min(stops) if stops else 0,
                               eos_token_id=sorted(stops) if stops else None)
        if not stops:
            self.gen_kwargs["min_new_tokens"] = max_new_tokens

    def __call__(self, method, ids: list[int]) -> tuple[list[int], int]:
        """(generated ids without the stop token, decoding steps)"""
        if isinstance(method, str):
            extra = {"cache_implementation": "static"} if method == "hf-static" else {}
            out = self.model.base_model.generate(
                torch.tensor([ids], device=self.model.device),
                max_new_tokens=self.max_new_tokens,
                **self.gen_kwargs,
                **extra,
            )
            toks = out[0, len(ids):].tolist()
            while toks and toks[-1] in self.stops:
                toks.pop()
            return toks, max(len(toks), 1)
        strategy, engine = method
        result = engine.generate(strategy, ids, self.max_new_tokens, self.stops)
        return result.tokens, max(result.steps, 1)


def warm_up(methods: dict, decode: Decoder, prompts: list[list[int]]) -> dict[str, float]:
    """Untimed: engines capture their steps, ``generate`` static decodes every prompt (it compiles
    per shape)."""
    setup = {}
    for name, method in methods.items():
        start = time.perf_counter()
        if not isinstance(method, str):
            method[1].prepare(method[0], max(map(len, prompts)), decode.max_new_tokens)
        for ids in prompts if name == "hf-static" else prompts[:1]:
            decode(method, ids)
        sync()
        setup[name] = time.perf_counter() - start
        print(f"warm-up {name}: {setup[name]:.1f} s", flush=True)
    return setup


def timed_rounds(methods: dict, decode: Decoder, prompts: list[list[int]], rounds: int
                 ) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[list[int]]]]:
    """Interleaved rounds (the order rotates): per method and round tokens/s, ms per step, τ; the
    last outputs."""
    results = {name: {"tokens_per_s": [], "ms_per_step": [], "tau": []} for name in methods}
    outputs: dict[str, list[list[int]]] = {}
    names = list(methods)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            tokens = steps = 0
            seconds = 0.0
            outputs[name] = []
            for ids in prompts:
                with Timer(decode.model.device) as t:
                    toks, n_steps = decode(methods[name], ids)
                seconds += t.seconds
                tokens += len(toks)
                steps += n_steps
                outputs[name].append(toks)
            results[name]["tokens_per_s"].append(tokens / seconds)
            results[name]["ms_per_step"].append(seconds / steps * 1e3)
            results[name]["tau"].append(tokens / steps)
        print(f"round {r + 1}/{rounds} done", flush=True)
    return results, outputs


def summarise(
    results: dict, outputs: dict, setup: dict, floor_ms: float, project_tau: float | None
) -> dict:
    """Medians over rounds, identity with our single-head eager output, and the speedups over each
    baseline."""
    reference = outputs.get("single-head/eager")
    summary = {}
    for name, res in results.items():
        row = {k: statistics.median(v) for k, v in res.items()}
        row["tokens_per_s_rounds"] = res["tokens_per_s"]
        if reference is not None:
            row["identical_to_single_head_eager"] = sum(
                a == b for a, b in zip(outputs[name], reference)
            )
        if name.startswith("single-head"):
            row["step_over_floor"] = row["ms_per_step"] / floor_ms
        row["setup_seconds"] = setup[name]
        summary[name] = row
    for name, row in summary.items():
        for base in ("hf-dynamic", "hf-static", "single-head/graphs"):
            if base in summary and base != name:
                row[f"speedup_vs_{base}"] = row["tokens_per_s"] / summary[base]["tokens_per_s"]
        # and against single-head on the same engine
        engine = name.split("/", 1)[1] if "/" in name else None
        same = f"single-head/{engine}"
        if engine and engine != "graphs" and same in summary and same != name:
            row["speedup_vs_single-head_same_engine"] = (
                row["tokens_per_s"] / summary[same]["tokens_per_s"]
            )
        if project_tau and not name.startswith(("hf-", "single-head")):
            row["projected_tokens_per_s"] = project_tau / row["ms_per_step"] * 1e3
    return summary


def print_step_costs(step_costs: dict[str, float], profiles: dict, floor_ms: float) -> None:
    if not step_costs:
        return
    print("\ncaptured step alone (median of 50 replays, CUDA events):")
    for name, ms in step_costs.items():
        extra = ""
        if name in profiles:
            pr = profiles[name]
            extra = (
                f"; {pr['kernels_per_step']:.0f} kernels, busy {pr['kernel_ms_per_step']:.3f} ms, "
                f"gaps {ms - pr['kernel_ms_per_step']:.3f} ms"
            )
        if name.endswith(" draft"):
            whole = step_costs[name[: -len(" draft")]]
            print(f"  {name:28s} {ms:8.3f} ms  ({ms / whole:.0%} of the step{extra})")
            continue
        print(f"  {name:28s} {ms:8.3f} ms  ({ms / floor_ms:.2f}x floor{extra})")


def _replay_ms(replay, reset=lambda: None, times: int = 60) -> float:
    """Median CUDA-event time of ``replay`` over the last ``times - 10`` of ``times`` runs."""
    out = []
    for _ in range(times):
        reset()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        replay()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return statistics.median(out[10:])


def time_steps(methods: dict, prompt: list[int], max_new: int, floor_ms: float
               ) -> tuple[dict[str, float], dict[str, Callable[[], None]]]:
    """Replay each captured step on its own (the committed length reset before each replay, so the
    cache never fills): the per-step device cost without prefill or host reads. Drafting methods
    also get ``NAME draft``: the step's drafting alone (heads or drafter and the tree's top-k),
    captured and replayed the same way; those graphs are returned too, so that ``--profile`` can
    list the drafting's kernels."""
    costs, drafts = {}, {}
    for name, method in methods.items():
        if (
            isinstance(method, str)
            or not isinstance(method[1], StaticEngine)
            or not method[1].capture
        ):
            continue
        strategy, engine = method
        prepared = engine._plan(strategy)
        decoder, replay = engine._decoder(strategy, prepared, len(prompt) + max_new)
        with torch.inference_mode():
            decoder.prefill(prompt)
            costs[name] = _replay_ms(replay, lambda: decoder.committed.fill_(len(prompt)))
            # compiled engines: the drafting compiled as well, as inside their step
            if decoder.plan.num_heads:
                run = engine.compiled(decoder.draft)
                with use_attention(engine.model, engine.attention):
                    draft = capture_run(run, decoder.committed.device)
                costs[f"{name} draft"] = _replay_ms(draft)
                drafts[f"{name} draft"] = draft
    return costs, drafts


def profile_steps(methods: dict, prompt: list[int], max_new: int, drafts: dict | None = None,
                  replays: int = 10) -> dict[str, dict]:
    """Kernels per captured step and the summed kernel time (CUDA activity of ``replays`` replays);
    the same for each captured drafting in ``drafts`` (from :func:`time_steps`)."""
    out = {}
    for name, method in methods.items():
        if (
            isinstance(method, str)
            or not isinstance(method[1], StaticEngine)
            or not method[1].capture
        ):
            continue
        strategy, engine = method
        decoder, replay = engine._decoder(strategy, engine._plan(strategy), len(prompt) + max_new)
        with torch.inference_mode():
            decoder.prefill(prompt)
            out[name] = profile_replay(
                replay, lambda: decoder.committed.fill_(len(prompt)), replays
            )
    # reads the state its method's profile left: any state drafts
    for name, replay in (drafts or {}).items():
        with torch.inference_mode():
            out[name] = profile_replay(replay, lambda: None, replays)
    return out


def profile_replay(
    replay: Callable[[], None], reset: Callable[[], None], replays: int, top: int = 12
) -> dict:
    """The CUDA kernels of ``replays`` replays: how many per replay, their summed time, the ``top``
    costliest."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            reset()
            replay()
        sync()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy_us = sum(e.time_range.elapsed_us() for e in kernels)
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    costliest = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    return {
        "kernels_per_step": len(kernels) / replays,
        "kernel_ms_per_step": busy_us / replays / 1e3,
        "top_kernels": [
            {"kernel": k[:120], "per_step": len(t) / replays, "ms_per_step": sum(t) / replays / 1e3}
            for k, t in costliest
        ],
    }


def print_table(summary: dict, floor_ms: float, n: int) -> None:
    print(
        "\n| method | tokens/s | ms/step | τ | vs generate dynamic | vs generate static | vs our"
        " single-head graphs | vs our single-head, same engine | identical to single-head eager"
        f" (of {n}) | step ÷ floor |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in summary.items():
        cells = [
            name,
            f"{r['tokens_per_s']:.1f}"
            + (
                f" (projected {r['projected_tokens_per_s']:.0f})"
                if "projected_tokens_per_s" in r
                else ""
            ),
            f"{r['ms_per_step']:.3f}",
            f"{r['tau']:.3f}",
        ]
        cells += [f"{r[k]:.2f}x" if k in r else "" for k in
                  ("speedup_vs_hf-dynamic", "speedup_vs_hf-static", "speedup_vs_single-head/graphs",
                   "speedup_vs_single-head_same_engine")]
        cells += [str(r.get("identical_to_single_head_eager", "")),
                  f"{r['step_over_floor']:.2f}" if "step_over_floor" in r else ""]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def _git_commit() -> str | None:
    """``GIT_COMMIT`` when set (for a copy of the tree whose .git is missing or not its own), else
    HEAD."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


if __name__ == "__main__":
    main()
