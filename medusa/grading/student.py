"""Run a student's ``MedusaTextGenerator`` (the course's interface) inside this evaluation, for grading.

The course's starter code builds ``MedusaTextGenerator(model, decoding_strategy, eos_id, use_no_medusa_heads,
beam_width, max_output_len)`` and calls it with ``input_ids`` of shape [1, P], expecting the generated ids only
(shape (T,), T ≤ max_output_len). Our model answers the FasterDecoding calls such code makes, so a grader can
score a submission with the same data, prompts, metrics and timing as the built-in strategies.

A submission that fails on one example (raises, calls ``sys.exit``, returns something that is not token ids, runs
past ``--timeout``) fails that example only: the result carries the error's first line and the submission's
file:line, and the run goes on. Failures that no example can escape (an import error, a constructor error, a
submission that needs CUDA on a machine without it) stop the run with one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medusa.decoding.base import GenerationResult
from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.grading.student_output import BadOutput, as_token_ids, check_output, scored_tokens
from medusa.grading.time_limit import TimeLimitExceeded, check_time_limit_supported, time_limit


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: submissions' errors can span many lines (shapes, tracebacks)."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})" if exc.code is not None else "called sys.exit()"
    if isinstance(exc, TimeLimitExceeded):
        return str(exc)
    try:
        message = str(exc)
    except Exception:  # a submission's own exception class may fail to print itself
        message = ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def location(exc: BaseException, files: set[str]) -> str | None:
    """``file:line`` of the deepest frame inside the submission (else the deepest frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if str(Path(f.filename).resolve()) in files]
    frame = (inside or frames or [None])[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}" if frame else None


def needs_cuda(exc: BaseException) -> bool:
    """A CUDA call (``.cuda()``, ``device="cuda"``) on a machine whose torch has no CUDA device."""
    return not torch.cuda.is_available() and "cuda" in str(exc).lower()


def cuda_error(where: str | None) -> MedusaError:
    at = f" ({where})" if where else ""
    return MedusaError(f"--generator: this submission needs CUDA{at} and this machine has none; "
                       "grade it on a machine with a CUDA GPU")


def failure_site(exc: BaseException, files: set[str]) -> str | None:
    """``file:line`` of a submission's failure; a CUDA call on a machine without CUDA stops the run instead."""
    at = location(exc, files)
    if needs_cuda(exc):
        raise cuda_error(at) from None
    return at


def load_generator_class(spec: str) -> type:
    """``path/to/file.py:ClassName`` or ``package.module:ClassName``."""
    if ":" not in spec:
        raise MedusaError(f"--generator {spec!r}: use FILE.py:ClassName or module:ClassName")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise MedusaError(f"--generator: {where} does not exist: check the path (FILE.py:ClassName)")
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # as `python generate_medusa.py` would: helper files beside it import
                sys.path.insert(0, folder)
            module_spec = importlib.util.spec_from_file_location(f"student_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except MedusaError:
        raise
    except ModuleNotFoundError as exc:  # the submission imports a package this environment lacks
        at = location(exc, {str(Path(where).resolve())})
        raise MedusaError(f"--generator: {where} imports {exc.name!r}, which is not installed here"
                          + (f" ({at})" if at else "") + "; pip install it, then grade again") from None
    except BaseException as exc:  # the student's file failing to import is their bug, reported in one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        at = failure_site(exc, {str(Path(where).resolve())})
        raise MedusaError(f"--generator: importing {where} failed: {one_line(exc)}"
                          + (f" ({at})" if at else "")) from None
    cls = getattr(module, name, None)
    if cls is None:
        own = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        raise MedusaError(f"--generator: {where} has no {name}; "
                          + (f"its classes: {', '.join(own)}" if own else "it defines no class"))
    return cls


@dataclass
class StudentResult(GenerationResult):
    """One example's outcome: the scored ids, the contract checks, or the error that failed the example."""

    checks: dict | None = None
    error: str | None = None
    error_at: str | None = None

    def row_fields(self) -> dict:
        """What predictions.jsonl records beyond our decoders' fields."""
        return {"error": self.error, "error_at": self.error_at, "checks": self.checks}


@dataclass
class StudentDecoder:
    """Builds the student's generator once, then runs it per example, turning every failure into a failed row."""

    cls: type
    model: MedusaModel
    strategy: str
    eos_id: int
    heads: int
    beam_width: int
    max_len: int
    timeout: float | None = None
    files: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.timeout:
            check_time_limit_supported()
        source = inspect.getsourcefile(self.cls)
        if source:
            self.files.add(str(Path(source).resolve()))
        self.vocab_size = self.model.lm_head.weight.shape[0]
        try:
            with time_limit(self.timeout):
                self.generator = self.cls(self.model, self.strategy, self.eos_id, self.heads, self.beam_width,
                                          self.max_len)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            at = failure_site(exc, self.files)
            raise MedusaError(f"--generator: constructing {self.cls.__name__} failed: {one_line(exc)}"
                              + (f" ({at})" if at else "")) from None

    def call_site(self) -> str | None:
        """``file:line`` of the generator's ``__call__``, where a bad return value comes from."""
        try:
            call = type(self.generator).__call__
            return f"{Path(inspect.getsourcefile(call)).name}:{inspect.getsourcelines(call)[1]}"
        except (TypeError, OSError):
            return None

    def __call__(self, prompt_ids: list[int], stops: set[int], device: torch.device) -> StudentResult:
        try:
            with torch.inference_mode(), time_limit(self.timeout):
                out = self.generator(torch.tensor([prompt_ids], device=device))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return StudentResult([], [], "error", error=one_line(exc), error_at=failure_site(exc, self.files))
        try:
            ids, shape = as_token_ids(out, self.vocab_size)
        except BadOutput as exc:
            return StudentResult([], [], "error", error=str(exc), error_at=self.call_site())
        checks = check_output(ids, shape, prompt_ids, self.max_len, self.eos_id)
        tokens, reason = scored_tokens(ids, self.max_len, stops)
        return StudentResult(tokens, [], reason, checks=checks.to_dict())
