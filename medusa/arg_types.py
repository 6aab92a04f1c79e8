"""argparse types: numbers checked where they are parsed, so a bad value is a one-line usage error."""

from __future__ import annotations

import argparse
from typing import Callable


def checked_number(text: str, cast: Callable[[str], float], expected: str, valid: Callable[[float], bool],
                   rule: str) -> float:
    """``cast(text)``, or an argparse error saying what was expected; ``rule`` (with ``{value}``/``{text}``) says
    what a parsed value that fails ``valid`` must be."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(rule.format(value=value, text=text))
    return value


def positive_int(text: str) -> int:
    return checked_number(text, int, "a whole number", lambda v: v >= 1, "must be at least 1, got {value}")


def probability(text: str) -> float:
    return checked_number(text, float, "a number", lambda v: 0 < v <= 1, "must be in (0, 1], got {value}")


def positive_seconds(text: str) -> float:
    return checked_number(text, float, "a number of seconds", lambda v: 0 < v < float("inf"),
                          "must be a positive number of seconds, got {text}")
