"""Decoding strategies behind one interface (:class:`~medusa.decoding.base.Strategy`) and one loop."""

from __future__ import annotations

from ..errors import MedusaError
from .base import GenerationResult, Strategy, Tree
from .loop import generate
from .single_head import SingleHead

STRATEGIES = ("single-head", "multi-head")


def make_strategy(name: str, num_heads: int = 0, beam_width: int = 1) -> Strategy:
    if name == "single-head":
        return SingleHead()
    if name == "multi-head":
        raise MedusaError(
            "--decoding-strategy multi-head is not yet available in this version; use single-head"
        )
    raise MedusaError(f"unknown decoding strategy '{name}'; use one of: {', '.join(STRATEGIES)}")


__all__ = ["GenerationResult", "Strategy", "Tree", "generate", "make_strategy", "STRATEGIES"]
