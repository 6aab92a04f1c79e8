"""What a submission returned, read as token ids, with the facts the grading report checks.

The course's contract: ``__call__(input_ids [1, P])`` returns the generated ids only, shape (T,), T
≤ max_output_len, ending at EOS. Values that cannot be token ids (text, floats, ids outside the
vocabulary, a batch of several sequences) fail the example; a [1, T] batch of one is read but
reported as not 1-D, and an output that is empty, repeats the prompt, runs past the length limit or
goes on after EOS is scored as returned and flagged. Speed counts the ids the submission generated:
the returned ids minus an echoed prompt, up to EOS and at most max_output_len (padding past either
is not generation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


class BadOutput(ValueError):
    """The returned value cannot be read as generated token ids; the message says what was returned.
    """


# an output that starts with this many prompt tokens (or is all prompt tokens) echoes part of it
PARTIAL_ECHO = 8


@dataclass
class OutputChecks:
    """The contract's checks on one output (what the grading report counts)."""

    shape: list[int]
    one_dimensional: bool
    returned_tokens: int
    starts_with_prompt: bool
    over_length: bool
    tokens_after_eos: int
    # starts with part of the prompt (an echo cut short): generated ids unknown
    partial_prompt_echo: bool = False
    # minus an echoed prompt, to EOS, ≤ max_len; None when it cannot be told
    generated_tokens: int | None = None

    @property
    def empty(self) -> bool:
        """Nothing generated: no ids at all, or the echoed prompt alone."""
        return self.generated_tokens == 0

    def to_dict(self) -> dict:
        return asdict(self)


def as_token_ids(value, vocab_size: int) -> tuple[list[int], list[int]]:
    """The ids of one sequence and the shape as returned; BadOutput when they are not token ids."""
    if value is None:
        raise BadOutput("returned None; return the generated ids as a 1-D tensor")
    if isinstance(value, (str, bytes)):
        raise BadOutput(
            f"returned a {type(value).__name__} ({value[:40]!r}); return token ids, not text"
        )
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except Exception:
            raise BadOutput(
                f"returned a {type(value).__name__} that is not a tensor of token ids"
            ) from None
    shape = list(value.shape)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise BadOutput(
            f"returned {str(value.dtype).replace('torch.', '')} values; return integer token ids"
        )
    if value.dim() == 0:
        raise BadOutput("returned a single number, not a sequence; return a 1-D tensor of ids")
    if value.dim() > 2 or (value.dim() == 2 and shape[0] != 1):
        raise BadOutput(f"returned shape {tuple(shape)}; expected (T,) generated ids")
    ids = [int(t) for t in value.reshape(-1).tolist()]
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise BadOutput(f"returned id {bad}, outside the vocabulary (0..{vocab_size - 1})")
    return ids, shape


def check_output(
    ids: list[int], shape: list[int], prompt: list[int], max_len: int, eos_id: int
) -> OutputChecks:
    """The contract's checks on ids already read by :func:`as_token_ids`; EOS is the id the
    submission was given, looked for after the prompt when the output repeats it (a chat prompt
    holds end-of-turn ids itself)."""
    repeats_prompt = bool(prompt) and ids[: len(prompt)] == prompt
    shared = 0
    for a, b in zip(ids, prompt):
        if a != b:
            break
        shared += 1
    partial = not repeats_prompt and shared >= 2 and shared >= min(PARTIAL_ECHO, len(ids))
    generated = ids[len(prompt):] if repeats_prompt else ids
    first_stop = next((i for i, t in enumerate(generated) if t == eos_id), None)
    return OutputChecks(
        shape=shape,
        one_dimensional=len(shape) == 1,
        returned_tokens=len(ids),
        starts_with_prompt=repeats_prompt,
        over_length=len(ids) > max_len,
        tokens_after_eos=0 if first_stop is None else len(generated) - first_stop - 1,
        partial_prompt_echo=partial,
        generated_tokens=(
            None if partial else min(len(generated) if first_stop is None else first_stop, max_len)
        ),
    )


def scored_tokens(ids: list[int], max_len: int, stops: set[int]) -> tuple[list[int], str]:
    """What is scored, as for our own decoders: up to the first stop id (excluded), at most
    ``max_len``."""
    cut = next((i for i, t in enumerate(ids) if t in stops), None)
    if cut is not None and cut <= max_len:
        return ids[:cut], "eos"
    return ids[:max_len], "length"
