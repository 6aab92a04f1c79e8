"""tools/bench_sampling.py runs end to end on a CPU on the embedded default (its step uncaptured),
so the script's methods, ratios, JSON record and plot are checked without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_sampling_writes_its_record_and_plot(tmp_path):
    out = tmp_path / "sampling.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_sampling.py"), "-n", "2", "-mol", "6",
         "--rounds", "1", "--temperatures", "0,0.7", "--epsilons", "0.09,0.3", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    methods = record["methods"]
    assert set(methods) == {"T0/generate-static", "T0/single-head", "T0/tree",
                            "T0.7/generate-static", "T0.7/single-head", "T0.7/tree",
                            "T0.7/typical-eps0.09", "T0.7/typical-eps0.3"}
    tree = methods["T0.7/tree"]
    assert tree["tau"] >= 1 and 0 <= tree["chrf"] <= 100
    assert abs(tree["speedup_vs_single-head"] * methods["T0.7/single-head"]["tokens_per_s"]
               - tree["tokens_per_s"]) < 1e-6 * tree["tokens_per_s"]
    # greedy: the tree's tokens are single-head's, so is its chrF
    assert methods["T0/tree"]["chrf"] == methods["T0/single-head"]["chrf"]
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert "vs single-head" in done.stdout
