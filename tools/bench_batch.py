"""Batched decoding speed in one process: transformers ``generate`` with a static cache on B
left-padded prompts at a time, against our single-head and tree steps on B rows with continuous
refill (``StaticEngine.generate_batch``), at each batch size. Run through
``tools/bench_decode.py --batch-sizes 1,4,16,64`` (the same model and prompt options).

Method: the same prompts for every method and batch size; one untimed warm-up per (method, batch
size) (``generate`` static decodes every batch once, since it compiles per shape; our batched steps
are captured before it), then ``--rounds`` interleaved rounds (the order rotates), each decoding
every prompt, CUDA-synchronised. Reported per (batch size, method): medians over rounds of
throughput (generated tokens ÷ wall time of the whole set), per-row latency percentiles (admission
to finish for ours; for ``generate`` every row of a batch waits for the batch), τ (tokens per step
and row; 1 for ``generate``), the speedups over ``generate`` static and over our single-head at the
same batch size, and how many outputs equal our single-head decoded one row at a time. Random
shapes have identity heads (τ ≈ 1): with ``--project-tau`` a Medusa row's tokens/s is also projected
to that τ at the measured cost per step, and labelled a projection.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import bench_decode
from bench_decode import make_methods, provenance, sync, write_record
from medusa.decoding.engine import StaticEngine


def hf_batch(model, prompts: list[list[int]], max_new: int, stops: set[int]) -> list[list[int]]:
    """``generate`` with a static cache on left-padded prompts; each row's ids up to its first
    stop."""
    pad = min(stops) if stops else 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                        device=model.device)
    extra = dict(eos_token_id=sorted(stops)) if stops else dict(min_new_tokens=max_new)
    out = model.base_model.generate(ids, attention_mask=mask, max_new_tokens=max_new,
                                    do_sample=False, cache_implementation="static",
                                    pad_token_id=pad, **extra)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stops), len(row))
        rows.append(row[:cut])
    return rows


def decode_all(model, method, prompts: list[list[int]], max_new: int, stops: set[int],
               batch: int) -> dict:
    """Every prompt through ``method`` at batch size ``batch``: outputs in prompt order, per-row
    latencies, steps and the wall time of the whole set."""
    outputs: list[list[int] | None] = [None] * len(prompts)
    latency, steps = [0.0] * len(prompts), 0
    sync()
    start = time.perf_counter()
    if method == "hf-static":
        for lo in range(0, len(prompts), batch):
            t0 = time.perf_counter()
            rows = hf_batch(model, prompts[lo:lo + batch], max_new, stops)
            sync()
            for j, row in enumerate(rows):
                outputs[lo + j], latency[lo + j] = row, time.perf_counter() - t0
                steps += max(len(row), 1)
    else:
        strategy, engine = method
        for f in engine.generate_batch(strategy, prompts, max_new, stops, batch):
            outputs[f.index], latency[f.index] = f.result.tokens, f.latency
            steps += max(f.result.steps, 1)
    sync()
    wall = time.perf_counter() - start
    tokens = sum(map(len, outputs))
    return {"outputs": outputs, "latency": latency, "wall": wall, "tokens": tokens,
            "steps": steps}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main_batched(args) -> None:
    """``tools/bench_decode.py --batch-sizes``: the table per batch size, and a JSON record."""
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA: the batched step runs uncaptured (a check of this tool, not a timing)")
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    t0 = time.perf_counter()
    model, prompts, stops, label = bench_decode.load(args)
    print(f"model: {label}; {model.info.extra.get('dtype')}; {len(prompts)} prompts; batch sizes"
          f" {sizes}; loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    engine = StaticEngine(model, capture=cuda, quiet=True)
    methods = {name.split("/")[0]: m for name, m in make_methods(
        args, model, {"graphs": engine}).items()}
    if "single-head" not in methods:
        sys.exit("error: --batch-sizes compares against our single-head: add it to --methods")
    # the reference: our single-head, one row at a time (untimed)
    strategy = methods["single-head"][0]
    reference = [engine.generate(strategy, ids, args.max_new_tokens, stops).tokens
                 for ids in prompts]
    runs = [(b, name) for b in sizes for name in methods]
    longest = max(map(len, prompts))
    for b, name in runs:  # untimed warm-up
        start = time.perf_counter()
        method = methods[name]
        if name == "hf-static":
            decode_all(model, method, prompts, args.max_new_tokens, stops, b)
        else:
            method[1].prepare(method[0], longest, args.max_new_tokens, batch_size=b)
            decode_all(model, method, prompts[:b], args.max_new_tokens, stops, b)
        print(f"warm-up B={b} {name}: {time.perf_counter() - start:.1f} s", flush=True)
    rounds: dict[tuple[int, str], list[dict]] = {run: [] for run in runs}
    for r in range(args.rounds):
        for b, name in runs[r % len(runs):] + runs[: r % len(runs)]:
            rounds[b, name].append(decode_all(model, methods[name], prompts,
                                              args.max_new_tokens, stops, b))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    summary: dict[str, dict] = {}
    for (b, name), done in rounds.items():
        last = done[-1]
        summary[f"B{b}/{name}"] = {
            "batch_size": b,
            "method": name,
            "tokens_per_s": statistics.median(d["tokens"] / d["wall"] for d in done),
            "tokens_per_s_rounds": [d["tokens"] / d["wall"] for d in done],
            "wall_seconds": statistics.median(d["wall"] for d in done),
            "latency_p50_s": percentile(last["latency"], 0.5),
            "latency_p90_s": percentile(last["latency"], 0.9),
            "latency_max_s": max(last["latency"]),
            "tau": last["tokens"] / last["steps"],
            "tokens": last["tokens"],
            "identical_to_single_head_one_row": sum(
                a == r for a, r in zip(last["outputs"], reference)),
        }
    for row in summary.values():
        # identity heads (random shapes) accept nothing: a Medusa row's tokens/s at the given τ, for
        # the same step cost
        if args.project_tau and row["method"] not in ("hf-static", "single-head"):
            row["projected_tokens_per_s"] = row["tokens_per_s"] * args.project_tau / row["tau"]
        for base in ("hf-static", "single-head"):
            other = summary.get(f"B{row['batch_size']}/{base}")
            if other is not None and other is not row:
                row[f"speedup_vs_{base}"] = row["tokens_per_s"] / other["tokens_per_s"]
    print_table(summary, len(prompts))
    record = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "model": label,
        "dtype": model.info.extra.get("dtype"),
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_sizes": sizes,
        "rounds": args.rounds,
        "methods": summary,
        **provenance(),
    }
    write_record(record, args.out)


def print_table(summary: dict, n: int) -> None:
    print("\n| B | method | tokens/s | latency p50 / p90 (s) | τ | vs generate static |"
          f" vs our single-head | identical to single-head, one row (of {n}) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in summary.values():
        projected = r.get("projected_tokens_per_s")
        cells = [str(r["batch_size"]), r["method"], f"{r['tokens_per_s']:.1f}" + (
                 "" if projected is None else f" (projected {projected:.0f})"),
                 f"{r['latency_p50_s']:.3f} / {r['latency_p90_s']:.3f}", f"{r['tau']:.2f}"]
        cells += [f"{r[k]:.2f}x" if k in r else "" for k in
                  ("speedup_vs_hf-static", "speedup_vs_single-head")]
        cells.append(str(r["identical_to_single_head_one_row"]))
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()
