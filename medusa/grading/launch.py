"""Starting a submission's process for a run's settings: what it loads (no token), where its files
are, and, with ``--sandbox``, which of the grader's files it may see."""

from __future__ import annotations

import glob
import importlib.machinery
import os
from dataclasses import asdict
from pathlib import Path

import torch

from medusa.errors import MedusaError
from medusa.grading.isolation import ChildConfig, SubmissionProcess, hub_cache
from medusa.grading.submission import split_spec
from medusa.model.embedded import FAITHFUL_NAME, EMBEDDED_NAME, cache_root
from medusa.model.hub import is_local


def submission_folder(where: str) -> Path:
    """The folder a ``FILE.py`` or ``module`` submission lives in, found without running any of its
    code."""
    if where.endswith(".py"):
        return Path(where).resolve().parent
    top = where.split(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *__import__("sys").path])
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        raise MedusaError(f"--generator: no module {top!r} found from here; pass FILE.py:ClassName")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve().parent
    return Path(spec.origin).resolve().parent


def _absolute(name: str | None) -> str | None:
    """Local paths made absolute (the child works in another folder); hub ids and built-in names
    unchanged."""
    return str(Path(name).resolve()) if name and is_local(name) else name


def model_paths(names: list[str | None]) -> list[str]:
    """The files a sandboxed child must see to load the model: local folders (a file's folder), the
    hub cache's folder of each hub repository (made now if the grader's load has yet to fill it),
    the GGUF conversions."""
    paths: list[str] = []
    for name in names:
        if not name:
            continue
        if name in (EMBEDDED_NAME, FAITHFUL_NAME) or name.endswith(".gguf"):
            cache_root().mkdir(parents=True, exist_ok=True)
            paths.append(str(cache_root()))
        if is_local(name):
            path = Path(name).resolve()
            paths.append(str(path if path.is_dir() else path.parent))
        elif "/" in name and name not in (EMBEDDED_NAME, FAITHFUL_NAME):
            repo = Path(hub_cache()) / f"models--{name.replace('/', '--')}"
            repo.mkdir(parents=True, exist_ok=True)
            paths.append(str(repo))
    return paths


def private_paths(settings) -> list[str]:
    """What a sandboxed submission must not see even beside its own file: the output folder and the
    local data (a pair prefix's files one by one, ``NAME.hin_Deva``, ``NAME.eng_Latn``…: the folder
    around them may be the submission's own)."""
    paths = []
    if settings.output_dir:
        Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
        paths.append(str(Path(settings.output_dir).resolve()))
    data = Path(settings.dataset)
    if data.exists():
        paths.append(str(data.resolve()))
    elif data.parent.is_dir():
        paths.extend(
            str(p.resolve()) for p in sorted(data.parent.glob(glob.escape(data.name) + ".*"))
        )
    return paths


def start_submission(settings, facts) -> SubmissionProcess:
    """The submission's process, started and past its import (one-line errors otherwise)."""
    if os.name != "posix":
        raise MedusaError(
            "--generator needs Linux or macOS (the submission's process is started with POSIX pipes"
            " and process groups); grade on one of those"
        )
    where, name = split_spec(settings.generator)
    folder = submission_folder(where)
    spec = f"{Path(where).resolve()}:{name}" if where.endswith(".py") else settings.generator
    load = settings.load_settings()
    load.token = None  # the child loads from the cache, offline
    # this process's GPU (one per launched rank)
    if load.device in ("auto", "cuda") and torch.cuda.is_available():
        load.device = f"cuda:{torch.cuda.current_device()}"
    load.model_name, load.medusa_heads, load.adapter = (
        _absolute(load.model_name),
        _absolute(load.medusa_heads),
        _absolute(load.adapter),
    )
    sandbox = None
    if settings.sandbox:
        from medusa.grading.sandbox import check_supported, sandbox_spec

        check_supported()
        sandbox = sandbox_spec(
            folder,
            model_paths(
                [
                    settings.model_name,
                    settings.medusa_heads,
                    settings.adapter,
                    facts.base,
                    facts.heads_source,
                ]
            ),
            private_paths(settings),
        )
    config = ChildConfig(
        spec,
        asdict(load),
        settings.threads or torch.get_num_threads(),
        settings.seed,
        [] if where.endswith(".py") else [str(folder)],
        sandbox,
    )
    process = SubmissionProcess(config, settings.debug)
    try:
        process.start()
    except BaseException:
        process.close()
        raise
    return process
