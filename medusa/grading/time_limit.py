"""A wall-clock limit on a block of Python code that may never return (a submission's loop), without threads.

SIGALRM raises :class:`TimeLimitExceeded` in the main thread at the next bytecode; it derives from BaseException so
a submission's ``except Exception`` cannot swallow it, and it is raised again every half second in case a bare
``except:`` did. A single long C call (one huge matmul) is interrupted only when it returns.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from medusa.errors import MedusaError

RETRY_SECONDS = 0.5


class TimeLimitExceeded(BaseException):
    """The block ran past its limit."""


def check_time_limit_supported() -> None:
    """Refuse before any work when the platform or thread cannot deliver SIGALRM."""
    if not hasattr(signal, "setitimer"):
        raise MedusaError("--timeout needs SIGALRM, which this platform lacks; run without --timeout")
    if threading.current_thread() is not threading.main_thread():
        raise MedusaError("--timeout works only when the evaluation runs in the main thread; run without --timeout")


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeLimitExceeded inside the block once ``seconds`` have passed; ``None`` means no limit."""
    if not seconds:
        yield
        return

    def expire(signum, frame):
        raise TimeLimitExceeded(f"ran longer than the --timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, RETRY_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
