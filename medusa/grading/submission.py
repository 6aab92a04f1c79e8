"""The submission's side of grading: import a student's ``MedusaTextGenerator`` and run it, in its
own process.

The course's starter code builds ``MedusaTextGenerator(model, decoding_strategy, eos_id,
use_no_medusa_heads, beam_width, max_output_len)`` and calls it with ``input_ids`` of shape [1, P],
expecting the generated ids only (shape (T,), T ≤ max_output_len). Our model answers the
FasterDecoding calls such code makes. Everything here runs in :mod:`medusa.grading.child`, never in
the grader: what comes back is plain data (ids, a shape, an error's first line and the submission's
file:line), which :mod:`medusa.grading.student` checks again.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path

import torch

from medusa.errors import MedusaError
from medusa.grading.student_output import BadOutput, as_token_ids

MAX_ERROR = 300  # characters of an error's first line that are kept


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: submissions' errors can span many lines (shapes,
    tracebacks)."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})" if exc.code is not None else "called sys.exit()"
    try:
        message = str(exc)
    except Exception:  # a submission's own exception class may fail to print itself
        message = ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 3] + "..."


def frame_site(frames: list[traceback.FrameSummary], files: set[str]) -> str | None:
    """``file:line`` of the deepest frame inside the submission (else the deepest frame at all)."""
    inside = [f for f in frames if str(Path(f.filename).resolve()) in files]
    frame = (inside or frames or [None])[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}" if frame else None


def location(exc: BaseException, files: set[str]) -> str | None:
    return frame_site(traceback.extract_tb(exc.__traceback__), files)


def needs_cuda(exc: BaseException) -> bool:
    """A CUDA call (``.cuda()``, ``device="cuda"``) on a machine whose torch has no CUDA device."""
    return not torch.cuda.is_available() and "cuda" in str(exc).lower()


class NeedsCuda(MedusaError):
    """The one failure of an example that stops the run: the submission needs a GPU this machine
    lacks."""

    def __init__(self, where: str | None) -> None:
        at = f" ({where})" if where else ""
        super().__init__(f"--generator: this submission needs CUDA{at} and this machine has none; "
                         "grade it on a machine with a CUDA GPU")
        self.where = where


def cuda_error(where: str | None) -> NeedsCuda:
    return NeedsCuda(where)


def failure_site(exc: BaseException, files: set[str]) -> str | None:
    """``file:line`` of a submission's failure; a CUDA call on a machine without CUDA stops the run
    instead."""
    at = location(exc, files)
    if needs_cuda(exc):
        raise cuda_error(at) from None
    return at


def split_spec(spec: str) -> tuple[str, str]:
    """``path/to/file.py:ClassName`` or ``package.module:ClassName`` → (where, class name)."""
    if ":" not in spec:
        raise MedusaError(f"--generator {spec!r}: use FILE.py:ClassName or module:ClassName")
    where, name = spec.rsplit(":", 1)
    if not where or not name:
        raise MedusaError(f"--generator {spec!r}: use FILE.py:ClassName or module:ClassName")
    if where.endswith(".py") and not Path(where).is_file():
        raise MedusaError(
            f"--generator: {where} does not exist: check the path (FILE.py:ClassName)"
        )
    return where, name


def load_generator_class(spec: str) -> type:
    """The submission's class; its folder goes on ``sys.path`` as ``python generate_medusa.py``
    would put it."""
    where, name = split_spec(spec)
    try:
        if where.endswith(".py"):
            path = Path(where)
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # helper files beside it import
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
        raise MedusaError(
            f"--generator: {where} imports {exc.name!r}, which is not installed here"
            + (f" ({at})" if at else "")
            + "; pip install it, then grade again"
        ) from None
    # the student's file failing to import is their bug, reported in one line
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        at = failure_site(exc, {str(Path(where).resolve())})
        raise MedusaError(f"--generator: importing {where} failed: {one_line(exc)}"
                          + (f" ({at})" if at else "")) from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        own = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and v.__module__ == module.__name__
        )
        raise MedusaError(f"--generator: {where} has no {name}; "
                          + (f"its classes: {', '.join(own)}" if own else "it defines no class"))
    return cls


class Submission:
    """The student's generator built once, then called per example; every failure becomes a reply,
    not a crash."""

    def __init__(self, cls: type, model, strategy: str, eos_id: int, heads: int, beam_width: int,
                 max_len: int) -> None:
        self.cls, self.model = cls, model
        self.files: set[str] = set()
        source = inspect.getsourcefile(cls)
        if source:
            self.files.add(str(Path(source).resolve()))
        self.vocab_size = model.lm_head.weight.shape[0]
        try:
            self.generator = cls(model, strategy, eos_id, heads, beam_width, max_len)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            at = failure_site(exc, self.files)
            raise MedusaError(f"--generator: constructing {cls.__name__} failed: {one_line(exc)}"
                              + (f" ({at})" if at else "")) from None

    def call_site(self) -> str | None:
        """``file:line`` of the generator's ``__call__``, where a bad return value comes from."""
        try:
            call = type(self.generator).__call__
            return f"{Path(inspect.getsourcefile(call)).name}:{inspect.getsourcelines(call)[1]}"
        except (TypeError, OSError):
            return None

    def __call__(self, prompt_ids: list[int]) -> dict:
        """The reply for one example: ``ids`` and ``shape``, or ``error`` and ``at``."""
        device = self.model.device
        try:
            with torch.inference_mode():
                out = self.generator(torch.tensor([prompt_ids], device=device))
            # the grader's clock stops when this reply arrives: count queued kernels
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            return {"error": one_line(exc), "at": failure_site(exc, self.files)}
        try:
            ids, shape = as_token_ids(out, self.vocab_size)
        except BadOutput as exc:
            return {"error": str(exc), "at": self.call_site()}
        return {"ids": ids, "shape": shape}
