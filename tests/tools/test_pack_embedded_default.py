"""tools/pack_embedded_default.py: trained heads + their adapter + tree become a loadable default
folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import make_tiny_adapter
from test_int8_weights import _tiny_heads
from medusa.model.checkpoints import save_heads
from medusa.model.heads import DRAFT_VOCAB
from medusa.model.int8_weights import is_quantized
from medusa.training.train_heads import TrainSettings, train_heads

ROOT = Path(__file__).resolve().parents[2]


def test_packed_heads_are_float16_name_their_adapter_and_tree_and_decode(tiny_model_dir, tmp_path):
    make_tiny_adapter(tiny_model_dir, tmp_path)
    heads = tmp_path / "heads"
    train_heads(
        TrainSettings(
            model_name=str(tiny_model_dir),
            dataset="flores200-sample",
            num_examples=4,
            prompt_style="seed",
            max_new_tokens=8,
            num_heads=2,
            epochs=1,
            device="cpu",
            adapter=str(tmp_path / "adapter"),
            output_dir=str(heads),
            drafter="token-input",
        )
    )
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0], [1], [0, 0]]}))
    target = tmp_path / "default"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "pack_embedded_default.py"),
            str(heads),
            str(tree),
            "--command",
            "a test",
            "--target",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "in all" in done.stdout
    weights = load_file(str(target / "medusa_heads.safetensors"))
    original = load_file(str(heads / "medusa_heads.safetensors"))
    assert weights.keys() == original.keys() and {t.dtype for t in weights.values()} == {
        torch.float16
    }
    assert all(torch.equal(weights[k], original[k].half()) for k in weights)
    meta = json.loads((target / "medusa_heads.json").read_text())
    assert (
        meta["adapter"] == "adapter"
        and meta["tree"] == "tree.json"
        and meta["training"]["command"] == "a test"
    )
    assert meta["training"]["trained_on"] == ["flores200-sample"]
    # a base that loads again: the adapter is named on its own
    assert meta["base_model"] == str(tiny_model_dir)
    assert (target / "adapter" / "adapter_model.safetensors").read_bytes() == (
        heads / "adapter" / "adapter_model.safetensors").read_bytes()
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "medusa.py"),
            "-m",
            str(target),
            "-ds",
            "tree",
            "-n",
            "2",
            "-mol",
            "5",
            "--prompt-style",
            "seed",
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
    assert summary["tree_used"].endswith("tree.json") and "+ adapter" in summary["model"]["base"]


def test_heads_without_their_adapter_are_refused(tiny_model_dir, tmp_path):
    heads = tmp_path / "heads"
    train_heads(
        TrainSettings(
            model_name=str(tiny_model_dir),
            dataset="flores200-sample",
            num_examples=3,
            prompt_style="seed",
            max_new_tokens=6,
            num_heads=2,
            epochs=1,
            device="cpu",
            output_dir=str(heads),
        )
    )
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0]]}))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "pack_embedded_default.py"),
            str(heads),
            str(tree),
            "--command",
            "x",
            "--target",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "no adapter" in done.stderr and not (tmp_path / "d").exists()


def test_the_packer_stores_heads_and_adapter_in_int8(tiny_model_dir, tmp_path):
    from medusa.model.loader import LoadSettings, load_model

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    _, heads = _tiny_heads(tiny_model_dir)
    # no adapter beside: --adapter names it
    folder = save_heads(heads, tmp_path / "heads", str(tiny_model_dir))
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0], [1], [0, 0]]}))
    root = ROOT
    target = tmp_path / "packed"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "tools" / "pack_embedded_default.py"),
            str(folder),
            str(tree),
            "--command",
            "a test",
            "--target",
            str(target),
            "--adapter",
            str(adapter),
            "--int8",
            "both",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for weights in (
        target / "medusa_heads.safetensors",
        target / "adapter" / "adapter_model.safetensors",
    ):
        assert is_quantized(load_file(str(weights)))
    packed = load_file(str(target / "medusa_heads.safetensors"))
    assert packed[DRAFT_VOCAB].dtype == torch.long
    meta = json.loads((target / "medusa_heads.json").read_text())
    assert meta["adapter"] == "adapter" and meta["training"]["stored_int8"] == "heads and adapter"
    # heads folder: base, adapter and tree beside
    model = load_model(LoadSettings(str(target), device="cpu"))
    assert model.heads is not None and model.info.extra["tree"].endswith("tree.json")
    assert "adapter" in model.info.base
    inplace = subprocess.run(
        [
            sys.executable,
            str(root / "tools" / "pack_embedded_default.py"),
            str(target),
            str(tree),
            "--command",
            "again",
            "--target",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert inplace.returncode != 0 and "another folder" in inplace.stderr


def test_repacking_an_int8_folder_reads_it_as_floats_and_names_the_hub_base(
    tiny_model_dir, tmp_path
):
    """The shipped faithful folder is int8: packing it again (a new tree, a vocabulary) must neither
    fail on its codes nor keep them as floats; an adapter for the embedded base names the hub
    repository, not a cache path."""
    from medusa.model.embedded import EMBEDDED_REPO
    from medusa.model.int8_weights import dequantize_tensors

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    _, heads = _tiny_heads(tiny_model_dir)
    # as the shipped folders record their base
    folder = save_heads(heads, tmp_path / "heads", "embedded")
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0], [1]]}))

    def pack(source, target, *extra):
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tools" / "pack_embedded_default.py"),
                str(source),
                str(tree),
                "--command",
                "c",
                "--target",
                str(target),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-2000:]

    pack(folder, tmp_path / "int8", "--adapter", str(adapter), "--int8", "both")
    config = json.loads((tmp_path / "int8" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == EMBEDDED_REPO
    first = load_file(str(tmp_path / "int8" / "medusa_heads.safetensors"))
    pack(tmp_path / "int8", tmp_path / "again", "--int8", "heads")
    again = load_file(str(tmp_path / "again" / "medusa_heads.safetensors"))
    # requantising dequantised codes changes nothing
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert is_quantized(
        load_file(str(tmp_path / "again" / "adapter" / "adapter_model.safetensors"))
    )
    pack(tmp_path / "int8", tmp_path / "floats")
    floats = load_file(str(tmp_path / "floats" / "medusa_heads.safetensors"))
    # copied
    adapter_floats = load_file(str(tmp_path / "floats" / "adapter" / "adapter_model.safetensors"))
    # heads in float16; the adapter as saved
    assert not is_quantized(floats) and is_quantized(adapter_floats)
    want = dequantize_tensors(first)
    assert all(
        (
            torch.equal(floats[k], want[k].half())
            if want[k].is_floating_point()
            else torch.equal(floats[k], want[k])
        )
        for k in want
    )
