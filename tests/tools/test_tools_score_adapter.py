"""tools/score_adapter.py scores a saved LoRA adapter merged into its base and writes every
translation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_tiny_adapter

ROOT = Path(__file__).resolve().parents[2]


def test_score_adapter_prints_the_scores_and_writes_the_translations(tiny_model_dir, tmp_path):
    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    predictions = tmp_path / "scored" / "predictions.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "score_adapter.py"),
            str(adapter),
            str(tmp_path / "par" / "train"),
            "2",
            str(predictions),
            "--model-name",
            str(tiny_model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["examples"] == 2 and result["max_input_len"] == 1000
    assert {"sacrebleu", "chrf", "bleu1"} <= set(result)
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["reference"] for r in rows] == ["I am going home", "She reads a book"]
    assert [r["prediction"] for r in rows] == result["sample"][:2]
