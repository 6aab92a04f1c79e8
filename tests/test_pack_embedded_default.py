"""benchmarks/pack_embedded_default.py: trained heads + their adapter + tree become a loadable default folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import make_tiny_adapter
from medusa.training.train_heads import TrainSettings, train_heads

ROOT = Path(__file__).resolve().parents[1]


def test_packed_heads_are_float16_name_their_adapter_and_tree_and_decode(tiny_model_dir, tmp_path):
    make_tiny_adapter(tiny_model_dir, tmp_path)
    heads = tmp_path / "heads"
    train_heads(TrainSettings(model_name=str(tiny_model_dir), dataset="flores200-sample", num_examples=4,
                              prompt_style="seed", max_new_tokens=8, num_heads=2, epochs=1, device="cpu",
                              adapter=str(tmp_path / "adapter"), output_dir=str(heads), drafter="token-input"))
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0], [1], [0, 0]]}))
    target = tmp_path / "default"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pack_embedded_default.py"), str(heads),
                           str(tree), "--command", "a test", "--target", str(target)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "in all" in done.stdout
    weights = load_file(str(target / "medusa_heads.safetensors"))
    original = load_file(str(heads / "medusa_heads.safetensors"))
    assert weights.keys() == original.keys() and {t.dtype for t in weights.values()} == {torch.float16}
    assert all(torch.equal(weights[k], original[k].half()) for k in weights)
    meta = json.loads((target / "medusa_heads.json").read_text())
    assert meta["adapter"] == "adapter" and meta["tree"] == "tree.json" and meta["training"]["command"] == "a test"
    assert meta["training"]["trained_on"] == ["flores200-sample"]
    assert meta["base_model"] == str(tiny_model_dir)  # a base that loads again: the adapter is named on its own
    assert (target / "adapter" / "adapter_model.safetensors").read_bytes() == (
        heads / "adapter" / "adapter_model.safetensors").read_bytes()
    run = subprocess.run([sys.executable, str(ROOT / "medusa.py"), "-m", str(target), "-ds", "tree", "-n", "2",
                          "-mol", "5", "--prompt-style", "seed", "-o", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tree_used"].endswith("tree.json") and "+ adapter" in summary["model"]["base"]


def test_heads_without_their_adapter_are_refused(tiny_model_dir, tmp_path):
    heads = tmp_path / "heads"
    train_heads(TrainSettings(model_name=str(tiny_model_dir), dataset="flores200-sample", num_examples=3,
                              prompt_style="seed", max_new_tokens=6, num_heads=2, epochs=1, device="cpu",
                              output_dir=str(heads)))
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0]]}))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pack_embedded_default.py"), str(heads),
                           str(tree), "--command", "x", "--target", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0 and "no adapter" in done.stderr and not (tmp_path / "d").exists()
