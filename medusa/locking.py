"""Advisory file locks, so two processes never write one result folder or one cache entry at the
same time.

The lock is ``flock`` on a small file that is removed on release (a folder left behind by a refused
or failed run stays empty). The kernel drops the lock when its holder dies, so a killed run never
leaves a stale lock behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked there
    fcntl = None  # type: ignore[assignment]


class LockBusy(Exception):
    """Another process holds the lock (raised only for non-blocking locks); ``pid`` is that process,
    if known."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(str(path))
        self.pid = pid


@contextmanager
def file_lock(path: Path, blocking: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block; removed
    afterwards.

    Non-blocking locks raise :class:`LockBusy` at once when another process holds it; blocking ones
    wait.
    """
    if fcntl is None:
        yield
        return
    fd = _acquire(path, blocking)
    try:
        yield
    finally:
        try:
            # while still holding it: a waiter then sees a new file and locks that one
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, blocking: bool) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockBusy(path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        # the holder before us may have removed the file after we opened it: lock the current one
        # instead
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
