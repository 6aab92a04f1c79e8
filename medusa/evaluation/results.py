"""Result files: one JSON line per example, written as it finishes, and a summary JSON at the end.
"""

from __future__ import annotations

import errno
import hashlib
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
# settings a resumed run may change: where it writes, how much it prints, and how many examples it
# covers (and the
# --engine asked for: the engine actually used, ``engine_used``, must stay the same)
# what may differ on --resume: it changes no decoded token (the sandbox only hides files from a
# submission)
RESUMABLE_CHANGES = (
    "resume",
    "output_dir",
    "debug",
    "warmup",
    "num_examples",
    "hf_token",
    "engine",
    "timeout",
    "threads",
    "sandbox",
)
# fingerprint keys added after runs were first recorded, with the value an older run.json implies
ADDED_LATER = {"engine_used": "eager"}
# fingerprint keys an older run.json may lack, with no value to assume: compared only where recorded
UNRECORDED_BEFORE = ("weights",)
DIGEST_SAMPLES = 1024  # values read from each tensor for its digest
LIBRARIES = (
    "medusa",
    "torch",
    "transformers",
    "datasets",
    "sacrebleu",
    "rouge-score",
    "huggingface-hub",
    "accelerate",
)


class PredictionLog:
    """Append-only JSONL: each line is flushed and synced, so an interrupted run keeps every
    finished example.

    The rows also stay in memory. Before each row the log checks that its path still holds the file
    it opened: a file (or folder) that something else removed or replaced during the run (a graded
    submission, a user) is written again from memory at once, and :meth:`close` does the same for
    one that was changed, so no finished row is lost. A disk that refuses a row (full, read-only)
    stops the run with one line saying what is kept.
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: dict[int, dict] = {}
        self._said = False
        self._failed = False  # a row the disk refused: that error said what is kept
        try:
            if resume and self.path.exists():
                rows = read_predictions(self.path)
                self.done = {row["index"]: row for row in rows}
                # rewrite without a line cut off by the crash, so new rows start on a line of their
                # own; into a temp
                # file renamed over the old one, so a kill during the rewrite loses nothing
                self._replace_file(self.expected())
            else:
                refuse_to_overwrite(self.path)
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise self._disk_error(exc) from None

    def write(self, row: dict) -> None:
        # kept first: a row the disk refuses is still written by a later rewrite
        self.done[row["index"]] = row
        try:
            if not self._still_ours():
                self._rewrite("was removed or replaced during the run")
                return
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._failed = True
            raise self._disk_error(exc, kept=len(self.done) - 1) from None

    def expected(self) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.done.values()).encode(
            "utf-8"
        )

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the rows are checked, and written again if need be, below
        want = self.expected()
        try:
            intact = not self.path.is_symlink() and self.path.read_bytes() == want
        except OSError:
            intact = False
        if intact:
            return
        try:
            self._rewrite("was changed or removed during the run", reopen=False)
        except OSError as exc:
            if not self._failed:  # else the error that stopped the run already said what is kept
                raise self._disk_error(exc) from None

    # ---- keeping the file what it should be ------------------------------------------------------
    def _still_ours(self) -> bool:
        """The path still names the file this log appends to (not removed, not replaced, its folder
        not gone)."""
        try:
            now, opened = os.stat(self.path, follow_symlinks=False), os.fstat(self._file.fileno())
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)

    def _rewrite(self, what: str, reopen: bool = True) -> None:
        """Every row kept so far, written again at the path (its folder made again if it went)."""
        from medusa.console import say

        self._replace_file(self.expected())
        if reopen:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = open(self.path, "a", encoding="utf-8")
        if not self._said:
            say(f"note: {self.path} {what}; written again with its {len(self.done)} rows")
            self._said = not reopen  # said again at the end if it happens again then

    def _replace_file(self, data: bytes) -> None:
        """``data`` at the path through a new temporary file (never through a link someone put
        there)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # whatever was put there instead: a folder, a link to elsewhere
        for stale in (tmp, self.path):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
        tmp.unlink(missing_ok=True)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def _disk_error(self, exc: OSError, kept: int | None = None) -> MedusaError:
        kept = len(self.done) if kept is None else kept
        rows = f"the {kept} finished examples written before are" if kept != 1 else \
            "the 1 finished example written before is"
        return MedusaError(
            f"cannot write {self.path}: {exc.strerror or exc}; {rows} kept there: "
            f"{disk_advice(exc)}, then rerun with --resume and the same --output-dir"
        )


def weights_digest(module: torch.nn.Module | None) -> str | None:
    """A fingerprint of loaded weights for ``--resume`` (retrained heads, another base behind the
    same path): each tensor's name, shape, type and 1024 values spread over it, hashed; cheap even
    for a 7B model on its GPU."""
    if module is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // DIGEST_SAMPLES)
        sample = flat[::step][:DIGEST_SAMPLES].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def check_same_rows(log: PredictionLog, examples: list) -> None:
    """``--resume`` continues the same data: a finished row whose source or reference text differs
    from the dataset's row at that index now would mix two datasets in one result."""
    for ex in examples:
        row = log.done.get(ex.index)
        if row is not None and (row.get("source"), row.get("target")) != (ex.source, ex.target):
            what = "source" if row.get("source") != ex.source else "reference"
            raise MedusaError(
                f"--resume: row {ex.index} of the data differs from the one finished in {log.path}"
                f" (its {what} text changed): resume with the same data or choose another"
                " --output-dir"
            )


FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", -1))  # no space, over quota


def refused_write(exc: OSError) -> bool:
    """The file system refused to store something (full, over quota, read-only): the user's to fix,
    in one line."""
    return exc.errno in (*FULL, errno.EROFS)


def disk_advice(exc: OSError) -> str:
    """What to do about a write the file system refused."""
    if exc.errno in FULL:
        return "free some disk space"
    if exc.errno == errno.EROFS:
        return "pass an --output-dir on a writable disk"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "pass an --output-dir you may write to"
    return "check the disk"


def refuse_to_overwrite(path: Path) -> None:
    """A started result file is only ever continued (``--resume``), never silently replaced."""
    if path.exists() and path.stat().st_size > 0:
        raise MedusaError(
            f"{path} already exists: pass --resume to continue that run or choose another"
            " --output-dir"
        )


def read_predictions(path: Path) -> list[dict]:
    """Rows of a predictions file; a line cut off by a crash is ignored, anything else corrupt is an
    error."""
    rows = []
    # bytes: a crash may cut the last line inside a UTF-8 character
    lines = path.read_bytes().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except ValueError:  # UnicodeDecodeError is a ValueError too
            if n == len(lines):
                break
            raise MedusaError(
                f"{path} line {n} is not valid JSON: move the file away or fix it"
            ) from None
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
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


RESOLVED_AT_LOAD = ("prompt_style", "device", "dtype")  # run.json records what these resolved to


def check_resume_before_loading(folder: Path, settings: dict) -> None:
    """The flags themselves against ``run.json``, before any model loads, so a refused ``--resume``
    answers at once; what only the loaded model can tell (resolved prompt style, dtype, device,
    engine) is checked afterwards."""
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
        raise MedusaError(
            f"--resume would mix two setups in {folder} ({diffs}): resume with the first run's "
            "settings or choose another --output-dir"
        )


def check_or_write_run(folder: Path, fingerprint: dict, resume: bool) -> None:
    """Record what a run decodes with; ``--resume`` must decode with the same, or its rows would mix
    two setups (e.g. bf16 rows finished before a default changed and fp32 rows after)."""
    path = folder / RUN_FILE
    current = {k: v for k, v in fingerprint.items() if k not in RESUMABLE_CHANGES}
    if not resume:
        refuse_to_overwrite(folder / PREDICTIONS)  # before the earlier run's run.json is touched
    if resume and path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise MedusaError(
                f"{path} is not valid JSON: move it away to resume without the check"
            ) from None
        before = {**{k: v for k, v in ADDED_LATER.items() if k in current}, **before}
        current = {k: v for k, v in current.items() if k in before or k not in UNRECORDED_BEFORE}
        _refuse_mixing(folder, before, current, set(before) | set(current))
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(current, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)


def write_summary(folder: Path, summary: dict) -> Path:
    path = folder / SUMMARY
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)
    return path
