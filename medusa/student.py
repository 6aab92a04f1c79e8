"""Run a student's ``MedusaTextGenerator`` (the course's interface) inside this evaluation, for grading.

The course's starter code builds ``MedusaTextGenerator(model, decoding_strategy, eos_id, use_no_medusa_heads,
beam_width, max_output_len)`` and calls it with ``input_ids`` of shape [1, P], expecting the generated ids only
(shape (T,), T ≤ max_output_len). Our model answers the FasterDecoding calls such code makes, so a grader can
score a submission with the same data, prompts, metrics and timing as the built-in strategies.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

from .decoding.base import GenerationResult
from .errors import MedusaError


def load_generator_class(spec: str) -> type:
    """``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
    if ":" not in spec:
        raise MedusaError(f"--generator {spec!r}: use FILE.py:ClassName or module:ClassName")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise MedusaError(f"--generator: {where} does not exist")
            module_spec = importlib.util.spec_from_file_location(f"student_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except MedusaError:
        raise
    except Exception as exc:  # the student's file failing to import is their bug, reported in one line
        raise MedusaError(f"--generator: importing {where} failed: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, name, None)
    if cls is None:
        raise MedusaError(f"--generator: {where} has no {name}")
    return cls


class StudentDecoder:
    """Calls the student's generator and normalises what it returns to our GenerationResult."""

    def __init__(self, cls: type, model, strategy: str, eos_id: int, heads: int, beam_width: int, max_len: int):
        self.max_len = max_len
        try:
            self.generator = cls(model, strategy, eos_id, heads, beam_width, max_len)
        except Exception as exc:
            raise MedusaError(f"--generator: constructing {cls.__name__} failed: {type(exc).__name__}: {exc}") from None

    def __call__(self, prompt_ids: list[int], stops: set[int], device: torch.device) -> GenerationResult:
        try:
            with torch.inference_mode():
                out = self.generator(torch.tensor([prompt_ids], device=device))
        except Exception as exc:
            raise MedusaError(f"--generator: the generator failed: {type(exc).__name__}: {exc}") from None
        tokens = [int(t) for t in torch.as_tensor(out).reshape(-1).tolist()]
        cut = next((i for i, t in enumerate(tokens) if t in stops), None)
        reason = "eos" if cut is not None else "length"
        tokens = tokens[:cut][: self.max_len] if cut is not None else tokens[: self.max_len]
        return GenerationResult(tokens, [], reason)
