"""tools/vocab_text.py writes the translator's greedy text as train-heads' sequences.jsonl and
resumes from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vocab_text_writes_one_greedy_sequence_per_source(tiny_model_dir, tmp_path):
    out = tmp_path / "vocab" / "sequences.jsonl"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "vocab_text.py"),
        "--dataset",
        "flores200-sample",
        "-n",
        "3",
        "--model-name",
        str(tiny_model_dir),
        "--max-new-tokens",
        "5",
        "--generation-batch-size",
        "2",
        "--output",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(0 < len(r["ids"]) - r["prompt_len"] <= 5 for r in rows)
    generated = sum(len(r["ids"]) - r["prompt_len"] for r in rows)
    assert f"3 sequences, {generated} generated tokens" in done.stdout
    # the file is reused
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_text().splitlines() == [json.dumps(r) for r in rows]
