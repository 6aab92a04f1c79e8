"""Console output: messages go to stderr so stdout carries only results."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
