"""tools/bench_decode.py runs end to end on a CPU (a tiny random shape; graphs then run uncaptured),
so the script's flags, engines and JSON record are checked without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_decode_runs_every_engine_and_writes_its_record(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_decode.py"),
            "--model",
            "shape:tiny",
            "-n",
            "2",
            "-mol",
            "6",
            "--rounds",
            "1",
            "--methods",
            "hf-dynamic,single-head,tree-15,mh-w2s2",
            "--engines",
            "eager,graphs,graphs-sdpa",
            "--blas",
            "cublaslt",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    methods = record["methods"]
    assert set(methods) == {"hf-dynamic"} | {
        f"{m}/{e}"
        for m in ("single-head", "tree-15", "mh-w2s2")
        for e in ("eager", "graphs", "graphs-sdpa")
    }
    for name, row in methods.items():
        assert row["tokens_per_s"] > 0 and row["ms_per_step"] > 0, name
        # greedy verification: every engine and attention gives the single-head tokens
        if name != "hf-dynamic":
            assert row["identical_to_single_head_eager"] == 2, name
    assert "speedup_vs_single-head_same_engine" in methods["tree-15/graphs-sdpa"]
    assert "BLAS cublaslt" in record["model"] and record["git_commit"]


def test_bench_decode_refuses_an_unknown_engine():
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_decode.py"),
            "--model",
            "shape:tiny",
            "--engines",
            "warp",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "unknown engine warp" in done.stderr


def test_bench_decode_batch_sizes_compare_batched_generate_and_ours(tmp_path):
    """--batch-sizes: per batch size, generate static on left-padded batches and our batched
    single-head and tree; ours give the one-row single-head tokens on every row."""
    out = tmp_path / "batch.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_decode.py"), "--model", "shape:tiny",
         "-n", "5", "-mol", "6", "--rounds", "1", "--batch-sizes", "1,2,4",
         "--methods", "hf-static,single-head,tree-15", "--project-tau", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    methods = record["methods"]
    assert set(methods) == {f"B{b}/{m}" for b in (1, 2, 4)
                            for m in ("hf-static", "single-head", "tree-15")}
    for name, row in methods.items():
        assert row["tokens_per_s"] > 0 and row["latency_p50_s"] > 0, name
        assert row["tokens"] == 5 * 6, name  # no stop ids: every row runs to the budget
        if not name.endswith("hf-static"):
            assert row["identical_to_single_head_one_row"] == 5, name
    assert "speedup_vs_hf-static" in methods["B4/tree-15"]
    tree = methods["B4/tree-15"]
    assert tree["projected_tokens_per_s"] == tree["tokens_per_s"] * 3 / tree["tau"]
    assert "projected_tokens_per_s" not in methods["B4/single-head"]
    assert "speedup_vs_single-head" in methods["B2/tree-15"]
    assert record["batch_sizes"] == [1, 2, 4] and "| B |" in done.stdout
