"""Engines: who runs the decode loop. ``eager`` is the reference loop (dynamic cache, Python per
step); ``graphs`` runs the fast loop on a static cache with each strategy's step captured once as a
CUDA graph and replayed; ``compiled`` passes that step through ``torch.compile`` first, which fuses
the model's elementwise kernels.

Capturing costs a fraction of a second per strategy and cache size, compiling 20–60 s;
:meth:`Engine.prepare` does it before any timed decode and reports the seconds, which never count
towards RTF or tokens/s.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from medusa.console import say
from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.decoding import ENGINES
from medusa.decoding.attention import ATTENTIONS, resolve_attention, use_attention
from medusa.decoding.base import GenerationResult, Strategy
from medusa.decoding.batch_loop import Finished, decode_batch
from medusa.decoding.batch_step import BatchDecoder
from medusa.decoding.fast_loop import FastDecoder, generate_fast, prefill_bucket, prefill_buckets
from medusa.decoding.fixed_tree import DevicePlan
from medusa.decoding.loop import generate
from medusa.decoding.static_cache import StaticKVCache

# static caches come in multiples of this, so runs with similar prompts share graphs
CAPACITY_STEP = 128


class Engine(ABC):
    name = ""
    setup_seconds = 0.0  # capture/compile time so far: printed, never timed

    def prepare(self, strategy: Strategy, max_prompt_len: int, max_new_tokens: int,
                batch_size: int = 1) -> None:
        """Get ready to decode prompts of up to ``max_prompt_len`` tokens, ``batch_size`` rows at a
        time (before timing starts)."""

    @abstractmethod
    def generate(self, strategy: Strategy, prompt_ids: list[int], max_new_tokens: int,
                 stop_ids: set[int]) -> GenerationResult:
        """Generated ids only (no prompt, no stop token), at most ``max_new_tokens`` of them."""

    def generate_batch(self, strategy: Strategy, prompts: list[list[int]], max_new_tokens: int,
                       stop_ids: set[int], batch_size: int) -> Iterator[Finished]:
        """Every prompt decoded ``batch_size`` at a time, yielded as each finishes. Here: one at a
        time (batch size 1); the fast engine decodes rows together."""
        if batch_size != 1:
            raise MedusaError(
                f"--batch-size {batch_size} needs the fast engine (--engine auto, graphs or"
                f" compiled); the {self.name} engine decodes one row at a time"
            )
        for index, ids in enumerate(prompts):
            start = time.perf_counter()
            result = self.generate(strategy, ids, max_new_tokens, stop_ids)
            _sync(self)
            seconds = time.perf_counter() - start
            yield Finished(index, result, seconds, seconds)

    def describe(self, setup_before: float = 0.0) -> dict:
        """Name and the setup seconds spent since ``setup_before`` (one run of several sharing the
        engine)."""
        return {"name": self.name, "setup_seconds": round(self.setup_seconds - setup_before, 3)}


def _sync(engine: Engine) -> None:
    device = getattr(getattr(engine, "model", None), "device", None)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class EagerEngine(Engine):
    """The reference loop: any strategy, any device."""

    name = "eager"

    def __init__(self, model: MedusaModel) -> None:
        self.model = model

    def generate(self, strategy, prompt_ids, max_new_tokens, stop_ids):
        return generate(self.model, strategy, prompt_ids, max_new_tokens, stop_ids)


@dataclass
class _Prepared:
    # None: the strategy runs in the reference loop (no device tensors, or capture failed)
    plan: DevicePlan | None
    # by capacity
    decoders: list[tuple[FastDecoder, Callable[[], None]]] = field(default_factory=list)
    # the plan drafts a path-dependent drafter depth by depth (Strategy.by_path)
    per_path: bool = False
    # batched steps by (rows, capacity)
    batches: dict[tuple[int, int], tuple[BatchDecoder, Callable[[], None]]] = field(
        default_factory=dict)


class StaticEngine(Engine):
    """The fast loop on static caches; ``capture`` replays each step as a CUDA graph (``graphs``),
    without it the step runs eagerly (``static``: the same arithmetic on any device, which is how
    the CPU tests check it). ``compile`` passes the step through ``torch.compile`` before capture
    (fuses elementwise kernels; slow to build). ``attention``: ``grouped``
    (:mod:`medusa.decoding.attention`), ``model`` (the base's own) or ``auto`` (grouped in float32
    only, where it measured faster); it is in force only while this engine builds or runs a step or
    prefill. A model whose forward cannot be captured (it synchronises with the host, e.g. a dynamic
    RoPE that checks the sequence length) is a one-line error, or with ``fallback`` (``--engine
    auto``) a printed note and the eager loop.
    """

    def __init__(
        self,
        model: MedusaModel,
        capture: bool = True,
        compile: bool = False,
        quiet: bool = False,
        fallback: bool = False,
        capture_prefill: bool = True,
        attention: str = "auto",
        compile_options: dict | None = None,
    ) -> None:
        if attention not in ATTENTIONS:
            raise MedusaError(
                f"unknown attention '{attention}'; use one of: {', '.join(ATTENTIONS)}"
            )
        if capture and model.device.type != "cuda":
            raise MedusaError(
                f"--engine {'compiled' if compile else 'graphs'} needs CUDA (the model is on the"
                " CPU); use --engine eager or auto"
            )
        self.model, self.capture, self.compile, self.quiet, self.fallback = (
            model,
            capture,
            compile,
            quiet,
            fallback,
        )
        # inductor options, e.g. coordinate_descent_tuning
        self.compile_options = dict(compile_options or {})
        # False: the prompt runs eagerly at its own length (bench_decode's A/B)
        self.capture_prefill = capture_prefill
        self.attention = resolve_attention(attention, model.dtype)
        self.name = (
            ("compiled" if compile else "graphs")
            if capture
            else "static" + ("+compile" if compile else "")
        )
        # strategies decoded by the reference loop because their step failed to build
        self.fell_back: list[str] = []
        self._caches: dict[int, StaticKVCache] = {}
        self._prefills: dict[int, Prefill] = {}  # by id of the decoder
        self._prepared: dict[int, tuple[Strategy, _Prepared]] = {}
        # every decoder compiles the same FastDecoder.step code object: allow one entry per decoder
        if compile:
            config = torch._dynamo.config
            for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                         "accumulated_cache_size_limit"):
                if isinstance(getattr(config, name, None), int):
                    setattr(config, name, max(getattr(config, name), 256))

    def _plan(self, strategy: Strategy) -> _Prepared:
        key = id(strategy)
        if key not in self._prepared:
            device = self.model.device
            drafter = self.model.heads
            per_path = drafter is not None and drafter.path_dependent and strategy.by_path
            plan = (
                strategy.device_plan(device, sequential=True)
                if per_path
                else strategy.device_plan(device)
            )
            self._prepared[key] = (strategy, _Prepared(plan, per_path=per_path))
        return self._prepared[key][1]

    def describe(self, setup_before: float = 0.0) -> dict:
        return {**super().describe(setup_before), "attention": self.attention,
                **({"compile_options": self.compile_options} if self.compile_options else {}),
                **({"fell_back_to_eager": self.fell_back} if self.fell_back else {})}

    def capacity_for(self, plan: DevicePlan, total_len: int) -> int:
        """Prompt + new tokens + one draft (and at least the capture's 4-token prefix + one draft),
        rounded up."""
        need = max(total_len, 4) + plan.tree.size + 8
        return -(-need // CAPACITY_STEP) * CAPACITY_STEP

    def _decoder(self, strategy: Strategy, prepared: _Prepared, total_len: int):
        need = total_len + prepared.plan.tree.size
        for decoder, run in prepared.decoders:
            if decoder.cache.capacity >= need:
                return decoder, run
        capacity = self.capacity_for(prepared.plan, total_len)
        start = time.perf_counter()
        with torch.inference_mode():
            cache = self._caches.get(capacity)
            if cache is None:
                cache = self._caches[capacity] = StaticKVCache(
                    self.model.config, capacity, self.model.device, self.model.dtype
                )
            decoder = FastDecoder(self.model, prepared.plan, cache, per_path=prepared.per_path)
            try:
                with use_attention(self.model, self.attention):
                    run = self._build(decoder)
            # capture/compile refused the model's forward (torch and CUDA errors)
            except RuntimeError as exc:
                reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
                if not self.fallback:
                    raise MedusaError(
                        f"the {strategy.name} step of this model cannot run under --engine"
                        f" {self.name} ({reason}); use --engine eager"
                    ) from None
                say(
                    f"note: the {strategy.name} step of this model cannot be captured ({reason});"
                    " decoding it with the eager loop"
                )
                self.fell_back.append(strategy.name)
                prepared.plan = None
                return None, None
        seconds = time.perf_counter() - start
        self.setup_seconds += seconds
        prepared.decoders.append((decoder, run))
        prepared.decoders.sort(key=lambda item: item[0].cache.capacity)
        if self.capture and not self.quiet:
            built = "compiled and captured" if self.compile else "captured"
            say(
                f"engine {self.name}: {built} the {strategy.name} step ({prepared.plan.tree.size}"
                f" draft nodes, {capacity}-slot cache) in {seconds:.2f} s (not timed)"
            )
        return decoder, run

    def _build(self, decoder: FastDecoder) -> Callable[[], None]:
        step = self.compiled(decoder.step)
        if not self.capture:
            return step
        return capture_graph(decoder, step)

    def compiled(self, fn: Callable) -> Callable:
        """``fn`` through ``torch.compile`` with this engine's inductor options, or ``fn`` itself
        without compile."""
        if not self.compile:
            return fn
        return torch.compile(fn, dynamic=False, options=self.compile_options or None)

    def prefill_for(self, decoder: FastDecoder) -> "Prefill":
        if id(decoder) not in self._prefills:
            self._prefills[id(decoder)] = Prefill(decoder, self.capture, self.attention)
        return self._prefills[id(decoder)]

    def _batch(self, strategy: Strategy, prepared: _Prepared, total_len: int, rows: int):
        """The batched step for ``rows`` rows on a cache that fits ``total_len`` tokens per row,
        built (captured) once, beside the one-row decoder whose prefill fills its rows."""
        if prepared.plan is None:
            raise MedusaError(
                f"the {strategy.name} strategy has no fast-engine step, so it decodes one row at a"
                " time: drop --batch-size"
            )
        row, _ = self._decoder(strategy, prepared, total_len)
        if row is None:
            raise MedusaError(
                f"the {strategy.name} step of this model runs in the eager loop, one row at a"
                " time: drop --batch-size"
            )
        key = (rows, row.cache.capacity)
        if key in prepared.batches:
            return prepared.batches[key]
        if row.context:
            raise MedusaError(
                "a drafter that keeps its own context decodes one row at a time: drop --batch-size"
            )
        start = time.perf_counter()
        with torch.inference_mode():
            cache = StaticKVCache(self.model.config, row.cache.capacity, self.model.device,
                                  self.model.dtype, batch=rows)
            batch = BatchDecoder(self.model, prepared.plan, cache, row)
            step = self.compiled(batch.step)
            try:
                with use_attention(self.model, self.attention):
                    run = (capture_run(step, self.model.device, reset=batch.reset_for_capture)
                           if self.capture else step)
            except RuntimeError as exc:
                reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
                raise MedusaError(
                    f"the batched {strategy.name} step of this model cannot run under --engine"
                    f" {self.name} ({reason}); drop --batch-size"
                ) from None
        seconds = time.perf_counter() - start
        self.setup_seconds += seconds
        if self.capture and not self.quiet:
            say(f"engine {self.name}: captured the {strategy.name} step for {rows} rows"
                f" ({prepared.plan.tree.size} draft nodes each, {row.cache.capacity}-slot cache)"
                f" in {seconds:.2f} s (not timed)")
        prepared.batches[key] = batch, run
        return batch, run

    def generate_batch(self, strategy, prompts, max_new_tokens, stop_ids, batch_size):
        """Rows decode together (:mod:`medusa.decoding.batch_loop`); batch size 1 is the one-row
        loop."""
        if batch_size == 1 or not prompts:
            yield from super().generate_batch(strategy, prompts, max_new_tokens, stop_ids, 1)
            return
        prepared = self._plan(strategy)
        longest = max(map(len, prompts))
        batch, run = self._batch(strategy, prepared, longest + max_new_tokens, batch_size)
        prefill = self.prefill_for(batch.row) if self.capture_prefill else None
        before = 0.0 if prefill is None else prefill.setup_seconds
        with use_attention(self.model, self.attention) if not self.capture else nullcontext():
            yield from decode_batch(batch, strategy, prompts, max_new_tokens, stop_ids, run,
                                    prefill)
        if prefill is not None:
            self.setup_seconds += prefill.setup_seconds - before

    def prepare(self, strategy, max_prompt_len, max_new_tokens, batch_size: int = 1):
        prepared = self._plan(strategy)
        if prepared.plan is None:
            return
        if batch_size > 1:
            self._batch(strategy, prepared, max_prompt_len + max_new_tokens, batch_size)
        decoder, _ = self._decoder(strategy, prepared, max_prompt_len + max_new_tokens)
        if decoder is not None and self.capture and self.capture_prefill:
            prefill = self.prefill_for(decoder)
            start = time.perf_counter()
            with torch.inference_mode():
                buckets = prefill.capture_upto(max_prompt_len)
            seconds = time.perf_counter() - start
            self.setup_seconds += seconds
            if buckets and not self.quiet:
                say(f"engine {self.name}: captured the prefill for {len(buckets)} prompt lengths "
                    f"({buckets[0]}–{buckets[-1]} tokens) in {seconds:.2f} s (not timed)")

    def generate(self, strategy, prompt_ids, max_new_tokens, stop_ids):
        prepared = self._plan(strategy)
        decoder = run = None
        if prepared.plan is not None:
            decoder, run = self._decoder(strategy, prepared, len(prompt_ids) + max_new_tokens)
        if decoder is None:  # no device tensors for this strategy, or its step could not be built
            return generate(self.model, strategy, prompt_ids, max_new_tokens, stop_ids)
        # the prompt runs eagerly (and so do the steps without capture)
        if not self.capture_prefill:
            with use_attention(self.model, self.attention):
                return generate_fast(decoder, strategy, prompt_ids, max_new_tokens, stop_ids, run)
        prefill = self.prefill_for(decoder)
        before = prefill.setup_seconds
        # replayed graphs hold their attention already: the switch (two module walks) is kept off
        # the timed path
        with use_attention(self.model, self.attention) if not self.capture else nullcontext():
            result = generate_fast(
                decoder, strategy, prompt_ids, max_new_tokens, stop_ids, run, prefill
            )
        # a bucket captured on first use (not prepared)
        self.setup_seconds += prefill.setup_seconds - before
        return result


class Prefill:
    """The prompt's forward padded to a few fixed lengths
    (:func:`~medusa.decoding.fast_loop.prefill_bucket`), each captured once as a CUDA graph when
    ``capture`` (else run eagerly at the padded length: the same arithmetic, which the CPU tests
    check). Uncaptured, a prefill launches every kernel of the model from Python, which cost about a
    quarter of a short decode on the embedded model."""

    def __init__(self, decoder: FastDecoder, capture: bool, attention: str = "model") -> None:
        self.decoder, self.capture, self.attention = decoder, capture, attention
        self.graphs: dict[int, Callable[[], None]] = {}
        self.setup_seconds = 0.0

    def capture_upto(self, max_prompt_len: int) -> list[int]:
        """Capture every bucket a prompt of up to ``max_prompt_len`` tokens needs; returns the
        buckets."""
        buckets = prefill_buckets(max_prompt_len, self.decoder.cache.capacity)
        for bucket in buckets:
            self._graph(bucket)
        return [b for b in buckets if b in self.graphs]

    def _graph(self, bucket: int) -> None:
        """Capture ``bucket`` once; a refused capture (the step was captured, so rare) leaves
        prefills eager."""
        if bucket in self.graphs or not self.capture:
            return
        start = time.perf_counter()
        decoder = self.decoder
        decoder.stage([0])  # the graph reads the whole bucket; what it holds does not matter here
        try:
            with use_attention(decoder.model, self.attention):
                self.graphs[bucket] = capture_run(
                    lambda: decoder.prefill_padded(bucket), decoder.committed.device
                )
        except RuntimeError as exc:
            self.capture = False
            say(f"note: the prefill cannot be captured ({type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0][:160]}); running it uncaptured")
        self.setup_seconds += time.perf_counter() - start

    def __call__(self, prompt_ids: list[int]) -> None:
        decoder = self.decoder
        n = len(prompt_ids)
        bucket = prefill_bucket(n, decoder.cache.capacity)
        self._graph(bucket)  # before staging: a capture stages a prompt of its own
        decoder.stage(prompt_ids)
        if bucket in self.graphs:
            self.graphs[bucket]()
        else:
            with use_attention(decoder.model, self.attention):
                decoder.prefill_padded(bucket)
        decoder.cache.length_hint = n


def capture_run(run: Callable[[], None], device: torch.device, warmup: int = 3,
             reset: Callable[[], None] = lambda: None) -> Callable[[], None]:
    """Record ``run`` as a CUDA graph after a few eager runs on a side stream (library handles,
    autotuning and compilation happen there, not inside the capture); ``reset`` restores the state
    each run starts from."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            reset()
            run()
    torch.cuda.current_stream(device).wait_stream(stream)
    reset()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    torch.cuda.synchronize(device)
    return graph.replay


def capture_graph(
    decoder: FastDecoder, step: Callable[[], None], warmup: int = 3
) -> Callable[[], None]:
    """Record ``step`` as a CUDA graph after a few eager runs on a side stream (library handles,
    autotuning and compilation happen there, not inside the capture). Each run starts from the same
    4-token prefix, so none writes past the cache; the state they leave is replaced by the next
    prefill."""
    decoder.prefill([0] * 4)
    return capture_run(step, decoder.committed.device, warmup, lambda: decoder.committed.fill_(4))


def resolve_engine(name: str, device: torch.device) -> str:
    """``auto``: graphs on CUDA, eager elsewhere."""
    if name not in ENGINES:
        raise MedusaError(f"unknown engine '{name}'; use one of: {', '.join(ENGINES)}")
    if name == "auto":
        return "graphs" if device.type == "cuda" else "eager"
    if name in ("graphs", "compiled") and device.type != "cuda":
        raise MedusaError(
            f"--engine {name} needs CUDA, and this run decodes on the CPU; use --engine eager or"
            " auto"
        )
    return name


def make_engine(model: MedusaModel, name: str = "auto", batch_size: int = 1) -> Engine:
    """``auto`` falls back to the eager loop, with a note, for a strategy whose step cannot be
    captured; with ``batch_size`` above 1 on a CPU it is the fast step uncaptured (rows decode
    together only there)."""
    resolved = resolve_engine(name, model.device)
    if resolved == "eager":
        if batch_size == 1:
            return EagerEngine(model)
        if name == "eager":
            raise MedusaError(
                f"--batch-size {batch_size} needs the fast engine; the eager loop decodes one row"
                " at a time: use --engine auto or drop --batch-size"
            )
        return StaticEngine(model, capture=False)
    return StaticEngine(
        model, capture=True, compile=resolved == "compiled", fallback=name == "auto"
    )
