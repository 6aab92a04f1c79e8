"""Where a command writes: checked (and, for result folders, locked) before any work, not after an
hour of it.

A folder is writable only if a file can really be created in it: permission bits say nothing to
root, and a read-only mount or ``/proc`` refuses whatever the bits say, so the check creates and
removes a probe file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medusa.errors import MedusaError
from medusa.locking import LockBusy, file_lock

LOCK_FILE = ".medusa.lock"


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def ensure_folder(folder: Path, flag: str, label: str | None = None) -> list[Path]:
    """Create ``folder`` if needed and prove a file can be written in it; returns the folders this
    call created, deepest first.

    ``label`` names the folder in messages (default: the flag and the folder); ``flag`` is what to
    change.
    """
    label = label or f"{flag} {folder}"
    if folder.exists() and not folder.is_dir():
        raise MedusaError(f"{label} is a file, not a folder: choose another {flag}")
    created = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedusaError(
            f"cannot create {label} ({_why(exc)}): choose another {flag}, in a folder you can"
            " write to"
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _remove_if_empty(created)
        raise MedusaError(
            f"cannot write in {label} ({_why(exc)}): choose another {flag}, in a folder you can "
            "write to"
        ) from None
    return created


def check_output_file(path: Path, flag: str) -> None:
    """An output file's folder must be writable and the path must not be a folder (checked before
    any work)."""
    if path.is_dir():
        raise MedusaError(f"{flag} {path} is a folder: give a file name, e.g. {path / 'tree.json'}")
    folder = path.parent
    created = ensure_folder(folder, flag, f"{folder} (the folder of {flag} {path})")
    # the file is written at the end; leave no empty folder behind if the work fails
    _remove_if_empty(created)


@contextmanager
def claimed_folder(folder: Path, flag: str = "--output-dir") -> Iterator[Path]:
    """A writable folder that no other medusa process writes while the ``with`` block runs.

    A second run into the same folder is refused at once (its rows would interleave with the first
    one's); a folder this call created and the work left empty is removed again.
    """
    created = ensure_folder(folder, flag)
    try:
        with file_lock(folder / LOCK_FILE):
            yield folder
    except LockBusy as busy:
        who = f" (process {busy.pid})" if busy.pid else ""
        raise MedusaError(
            f"another medusa run{who} is writing to {folder}: wait for it to finish or choose"
            f" another {flag}"
        ) from None
    finally:
        _remove_if_empty(created)


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()  # fails (harmlessly) when anything is inside
        except OSError:
            return
