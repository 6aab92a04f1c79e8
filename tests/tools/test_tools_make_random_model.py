"""tools/make_random_model.py saves a random model of a shape with heads, as folders the command
line decodes with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_saved_random_model_decodes_through_the_cli(tmp_path):
    out = tmp_path / "rand"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "make_random_model.py"),
            "--shape",
            "tiny",
            "--heads",
            "3",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"use -m {out / 'heads'}" in done.stdout
    config = json.loads((out / "base" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        64,
        4,
        1000,
    )
    assert json.loads((out / "heads" / "medusa_heads.json").read_text())["num_heads"] == 3
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "medusa.py"),
            "-m",
            str(out / "heads"),
            "-ds",
            "tree",
            "-n",
            "1",
            "-mol",
            "4",
            "--prompt-style",
            "seed",
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"]["num_heads"] == 3 and summary["speed"]["generated_tokens"] > 0
