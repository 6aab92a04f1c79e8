"""Decoding strategies behind one interface (:class:`~medusa.decoding.base.Strategy`), the tree
format and one loop."""

from __future__ import annotations

from dataclasses import dataclass

from medusa.errors import MedusaError
from medusa.decoding.accept import (
    ACCEPTANCE_RULES,
    TYPICAL_ALPHA,
    TYPICAL_THRESHOLD,
    make_acceptance,
)
from medusa.decoding.adaptive import Adaptive
from medusa.decoding.base import GenerationResult, Strategy, Tree
from medusa.decoding.loop import generate
from medusa.decoding.multi_head import MultiHead
from medusa.decoding.single_head import SingleHead
from medusa.decoding.static_tree import StaticTree
from medusa.decoding.trees import MAX_TREE_DEPTH

# medusa/decoding/engine.py (kept here: --help stays light)
ENGINES = ("auto", "eager", "graphs", "compiled")


@dataclass
class DecodeSettings:
    """How to decode: strategy, its heads and beams, and the acceptance rule with its thresholds."""

    strategy: str = "single-head"
    num_heads: int = 2
    beam_width: int = 2
    acceptance: str = "greedy"
    posterior_threshold: float = TYPICAL_THRESHOLD
    posterior_alpha: float = TYPICAL_ALPHA
    # tree strategy: a JSON tree; None = the built-in tree for num_heads
    tree_file: str | None = None
    # tree strategy: rebuild the tree with this many nodes from its calibration
    tree_size: int | None = None
    # tree strategy: a dynamic tree of this many nodes, num_heads deep (dynamic_tree.py)
    dynamic_tree: int | None = None
    adaptive: bool = False
    # multi-head + rescore: the course's algorithm exactly (multi_head.course_reference)
    course_reference: bool = False
    # above 0 every strategy samples (medusa/decoding/sampling.py), losslessly under greedy
    # acceptance (speculative sampling); 0 is greedy
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


# --decoding-strategy NAME → its class (one line per strategy)
STRATEGY_CLASSES: dict[str, type[Strategy]] = {
    "single-head": SingleHead,
    "multi-head": MultiHead,
    "tree": StaticTree,
}
STRATEGIES = tuple(STRATEGY_CLASSES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; an unknown name is a one-line error listing the known ones.
    """
    if name not in STRATEGY_CLASSES:
        raise MedusaError(
            f"unknown decoding strategy '{name}'; use one of: {', '.join(STRATEGIES)}"
        )
    return STRATEGY_CLASSES[name]


def make_strategy(settings: DecodeSettings | str) -> Strategy:
    """The strategy object for these settings (a bare name means that strategy with default
    settings)."""
    if isinstance(settings, str):
        settings = DecodeSettings(strategy=settings)
    kind = strategy_class(settings.strategy)
    if settings.temperature > 0 and not kind.samples:
        raise MedusaError(
            f"-ds {settings.strategy} decodes at temperature 0 only:"
            f" drop --temperature {settings.temperature:g}"
        )
    strategy = kind.from_settings(settings)
    return Adaptive(strategy) if settings.adaptive else strategy


__all__ = [
    "ACCEPTANCE_RULES",
    "DecodeSettings",
    "ENGINES",
    "GenerationResult",
    "MAX_TREE_DEPTH",
    "STRATEGIES",
    "STRATEGY_CLASSES",
    "Strategy",
    "Tree",
    "generate",
    "make_strategy",
    "strategy_class",
]
