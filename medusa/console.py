"""Console output: messages go to stderr so stdout carries only results."""

from __future__ import annotations

import sys

# set for a data-parallel run's other processes (medusa/runtime/distributed.py): their name
_quiet: str | None = None


def quiet(name: str | None = None) -> bool:
    """Whether messages are dropped; ``name`` (e.g. ``process 1``) drops them from now on, except
    errors, which are said with that name in front (an error of this process alone must not be
    lost)."""
    global _quiet
    if name is not None:
        _quiet = name
    return _quiet is not None


def say(message: str) -> None:
    if _quiet is None:
        print(message, file=sys.stderr, flush=True)
    elif message.startswith("error:"):
        print(f"[{_quiet}] {message}", file=sys.stderr, flush=True)
