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
