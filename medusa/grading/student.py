"""A submission's generator as one more decoder of an evaluation run, answered by its own process.

The runner calls :class:`StudentDecoder` per example as it calls our engines. The reply from the
submission's process (:mod:`medusa.grading.isolation`) is only data and is checked again here: ids
within the vocabulary, a shape that fits them, errors cut to one line. A submission that fails on
one example (raises, calls ``sys.exit``, returns something that is not token ids, runs past
``--timeout``, kills its own process) fails that example only: the result carries the error's first
line and the submission's file:line, a new process takes over, and the run goes on. Failures that no
example can escape (an import error, a constructor error, a submission that needs CUDA on a machine
without it) stop the run with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medusa.decoding.base import GenerationResult
from medusa.grading.isolation import SubmissionGone, SubmissionProcess, SubmissionTimedOut
from medusa.grading.student_output import check_output, scored_tokens

MAX_TEXT = 300


def _text(value) -> str | None:
    """A string from the submission's process as one short line (None stays None)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def read_reply(reply: dict, vocab_size: int) -> tuple[list[int], list[int]]:
    """The ids and shape of a ``result`` reply; ValueError when they are not what a well-behaved
    child sends."""
    ids, shape = reply.get("ids"), reply.get("shape")
    if not (isinstance(ids, list) and isinstance(shape, list) and 1 <= len(shape) <= 2):
        raise ValueError("no ids")
    if not all(type(n) is int and n >= 0 for n in shape) or math.prod(shape) != len(ids):
        raise ValueError("a shape that does not fit the ids")
    if len(shape) == 2 and shape[0] != 1:
        raise ValueError("several sequences")
    if not all(type(t) is int and 0 <= t < vocab_size for t in ids):
        raise ValueError("ids outside the vocabulary")
    return ids, shape


@dataclass
class StudentResult(GenerationResult):
    """One example's outcome: the scored ids, the contract checks, or the error that failed the
    example."""

    checks: dict | None = None
    error: str | None = None
    error_at: str | None = None
    # what the speed counts: the returned ids minus an echoed prompt
    generated_tokens: int | None = None

    def row_fields(self) -> dict:
        """What predictions.jsonl records beyond our decoders' fields."""
        return {"error": self.error, "error_at": self.error_at, "checks": self.checks,
                "generated_tokens": self.generated_tokens}


def failed(error: str, at: str | None = None) -> StudentResult:
    return StudentResult([], [], "error", error=error, error_at=at)


@dataclass
class StudentDecoder:
    """Gets the submission's process ready (constructed with the course's arguments), then runs it
    per example."""

    process: SubmissionProcess
    class_name: str
    strategy: str
    eos_id: int
    heads: int
    beam_width: int
    max_len: int
    vocab_size: int
    timeout: float | None = None

    def __post_init__(self) -> None:
        self._ready()

    def _ready(self) -> None:
        args = {"strategy": self.strategy, "eos_id": self.eos_id, "heads": self.heads,
                "beam_width": self.beam_width, "max_len": self.max_len}
        self.process.ready(args, self.timeout, self.class_name)

    def __call__(
        self, prompt_ids: list[int], stops: set[int], device: torch.device | None = None
    ) -> StudentResult:
        try:
            reply = self.process.call(prompt_ids, self.timeout)
        except SubmissionTimedOut as exc:
            self._ready()  # a new process for the next example, outside the next example's time
            return failed(str(exc), exc.where)
        except SubmissionGone as exc:
            self._ready()
            return failed(str(exc))
        if "error" in reply:
            return failed(_text(reply["error"]) or "failed", _text(reply.get("at")))
        try:
            ids, shape = read_reply(reply, self.vocab_size)
        except ValueError as exc:
            self.process.stop()
            self._ready()
            return failed(f"the submission's process sent a malformed reply ({exc})")
        checks = check_output(ids, shape, prompt_ids, self.max_len, self.eos_id)
        tokens, reason = scored_tokens(ids, self.max_len, stops)
        return StudentResult(
            tokens, [], reason, checks=checks.to_dict(), generated_tokens=checks.generated_tokens
        )

    def stop(self) -> None:
        """Freeze the submission's process and kill anything it started (before the grader writes
        its files)."""
        self.process.pause()
