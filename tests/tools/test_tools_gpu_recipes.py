"""The device recipes of tools/gpu/ parse, print their usage on --help and refuse an unknown
subcommand before anything touches CUDA or Python, name no machine-specific path, and pass
shellcheck where it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "tools" / "gpu"
RECIPES = ["setup.sh", "train_default.sh", "measure_default.sh", "bench.sh", "multi_gpu.sh"]


def test_the_recipes_are_the_named_ones():
    assert sorted(p.name for p in GPU.glob("*.sh")) == sorted(RECIPES + ["common.sh"])


@pytest.mark.parametrize("name", RECIPES + ["common.sh"])
def test_recipe_parses_and_names_no_machine_path(name):
    text = (GPU / name).read_text()
    assert subprocess.run(["bash", "-n", str(GPU / name)], capture_output=True).returncode == 0
    assert "/root" not in text and "/tmp/" not in text
    if name != "common.sh":
        assert "set -euo pipefail" in text and "# Usage:" in text and "# Run time" in text


@pytest.fixture
def no_gpu_env(tmp_path):
    """PATH first finds an nvidia-smi, python and python3 that leave a mark: a recipe's usage must
    not run them."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("nvidia-smi", "python", "python3"):
        (fake / tool).write_text(f"#!/bin/sh\necho {tool} >> {tmp_path / 'touched'}\nexit 1\n")
        (fake / tool).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": str(fake / "python3"),
    }
    return env, tmp_path / "touched"


@pytest.mark.parametrize("name", RECIPES)
def test_help_prints_the_usage_without_cuda(name, no_gpu_env):
    env, touched = no_gpu_env
    done = subprocess.run(
        ["bash", str(GPU / name), "--help"], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and f"tools/gpu/{name}" in done.stdout
    assert not touched.exists()


@pytest.mark.parametrize("name", RECIPES)
def test_a_bad_subcommand_prints_the_usage_and_fails(name, no_gpu_env):
    env, touched = no_gpu_env
    done = subprocess.run(
        ["bash", str(GPU / name), "no-such-stage"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert "unknown subcommand 'no-such-stage'" in done.stderr and "Usage:" in done.stderr
    assert not touched.exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing():
    done = subprocess.run(
        ["shellcheck", "-x", "-P", "SCRIPTDIR", *(str(GPU / n) for n in RECIPES + ["common.sh"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_no_tool_names_a_machine_path():
    for path in (ROOT / "tools").rglob("*"):
        if path.is_file() and path.suffix in (".py", ".sh"):
            assert "/root" not in path.read_text(), path
