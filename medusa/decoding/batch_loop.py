"""The host loop of a batched decode: B rows step together, each with its own budget, stop rules and
statistics (:class:`~medusa.decoding.loop.RowProgress`, the bookkeeping of the one-row loop), and a
row that finishes takes the next waiting prompt at once (continuous refill), so the batch stays
full until the prompts run out.

Each row has its own copy of the strategy (adaptive depth and sampled draws are per decode); the
device step is :class:`~medusa.decoding.batch_step.BatchDecoder`'s. Rows are returned as they
finish, each with two times measured on the host after a step's one synchronisation: its latency
(from its admission, before its prefill, to the step that completed it) and its share of the wall
time (its own admission, plus each step's time split evenly among the rows that step advanced), so
the shares of all rows add up to the batch's wall time and seconds per token stay a throughput.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from medusa.decoding.base import DecodeState, GenerationResult, Strategy
from medusa.decoding.batch_step import BatchDecoder
from medusa.decoding.loop import RowProgress, depth_limit


@dataclass
class _Row:
    index: int  # position among the prompts
    strategy: Strategy
    progress: RowProgress
    start: float  # host time at admission
    share: float = 0.0  # seconds of the batch's wall time charged to this row
    reach: int = 0


@dataclass
class Finished:
    """One finished row: its position among the prompts, its output, its share of the wall time
    and its latency, in seconds."""

    index: int
    result: GenerationResult
    seconds: float
    latency: float


@torch.inference_mode()
def decode_batch(
    batch: BatchDecoder,
    strategy: Strategy,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: set[int],
    run_step: Callable[[], None] | None = None,
    run_prefill: Callable[[list[int]], None] | None = None,
) -> Iterator[Finished]:
    """Every prompt decoded, B at a time, yielded as each finishes (not in prompt order).
    ``run_step`` replays the captured batch step, ``run_prefill`` the one-row decoder's captured
    prefill (defaults: both eager)."""
    run_step = run_step or batch.step
    run_prefill = run_prefill or batch.row.prefill
    strategies = [strategy] + [copy.deepcopy(strategy) for _ in range(batch.batch - 1)]
    sampler_rows = strategy.sampler and strategy.sampler.rows
    waiting = iter(enumerate(prompts))
    rows: list[_Row | None] = [None] * batch.batch
    limits = list(batch.depth_limits)

    def state_of(first: int) -> DecodeState:
        if batch.noise is None:
            return DecodeState(batch.last_logits[0], None, [], _argmax=first)
        return DecodeState(batch.last_logits[0], None, [], drawn=first)

    def finish(b: int) -> Finished:
        row = rows[b]
        return Finished(row.index, row.progress.result, row.share,
                        time.perf_counter() - row.start)

    def admit(b: int) -> Iterator[Finished]:
        """Fill row ``b`` with the next prompt that needs a step (prompts decided by their first
        token finish here); idle the row once none is left."""
        for index, ids in waiting:
            start = time.perf_counter()
            rs = strategies[b]
            rs.begin(ids)
            if batch.row.noise is not None:
                rs.sampler.fill(batch.row.noise[:1])
            run_prefill(ids)
            first = int(batch.row.out[1])  # one synchronisation per prompt
            rows[b] = row = _Row(index, rs, RowProgress(rs, max_new_tokens, stop_ids), start)
            reach = row.progress.reach(state_of(first))
            if reach is None:
                row.share = time.perf_counter() - start
                yield finish(b)
                continue
            batch.admit(b, len(ids))
            row.share = time.perf_counter() - start
            row.reach = reach
            limits[b] = depth_limit(batch.plan.tree.max_depth, rs, reach)
            return
        rows[b] = None
        batch.release(b)

    for b in range(batch.batch):
        yield from admit(b)
    while any(row is not None for row in rows):
        start = time.perf_counter()
        batch.set_depth_limits(limits)
        if batch.noise is not None:
            for b, row in enumerate(rows):
                if row is not None:
                    row.strategy.sampler.fill(batch.noise[b, :sampler_rows])
        run_step()
        out = batch.read()
        live = [row for row in rows if row is not None]
        seconds = (time.perf_counter() - start) / len(live)
        for row in live:
            row.share += seconds
        for b, row in enumerate(rows):
            if row is None:
                continue
            length = out[b][0]
            row.strategy.observe(length)
            going = row.progress.take(out[b][2:2 + length], limits[b] + 1)
            reach = row.progress.reach(state_of(out[b][1])) if going else None
            if reach is None:
                yield finish(b)
                yield from admit(b)
            else:
                row.reach = reach
                limits[b] = depth_limit(batch.plan.tree.max_depth, row.strategy, reach)
