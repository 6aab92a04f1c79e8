"""Decoding strategies behind one interface (:class:`~medusa.decoding.base.Strategy`), the tree format and one loop."""

from __future__ import annotations

from dataclasses import dataclass

from medusa.errors import MedusaError
from medusa.decoding.accept import ACCEPTANCE_RULES, make_acceptance
from medusa.decoding.adaptive import Adaptive
from medusa.decoding.base import GenerationResult, Strategy, Tree
from medusa.decoding.loop import generate
from medusa.decoding.multi_head import MultiHead, course_reference
from medusa.decoding.single_head import SingleHead
from medusa.decoding.dynamic_tree import DynamicTree
from medusa.decoding.static_tree import StaticTree
from medusa.decoding.trees import builtin_tree, load_tree, resized_tree

MAX_TREE_DEPTH = 64

STRATEGIES = ("single-head", "multi-head", "tree")
ENGINES = ("auto", "eager", "graphs", "compiled")  # medusa/decoding/engine.py (kept here: --help stays light)


@dataclass
class DecodeSettings:
    """How to decode: strategy, its heads and beams, and the acceptance rule with its thresholds."""

    strategy: str = "single-head"
    num_heads: int = 2
    beam_width: int = 2
    acceptance: str = "greedy"
    posterior_threshold: float = 0.09
    posterior_alpha: float = 0.3
    tree_file: str | None = None  # tree strategy: a JSON tree; None = the built-in tree for num_heads
    tree_size: int | None = None  # tree strategy: rebuild the tree with this many nodes from its calibration
    dynamic_tree: int | None = None  # tree strategy: a dynamic tree of this many nodes, num_heads deep (dynamic_tree.py)
    adaptive: bool = False
    course_reference: bool = False  # multi-head + rescore: the course's algorithm exactly (multi_head.course_reference)


def make_strategy(settings: DecodeSettings | str) -> Strategy:
    """The strategy object for these settings (a bare name means that strategy with default settings)."""
    if isinstance(settings, str):
        settings = DecodeSettings(strategy=settings)
    if settings.strategy == "single-head":
        return SingleHead()
    acceptance = make_acceptance(settings.acceptance, settings.posterior_threshold, settings.posterior_alpha)
    if settings.strategy == "multi-head" and settings.course_reference:
        if settings.acceptance != "rescore":
            raise MedusaError("the course reference accepts by rescoring: it needs --acceptance rescore")
        strategy: Strategy = course_reference(settings.num_heads, settings.beam_width)
    elif settings.strategy == "multi-head":
        strategy = MultiHead(settings.num_heads, settings.beam_width, acceptance)
    elif settings.strategy == "tree" and settings.dynamic_tree:
        strategy = DynamicTree(settings.dynamic_tree, settings.num_heads, acceptance)
    elif settings.strategy == "tree":
        if settings.tree_size is not None:
            paths = resized_tree(settings.tree_file, settings.num_heads, settings.tree_size)
        elif settings.tree_file:
            paths = load_tree(settings.tree_file, MAX_TREE_DEPTH)
        else:
            paths = builtin_tree(settings.num_heads)
        strategy = StaticTree(paths, acceptance)
    else:
        raise MedusaError(f"unknown decoding strategy '{settings.strategy}'; use one of: {', '.join(STRATEGIES)}")
    return Adaptive(strategy) if settings.adaptive else strategy


__all__ = ["ACCEPTANCE_RULES", "DecodeSettings", "ENGINES", "GenerationResult", "Strategy", "Tree", "generate",
           "make_strategy", "STRATEGIES"]
