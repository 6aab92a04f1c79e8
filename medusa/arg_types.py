"""argparse types: numbers checked where they are parsed, so a bad value is a one-line usage error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def checked_number(
    text: str,
    cast: Callable[[str], float],
    expected: str,
    valid: Callable[[float], bool],
    rule: str,
) -> float:
    """``cast(text)``, or an argparse error saying what was expected; ``rule`` (with
    ``{value}``/``{text}``) says what a parsed value that fails ``valid`` must be."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(rule.format(value=value, text=text))
    return value


def positive_int(text: str) -> int:
    return checked_number(
        text, int, "a whole number", lambda v: v >= 1, "must be at least 1, got {value}"
    )


def probability(text: str) -> float:
    return checked_number(
        text, float, "a number", lambda v: 0 < v <= 1, "must be in (0, 1], got {value}"
    )


# every seeded library takes a seed this size, and batch generation's seed * 1_000_003 + offset
# stays in 64 bits
MAX_SEED = 2**32 - 1


def range_text(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``above 0``, ``at least 1``, ``from 0 to 4294967295`` or ``in [0, 1)``: the rule a flag's
    value breaks."""
    if high == math.inf:
        return f"{'above' if low_open else 'at least'} {low:g}"
    if not (low_open or high_open):
        whole = low == int(low) and high == int(high)  # a seed's bound in full, not as 4.29497e+09
        return f"from {int(low)} to {int(high)}" if whole else f"from {low:g} to {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number_flag(
    cast: Callable[[str], float],
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite number in a range: nan, inf, 0 or a negative value where
    none makes sense is then a one-line usage error at parsing, not a crash (or a silent nan loss)
    after the model loaded."""
    kind = "a whole number" if cast is int else "a finite number"
    rule = f"must be {kind} {range_text(low, high, low_open, high_open)}, got {{text}}"

    def valid(v: float) -> bool:
        return (
            math.isfinite(v)
            and (v > low if low_open else v >= low)
            and (v < high if high_open else v <= high)
        )

    def parse(text: str) -> float:
        return checked_number(text, cast, kind.replace("finite ", ""), valid, rule)

    # argparse's name for the value on odd errors
    parse.__name__ = "whole number" if cast is int else "number"
    return parse


# learning rates, temperatures, loss weights that must act
POSITIVE = number_flag(float, 0, low_open=True)
NON_NEGATIVE = number_flag(float, 0)  # weights and decays where 0 switches the term off
FRACTION = number_flag(float, 0, 1, high_open=True)  # a held-out share, a dropout rate
COUNT = number_flag(int, 1)  # examples, tokens, heads, epochs, batch sizes
# counts where 0 means none (extra samples, layers, a vocabulary cut)
NON_NEGATIVE_COUNT = number_flag(int, 0)
SEED = number_flag(int, 0, MAX_SEED)



def at_least_one(text: str) -> int:
    """A count of rows or tokens: a whole number, at least 1 (the rule of :class:`NamedRule`)."""
    return checked_number(text, int, "a whole number", lambda v: v >= 1,
                          "must be at least 1, got {value}")


class NamedRule(argparse.Action):
    """A flag whose refusal starts with the flag's own name (``--max-input-len must be at least 1,
    got 0``), as a command's own check of the value words it: every command that shares the flag
    refuses a bad value with the same line."""

    def __init__(self, *args, check: Callable[[str], object] = at_least_one, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.check = check

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            setattr(namespace, self.dest, self.check(values))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{self.option_strings[0]} {str(exc).replace('expected', 'must be', 1)}")


class FlagAdder:
    """Declares a spec's flags on ``parser``, one call per field. The default is the field's value
    in ``defaults`` (the settings the command fills); the help is the spec's text unless ``helps``
    words it for this command (``{default}`` filled in); a field is declared only where
    ``defaults`` has it and ``only`` (if given) names it."""

    def __init__(self, parser, defaults: object, helps: dict[str, str] | None = None,
                 only: tuple[str, ...] | None = None) -> None:
        self.parser, self.defaults, self.helps, self.only = parser, defaults, helps or {}, only

    def wants(self, field: str) -> bool:
        return hasattr(self.defaults, field) and (self.only is None or field in self.only)

    def __call__(self, field: str, *names: str, help: str, **options) -> None:
        if not self.wants(field):
            return
        value = getattr(self.defaults, field)
        options.setdefault("default", value)
        text = self.helps.get(field, help).replace("{default}", str(value))
        self.parser.add_argument(*names, dest=field, help=text, **options)


def settings_from_namespace(cls, args: object, **resolved):
    """``cls`` (a settings dataclass) from the attributes of ``args`` (parsed flags, or other
    settings) named as its fields, with ``resolved`` for the fields worked out from several."""
    from dataclasses import fields

    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **resolved})
