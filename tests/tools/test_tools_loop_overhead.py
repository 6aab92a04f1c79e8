"""tools/loop_overhead.py times our single-head loop against generate on a random
SmolLM2-135M-shaped model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loop_overhead_reports_both_loops_and_their_ratio():
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "loop_overhead.py"),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--tokens",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    per_token = dict(
        re.findall(
            r"^(medusa single-head|transformers generate)\s+([\d.]+) ms/token \(median of 3 x 2 "
            r"tokens\)$",
            done.stdout,
            re.M,
        )
    )
    assert set(per_token) == {"medusa single-head", "transformers generate"}
    assert all(float(v) > 0 for v in per_token.values())
    assert re.search(r"^ratio generate/ours .*: [\d.]+; float32 on cpu$", done.stdout, re.M)
