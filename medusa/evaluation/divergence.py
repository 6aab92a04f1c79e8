"""Where a greedy output parts from single-head's, and whether the base model was at a near tie
there.

Greedy verification is lossless in exact arithmetic, but in bf16 or fp16 a verify pass over a tree
and single-head's one-token step round the same logits differently: where the base model's two
best tokens are within rounding of each other, either may win, and the outputs part for good. A
bug parts them anywhere. The report tells the two apart: per differing output, the first
differing position and the base model's top-1 / top-2 logit margin there, against the logits'
rounding step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

# how many rounding steps of the top logit a margin may be and still count as a near tie
NEAR_TIE_STEPS = 4


@dataclass
class Divergence:
    """One differing output: ``position`` counts generated tokens (0 = the first)."""

    index: int
    position: int
    single_head_token: int | None  # None: that output ended there
    strategy_token: int | None
    margin: float  # base logits, top-1 minus top-2, after prompt + common prefix
    rounding_step: float  # the spacing of the logit dtype at the top logit
    near_tie: bool


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (one ending counts), or None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def margin_at(model, prompt_ids: list[int], prefix: list[int]) -> tuple[float, float]:
    """The base model's top-1 − top-2 logit margin after ``prompt_ids + prefix`` and the rounding
    step of its logits' dtype at the top logit."""
    ids = torch.tensor([prompt_ids + prefix], device=model.device)
    with torch.inference_mode():
        logits = model.step(ids, None, last_only=True).logits[0, -1]
    top = logits.float().topk(2).values
    eps = torch.finfo(logits.dtype).eps
    return float(top[0] - top[1]), eps * max(abs(float(top[0])), 1.0)


def divergences(model, prompts: dict[int, list[int]], rows: list[dict],
                baseline: list[dict]) -> list[Divergence]:
    """Per row whose tokens differ from single-head's row (same order), the divergence report;
    ``prompts`` maps a row's index to its prompt ids."""
    found = []
    for row, base in zip(rows, baseline):
        at = first_difference(base["token_ids"], row["token_ids"])
        if at is None:
            continue
        margin, step = margin_at(model, prompts[row["index"]], base["token_ids"][:at])

        def token(ids: list[int]) -> int | None:
            return ids[at] if at < len(ids) else None

        found.append(Divergence(row["index"], at, token(base["token_ids"]),
                                token(row["token_ids"]), margin, step,
                                margin <= NEAR_TIE_STEPS * step))
    return found


def report(found: list[Divergence]) -> dict:
    """The summary's block: every divergence, and how many were near ties."""
    return {"near_tie_steps": NEAR_TIE_STEPS, "near_ties": sum(d.near_tie for d in found),
            "outputs": [asdict(d) for d in found]}


def describe(found: list[Divergence], most: int = 5) -> str:
    """One line for the console."""
    if not found:
        return "every output equals single-head's"
    ties = sum(d.near_tie for d in found)
    shown = ", ".join(f"#{d.index} at token {d.position} (margin {d.margin:.3g}"
                      f"{', near tie' if d.near_tie else ''})" for d in found[:most])
    more = f", {len(found) - most} more in summary.json" if len(found) > most else ""
    verdict = ("all at near ties of the logits' rounding: numerics, not a bug" if ties == len(found)
               else f"{len(found) - ties} not at a near tie: a lossless run should have none")
    return f"differing outputs: {len(found)}; {verdict}; first differences: {shown}{more}"
