"""Shared by the submission tests: grading a generator file through the real command line, reading
results."""

from __future__ import annotations

import json
from pathlib import Path

from medusa.cli import main


def grade(source: str, cls: str, model_dir: Path, out_dir: Path, capsys, *extra: str, n: int = 3,
          mol: int = 8) -> tuple[int, str, str]:
    """Write ``source`` as a submission file and grade ``cls`` from it with the real command line,
    on the CPU (these submissions build CPU tensors, as the course's CPU examples do;
    tests/test_cuda.py grades on the GPU)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir.parent / f"{out_dir.name}_submission.py"
    path.write_text(source)
    code = main(
        [
            "-m",
            str(model_dir),
            "-n",
            str(n),
            "-mol",
            str(mol),
            "--prompt-style",
            "seed",
            "--device",
            "cpu",
            "-o",
            str(out_dir),
            "--generator",
            f"{path}:{cls}",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    return code, out, err


def rows(out_dir: Path, name: str = "predictions.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out_dir / name).read_text().splitlines()]


def report(out_dir: Path) -> dict:
    return json.loads((out_dir / "grading.json").read_text())
