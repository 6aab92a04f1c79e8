"""Console output: messages go to stderr so stdout carries only results."""

from __future__ import annotations

import sys

_quiet = False  # a data-parallel run's other processes (medusa/distributed.py): the main process speaks for all


def quiet(on: bool | None = None) -> bool:
    """Whether messages are dropped; ``on`` sets it."""
    global _quiet
    if on is not None:
        _quiet = on
    return _quiet


def say(message: str) -> None:
    if not _quiet or message.startswith("error:"):  # an error of this process alone is still said
        print(message, file=sys.stderr, flush=True)
