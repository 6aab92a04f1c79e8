"""tools/single_head_vs_generate.py: our single-head loop and transformers' generate give the same
fp32 tokens."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ours_and_generate_agree_on_a_tiny_model(tiny_model_dir):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "single_head_vs_generate.py"),
            "-m",
            str(tiny_model_dir),
            "-d",
            "flores200-sample",
            "-n",
            "2",
            "-mol",
            "6",
            "--prompt-style",
            "seed",
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "outputs differing: 0/2" in done.stdout
    speeds = re.findall(
        r"^(medusa single-head|transformers generate)\s+(\d+) tokens .* ([\d.]+) tok/s$",
        done.stdout,
        re.M,
    )
    assert [s[0] for s in speeds] == ["medusa single-head", "transformers generate"]
    assert speeds[0][1] == speeds[1][1] and all(float(s[2]) > 0 for s in speeds)
    assert "float32 on cpu, device cpu" in done.stdout
