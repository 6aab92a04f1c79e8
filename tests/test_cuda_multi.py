"""Two-GPU checks (skipped without 2 CUDA devices): a model split with --device-map auto decodes the
same tokens as on one GPU, and a data-parallel launch over both GPUs gives the one-process rows. Run
them on a machine with two or more CUDA GPUs: ``python -m pytest tests/test_cuda_multi.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                reason="needs 2 CUDA devices")

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "medusa.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )


def token_rows(folder: Path, name: str = "predictions.jsonl") -> list[list[int]]:
    return [json.loads(line)["token_ids"] for line in (folder / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def small_heads(tmp_path_factory) -> Path:
    """A random 8-layer model (about 100 MB in fp32) with 5 heads: big enough for --max-memory to
    split it."""
    out = tmp_path_factory.mktemp("small")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "make_random_model.py"),
            "--shape",
            "small",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    return out / "heads"


@pytest.mark.parametrize("strategy", ["single-head", "multi-head", "tree"])
def test_split_model_decodes_the_one_gpu_tokens(small_heads, tmp_path, strategy):
    common = [
        "-m",
        str(small_heads),
        "-d",
        "in22-gen-sample",
        "-n",
        "4",
        "-mol",
        "24",
        "--dtype",
        "float32",
        "--prompt-style",
        "seed",
        "-ds",
        strategy,
        "--compare-single-head",
        "--engine",
        "eager",
    ]
    one = cli(*common, "--device", "cuda:0", "-o", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    split = cli(
        *common,
        "--device-map",
        "auto",
        "--max-memory",
        "0=50MiB,1=4GiB",
        "-o",
        str(tmp_path / "split"),
    )
    assert split.returncode == 0, split.stderr[-2000:]
    assert "device map: cuda:0:" in split.stderr and "cuda:1:" in split.stderr
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["gpus"] == 2 and summary["processes"] == 1
    assert token_rows(tmp_path / "split") == token_rows(tmp_path / "one")
    if strategy != "single-head":  # single-head has no separate baseline pass
        assert token_rows(tmp_path / "split", "baseline-single-head.jsonl") == token_rows(
            tmp_path / "one", "baseline-single-head.jsonl")


def test_split_model_falls_back_to_the_eager_engine(small_heads, tmp_path):
    out = cli(
        "-m",
        str(small_heads),
        "-d",
        "in22-gen-sample",
        "-n",
        "1",
        "-mol",
        "8",
        "--prompt-style",
        "seed",
        "--device-map",
        "auto",
        "--max-memory",
        "0=50MiB,1=4GiB",
        "-o",
        str(tmp_path / "x"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "the eager engine runs" in out.stderr
    graphs = cli(
        "-m",
        str(small_heads),
        "-n",
        "1",
        "--device-map",
        "auto",
        "--engine",
        "graphs",
        "-o",
        str(tmp_path / "y"),
    )
    assert graphs.returncode == 2 and "drop --engine" in graphs.stderr


def test_data_parallel_over_two_gpus_equals_one(small_heads, tmp_path):
    import shutil

    common = [
        "-m",
        str(small_heads),
        "-d",
        "in22-gen-sample",
        "-n",
        "6",
        "-mol",
        "16",
        "--prompt-style",
        "seed",
        "-ds",
        "tree",
        "--compare-single-head",
    ]
    one = cli(*common, "--device", "cuda:0", "-o", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    accelerate = shutil.which("accelerate") or pytest.skip("accelerate's launcher is not on PATH")
    two = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(ROOT / "medusa.py"),
            *common,
            "-o",
            str(tmp_path / "two"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (summary["processes"], summary["gpus"], summary["backend"]) == (2, 2, "nccl")
    assert token_rows(tmp_path / "two") == token_rows(tmp_path / "one")
