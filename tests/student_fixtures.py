"""Shared by the submission tests: a tiny model with heads, and running a generator file through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medusa.checkpoints import save_heads
from medusa.cli import main
from medusa.heads import HeadConfig, MedusaHeads


@pytest.fixture(scope="session")
def student_heads_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """3 lightly perturbed shared-projection heads on the tiny Llama: multi-head drafts differ from greedy."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = base.get_output_embeddings()
    heads = MedusaHeads(HeadConfig(3, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True), lm)
    torch.manual_seed(0)
    with torch.no_grad():
        for block in heads.heads:
            block[0].linear.weight.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("student-heads")
    save_heads(heads, folder, str(tiny_model_dir))
    return folder


def grade(source: str, cls: str, model_dir: Path, out_dir: Path, capsys, *extra: str, n: int = 3,
          mol: int = 8) -> tuple[int, str, str]:
    """Write ``source`` as a submission file and grade ``cls`` from it with the real command line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir.parent / f"{out_dir.name}_submission.py"
    path.write_text(source)
    code = main(["-m", str(model_dir), "-n", str(n), "-mol", str(mol), "--prompt-style", "seed", "-o", str(out_dir),
                 "--generator", f"{path}:{cls}", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out_dir: Path, name: str = "predictions.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out_dir / name).read_text().splitlines()]


def report(out_dir: Path) -> dict:
    return json.loads((out_dir / "grading.json").read_text())
