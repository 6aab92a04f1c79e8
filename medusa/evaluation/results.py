"""Result files: one JSON line per example, written as it finishes, and a summary JSON at the end."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from medusa.errors import MedusaError

PREDICTIONS = "predictions.jsonl"
BASELINE = "baseline-single-head.jsonl"
SUMMARY = "summary.json"
RUN_FILE = "run.json"
# settings a resumed run may change: where it writes, how much it prints, and how many examples it covers (and the
# --engine asked for: the engine actually used, ``engine_used``, must stay the same)
# what may differ on --resume: it changes no decoded token (the sandbox only hides files from a submission)
RESUMABLE_CHANGES = ("resume", "output_dir", "debug", "warmup", "num_examples", "hf_token", "engine", "timeout",
                     "threads", "sandbox")
# fingerprint keys added after runs were first recorded, with the value an older run.json implies
ADDED_LATER = {"engine_used": "eager"}
LIBRARIES = ("medusa", "torch", "transformers", "datasets", "sacrebleu", "rouge-score", "huggingface-hub", "accelerate")


class PredictionLog:
    """Append-only JSONL: each line is flushed and synced, so an interrupted run keeps every finished example.

    The rows also stay in memory: :meth:`close` finds a file that something else changed, cut or removed during the
    run (a graded submission, a user) and writes it again from them, so no finished row is lost.
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: dict[int, dict] = {}
        if resume and self.path.exists():
            rows = read_predictions(self.path)
            self.done = {row["index"]: row for row in rows}
            # rewrite without a line cut off by the crash, so new rows start on a line of their own; into a temp file
            # renamed over the old one, so a kill during the rewrite loses nothing
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        else:
            refuse_to_overwrite(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[row["index"]] = row

    def expected(self) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.done.values()).encode("utf-8")

    def close(self) -> None:
        self._file.close()
        want = self.expected()
        try:
            intact = not self.path.is_symlink() and self.path.read_bytes() == want
        except OSError:
            intact = False
        if intact:
            return
        from medusa.console import say

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        for stale in (tmp, self.path):  # whatever was put there instead: a folder, a link to elsewhere
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(want)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        say(f"note: {self.path} was changed or removed during the run; written again with its {len(self.done)} rows")


def refuse_to_overwrite(path: Path) -> None:
    """A started result file is only ever continued (``--resume``), never silently replaced."""
    if path.exists() and path.stat().st_size > 0:
        raise MedusaError(f"{path} already exists: pass --resume to continue that run or choose another --output-dir")


def read_predictions(path: Path) -> list[dict]:
    """Rows of a predictions file; a line cut off by a crash is ignored, anything else corrupt is an error."""
    rows = []
    lines = path.read_bytes().splitlines()  # bytes: a crash may cut the last line inside a UTF-8 character
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except ValueError:  # UnicodeDecodeError is a ValueError too
            if n == len(lines):
                break
            raise MedusaError(f"{path} line {n} is not valid JSON: move the file away or fix it") from None
    return rows


def library_versions() -> dict[str, str | None]:
    from medusa import __version__

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["medusa"] = out["medusa"] or __version__  # run from a checkout that is not pip-installed
    return out


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


RESOLVED_AT_LOAD = ("prompt_style", "device", "dtype")  # run.json records what these resolved to


def check_resume_before_loading(folder: Path, settings: dict) -> None:
    """The flags themselves against ``run.json``, before any model loads, so a refused ``--resume`` answers at once;
    what only the loaded model can tell (resolved prompt style, dtype, device, engine) is checked afterwards."""
    try:
        before = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no record yet, or a broken one that check_or_write_run reports
        return
    keys = {k for k in settings if k in before and k not in RESUMABLE_CHANGES + RESOLVED_AT_LOAD}
    _refuse_mixing(folder, before, settings, keys)


def _refuse_mixing(folder: Path, before: dict, current: dict, keys: set[str]) -> None:
    changed = sorted(k for k in keys if before.get(k) != current.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {before.get(k)!r} then, {current.get(k)!r} now" for k in changed)
        raise MedusaError(f"--resume would mix two setups in {folder} ({diffs}): resume with the first run's "
                          "settings or choose another --output-dir")


def check_or_write_run(folder: Path, fingerprint: dict, resume: bool) -> None:
    """Record what a run decodes with; ``--resume`` must decode with the same, or its rows would mix two setups
    (e.g. bf16 rows finished before a default changed and fp32 rows after)."""
    path = folder / RUN_FILE
    current = {k: v for k, v in fingerprint.items() if k not in RESUMABLE_CHANGES}
    if not resume:
        refuse_to_overwrite(folder / PREDICTIONS)  # before the earlier run's run.json is touched
    if resume and path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise MedusaError(f"{path} is not valid JSON: move it away to resume without the check") from None
        before = {**{k: v for k, v in ADDED_LATER.items() if k in current}, **before}
        _refuse_mixing(folder, before, current, set(before) | set(current))
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_summary(folder: Path, summary: dict) -> Path:
    path = folder / SUMMARY
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
