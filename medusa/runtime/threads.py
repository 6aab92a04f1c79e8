"""How many CPU threads torch uses: ``--threads N``, else a default that stays fast on a busy
machine.

torch starts one thread per core. One-sequence decoding of a small model runs many small matrix
products, whose threads spin waiting for each other; when other programs hold some of those cores,
every step waits for the slowest thread (the embedded demo ran 5x slower on a loaded 2-core machine
than with one thread). The default therefore uses only the cores that are idle now (cores the
process may use minus the 1-minute load average), at most :data:`MAX_DEFAULT_THREADS` and at least
1; ``OMP_NUM_THREADS`` set by the user wins over the default (up to :func:`max_threads`).
"""

from __future__ import annotations

import os

from medusa.arg_types import checked_number

# more threads barely help one-sequence decoding and hurt when cores are shared
MAX_DEFAULT_THREADS = 4
AUTO = "auto"


def max_threads() -> int:
    """More threads than 4 per core only thrash, and torch fails (SystemError) when the OS refuses
    that many."""
    return 4 * (os.cpu_count() or 1)


def threads_arg(text: str) -> int | None:
    """argparse type: a whole number from 1 to :func:`max_threads`, or ``auto`` (None)."""
    if text == AUTO:
        return None
    most = max_threads()
    return checked_number(text, int, "a whole number or 'auto'", lambda v: 1 <= v <= most,
                          f"must be at least 1 and at most {most} (4 per core here), got {{value}}")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), max_threads())
    cores = usable_cores()
    try:
        idle = cores - os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system
        idle = cores
    return max(1, min(MAX_DEFAULT_THREADS, cores, int(idle + 0.5)))


def apply_threads(requested: int | None) -> int:
    """Set torch's intra-op threads (``requested``, else :func:`default_threads`); returns the
    number used."""
    import torch

    n = requested or default_threads()
    torch.set_num_threads(n)
    return n
