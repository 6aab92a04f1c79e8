"""One evaluation run: data → model → decode every example (timed) → metrics → result files."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from medusa.console import quiet, say
from medusa.evaluation.data import Example, load_examples
from medusa.decoding import DecodeSettings, Strategy, make_strategy, strategy_class
from medusa.decoding.engine import Engine, make_engine, resolve_engine
from medusa.model.device_map import check_device_map, engine_for, model_devices
from medusa.runtime.distributed import (
    check_enough_examples,
    check_same,
    claimed_by_main,
    decode_shared,
    launch_record,
    on_main,
    processes,
    refuse_started,
)
from medusa.model.embedded import is_embedded
from medusa.errors import MedusaError
from medusa.model.loader import LoadSettings, load_model, resolve_device
from medusa.evaluation.metrics import SpeedStats, compute_all
from medusa.model import MedusaModel, stop_token_ids
from medusa.output_dir import claimed_folder
from medusa.evaluation.preflight import (
    check_head_count,
    check_table_heads,
    inspect_run,
    prompt_note,
    settle_prompt_style,
)
from medusa.evaluation.prompts import encode_prompt, encode_prompts, process_reference
from medusa.evaluation.results import (
    BASELINE,
    PREDICTIONS,
    PredictionLog,
    check_or_write_run,
    check_resume_before_loading,
    check_same_rows,
    device_description,
    git_commit,
    library_versions,
    weights_digest,
    write_summary,
)
from medusa.evaluation.result_tables import (
    SUMMARY_CSV,
    add_speedups,
    config_row,
    write_summary_csv,
    write_table_csv,
)
from medusa.arg_types import settings_from_namespace
from medusa.settings import CPU_DEMO_TREE_SIZE, RunSettings

# a submission's warm-up prompt ("this sentence is only a warm-up")
WARMUP_SOURCE = "यह वाक्य केवल तैयारी के लिए है।"
LOG = "submission.log"  # a graded submission's own output (medusa/grading/isolation.py)


@dataclass
class Timer:
    """Wall time of a region, synchronising CUDA on both ends so queued kernels are counted."""

    device: torch.device

    def __enter__(self) -> "Timer":
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def check_heads(model: MedusaModel, settings: RunSettings, strategy: Strategy) -> None:
    check_head_count(model.num_heads, model.info.name, settings, strategy)
    vocab = model.lm_head.weight.shape[0]
    inner = getattr(strategy, "inner", strategy)
    if getattr(inner, "beam_width", 0) > vocab:
        raise MedusaError(
            f"--beam-width {inner.beam_width} is larger than the vocabulary ({vocab} tokens); "
            f"use at most {vocab}"
        )
    if getattr(inner, "is_course_reference", False) and model.context_drafter:
        raise MedusaError(
            "grading multi-head compares with the course reference, which reads each head as "
            "medusa_head[k](hidden) returns it, and a context drafter has no answer without its "
            "context: grade with --acceptance greedy (our lossless multi-head)"
        )
    if getattr(inner, "max_rank", 0) > vocab:
        raise MedusaError(
            f"the tree asks for rank {inner.max_rank} of a {vocab}-token vocabulary; use another"
            " --tree"
        )


def default_output_dir(settings: RunSettings) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    # a user's model is not "embedded"
    own = settings.setup == "embedded" and not is_embedded(settings.model_name)
    return (
        Path("results") / f"{'own' if own else settings.setup}-{settings.decoding_strategy}-{stamp}"
    )


# trees above this size get a --tree-size hint on a CPU (docs/experiments/cpu-trees.md)
CPU_TREE_HINT = 7
# --tree value that asks for the built-in tree even when the model ships one
BUILTIN_TREE = "builtin"


def shipped_drafter(settings: RunSettings) -> bool:
    """The model decodes with a drafter that ships with this package (the embedded default's or
    faithful's)."""
    return (
        is_embedded(settings.model_name)
        and not settings.bare_embedded
        and settings.medusa_heads is None
        and settings.adapter is None
    )


def cpu_tree_note(nodes: int, shipped: bool) -> str:
    if shipped:
        return (
            f"note: the tree has {nodes} nodes and a CPU pays for each; --tree-size"
            f" {CPU_DEMO_TREE_SIZE} decodes faster here (with the shipped drafter about 1.1x"
            " single-head on 2 cores; larger trees lose to single-head)"
        )
    return (
        f"note: the tree has {nodes} nodes and a CPU pays for each; a small --tree-size (3 to 15)"
        " may decode faster here"
    )


def decode_settings(settings: RunSettings, model: MedusaModel | None = None,
                    shipped_tree: str | None = None) -> DecodeSettings:
    """``--tree`` unset means the tree calibrated for the model's heads where one ships with them
    (the embedded default), else the built-in tree for ``--use-no-medusa-heads``; ``--tree builtin``
    forces the latter. ``shipped_tree`` is that tree as found before loading
    (:mod:`medusa.model.checkpoint_facts`)."""
    tree = settings.tree_file
    if tree == BUILTIN_TREE:
        tree = None
    elif tree is None and settings.decoding_strategy == "tree":
        tree = model.info.extra.get("tree") if model is not None else shipped_tree
    course = (bool(settings.generator) and settings.decoding_strategy == "multi-head"
              and settings.acceptance == "rescore" and not settings.adaptive)
    # the fields of the same names (beam width, acceptance, its numbers, tree size ...) as they are
    return settings_from_namespace(DecodeSettings, settings, strategy=settings.decoding_strategy,
                                   num_heads=settings.use_no_medusa_heads, tree_file=tree,
                                   course_reference=course)


def load_settings(settings: RunSettings) -> LoadSettings:
    return settings.load_settings()


def decode_examples(
    model: MedusaModel,
    strategy: Strategy,
    examples: list[Example],
    settings: RunSettings,
    log: PredictionLog,
    stops: set[int],
    engine: Engine,
    student=None,
) -> list[dict]:
    """Decode every example not yet in ``log`` (timed, one synced JSON line each); all rows in
    dataset order.

    ``student`` (a :class:`~medusa.grading.student.StudentDecoder`) replaces our loop when grading a
    submission. The ``engine`` is prepared (CUDA graphs captured) for the longest prompt before the
    warm-up: never timed.
    """
    tokenizer = model.tokenizer
    check_same_rows(log, examples)
    todo = [ex for ex in examples if ex.index not in log.done]
    prompts = dict(
        zip(
            [ex.index for ex in todo],
            encode_prompts(
                tokenizer,
                [ex.source for ex in todo],
                settings.src_lang,
                settings.tgt_lang,
                settings.prompt_style,
                settings.max_input_len,
            ),
        )
    )
    if student is None and todo:
        longest = max(len(ids) for ids in prompts.values())
        engine.prepare(strategy, longest, settings.max_output_len, settings.batch_size)
    if student is not None:
        student.process.set_log(log.path.parent / LOG)
        warn_eos_in_prompt(tokenizer, prompts.values(), student.eos_id, settings.prompt_style)
        try:
            return _decode_rows(
                model, strategy, examples, todo, prompts, settings, log, stops, engine, student
            )
        finally:
            student.stop()  # the submission's processes end before any file is written again
    return _decode_rows(
        model, strategy, examples, todo, prompts, settings, log, stops, engine, student
    )


def warn_eos_in_prompt(tokenizer, prompts, eos_id: int, style: str) -> None:
    """Say once when the prompt holds the EOS id a submission is given: code that looks for EOS
    anywhere in its sequence stops at once here, where the course's plain-text prompt has none."""
    if any(eos_id in ids for ids in prompts):
        token = tokenizer.convert_ids_to_tokens(eos_id)
        say(
            f"warning: the {style} prompt holds the EOS id {eos_id} ({token}) handed to the"
            " submission; code that searches its whole sequence for EOS stops early on it (the"
            " course's prompt has none): grade course submissions with --prompt-style seed"
        )


def _decode_rows(
    model: MedusaModel,
    strategy: Strategy,
    examples: list[Example],
    todo: list[Example],
    prompts: dict[int, list[int]],
    settings: RunSettings,
    log: PredictionLog,
    stops: set[int],
    engine: Engine,
    student=None,
) -> list[dict]:
    tokenizer = model.tokenizer

    def decode(ids: list[int], max_len: int):
        if student is not None:
            return student(ids, stops, model.device)
        return engine.generate(strategy, ids, max_len, stops)

    def prompt_of(source: str) -> list[int]:
        return encode_prompt(
            tokenizer,
            source,
            settings.src_lang,
            settings.tgt_lang,
            settings.prompt_style,
            settings.max_input_len,
        )

    if settings.warmup and (student is not None or settings.batch_size == 1):
        # first-call costs (allocations, kernel selection) stay out of the timings
        first = prompts[todo[0].index] if todo else prompt_of(examples[0].source)
        # never a timed prompt: a submission that memoises its answers gains nothing
        if student is not None:
            first = prompt_of(WARMUP_SOURCE)
        warm = decode(first, min(8, settings.max_output_len))
        # a submission's failure here is reported again on its example
        if getattr(warm, "error", None):
            say(
                f"warm-up: the submission failed ({warm.error}"
                + (f", {warm.error_at}" if warm.error_at else "")
                + "); going on"
            )
    if len(todo) < len(examples):
        say(f"resuming: {len(examples) - len(todo)} examples already in {log.path}")
    if student is None and settings.batch_size > 1:
        _decode_batched(model, strategy, todo, prompts, settings, log, stops, engine)
        return [log.done[ex.index] for ex in examples]
    from tqdm.auto import tqdm

    bar = tqdm(
        todo,
        desc="submission" if student is not None else strategy.name,
        unit="ex",
        dynamic_ncols=True,
        disable=quiet(),
    )
    for ex in bar:
        ids = prompts[ex.index]
        with Timer(model.device) as timer:
            result = decode(ids, settings.max_output_len)
        row = log_row(tokenizer, ex, ids, result, timer.seconds, settings.max_output_len,
                      result.row_fields() if student is not None else {})
        log.write(row)
        if student is not None and result.error:
            beside_bar(bar, f"[{ex.index}] failed: {result.error}"
                       + (f" ({result.error_at})" if result.error_at else ""))
        elif settings.debug:
            say_row(bar, row)
    return [log.done[ex.index] for ex in examples]


def log_row(tokenizer, ex: Example, ids: list[int], result, seconds: float, max_output_len: int,
            extra: dict) -> dict:
    """One example's line in predictions.jsonl."""
    reference = (process_reference(tokenizer, ex.target, max_output_len)
                 if ex.target is not None else None)
    return {
        "index": ex.index,
        "source": ex.source,
        "target": ex.target,
        "reference": reference,
        "prediction": tokenizer.decode(result.tokens, skip_special_tokens=True),
        "prompt_tokens": len(ids),
        "tokens": len(result.tokens),
        "seconds": seconds,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "accepted_per_step": result.accepted_per_step,
        "drafted_depth_per_step": result.drafted_depth_per_step,
        "token_ids": result.tokens,
        **extra,
    }


def say_row(bar, row: dict) -> None:
    """--debug: the row's prediction, reference and counts beside the progress bar."""
    beside_bar(
        bar,
        f"[{row['index']}] {row['prediction']!r}  (ref: {row['reference']!r}, {row['tokens']}"
        f" tokens, {row['steps']} steps, {row['seconds']:.3f} s)",
    )


def _decode_batched(model: MedusaModel, strategy: Strategy, todo: list[Example],
                    prompts: dict[int, list[int]], settings: RunSettings, log: PredictionLog,
                    stops: set[int], engine: Engine) -> None:
    """``--batch-size`` rows at a time (:meth:`Engine.generate_batch`): each row is logged as it
    finishes (the file is put back in dataset order after the pass), with ``seconds`` its share of
    the wall time (each step's time split among the rows it advanced, plus its own prefill), so
    RTF and tokens/s sum to the batch's throughput, and ``latency_seconds`` its own admission to
    finish."""
    from tqdm.auto import tqdm

    tokenizer, batch = model.tokenizer, settings.batch_size
    if settings.warmup and todo:  # the batched step's first-call costs stay out of the timings
        list(engine.generate_batch(strategy, [prompts[todo[0].index]],
                                   min(8, settings.max_output_len), stops, batch))
    bar = tqdm(total=len(todo), desc=f"{strategy.name} ×{batch}", unit="ex",
               dynamic_ncols=True, disable=quiet())
    with bar:
        for done in engine.generate_batch(strategy, [prompts[ex.index] for ex in todo],
                                          settings.max_output_len, stops, batch):
            ex = todo[done.index]
            row = log_row(tokenizer, ex, prompts[ex.index], done.result, done.seconds,
                          settings.max_output_len,
                          {"latency_seconds": done.latency, "batch_size": batch})
            log.write(row)
            bar.update()
            if settings.debug:
                say_row(bar, row)


def beside_bar(bar, message: str) -> None:
    """A message on a line of its own while a progress bar runs: on a terminal tqdm moves the bar
    below it; in a file (stderr redirected) the bar's line is ended first, since the bar redraws
    with carriage returns only."""
    if quiet():
        return
    if bar.disable or sys.stderr.isatty():
        bar.write(message, file=sys.stderr)
    else:
        sys.stderr.write(f"\n{message}\n")
        sys.stderr.flush()


def student_decoder(model: MedusaModel, settings: RunSettings, stops: set[int], process):
    """The submission's generator, constructed in its process with the course's arguments."""
    from medusa.grading.student import StudentDecoder

    eos = model.tokenizer.eos_token_id if model.tokenizer.eos_token_id is not None else min(stops)
    name = settings.generator.rsplit(":", 1)[-1]
    return StudentDecoder(
        process,
        name,
        settings.decoding_strategy,
        eos,
        settings.use_no_medusa_heads,
        settings.beam_width,
        settings.max_output_len,
        model.vocab_size,
        settings.timeout,
    )


def score_rows(rows: list[dict], tgt_lang: str) -> dict:
    """Every metric of a pass's rows: BLEU-1/ROUGE on the seed's processed references,
    sacreBLEU/chrF on the raw text, so any two passes of one run are scored alike."""
    return compute_all([r["prediction"] for r in rows], [r["reference"] for r in rows], tgt_lang,
                       raw_references=[r["target"] for r in rows])


def speed_stats(rows: list[dict]) -> dict:
    """RTF, tokens/s, τ (mean tokens accepted per decoding step) and each head's acceptance rate;
    batched rows (``--batch-size``) also give latency percentiles. A batched row's ``seconds`` is
    its share of the wall time, so RTF and tokens/s are the batch's throughput there.

    Examples a submission failed (``error`` set) are left out: their time is not generation time; so
    are those whose generated ids cannot be told (an output that starts with part of the prompt). A
    submission's tokens are the ids it generated (returned ids minus an echoed prompt), not the
    scored ones.
    """
    from medusa.grading.report import generated, timed_rows

    rows = timed_rows(rows)
    speed = SpeedStats(
        seconds=sum(r["seconds"] for r in rows), tokens=sum(generated(r) for r in rows)
    )
    steps = sum(r["steps"] for r in rows)
    accepted = [a for r in rows for a in r.get("accepted_per_step", [])]
    drafted = [d for r in rows for d in r.get("drafted_depth_per_step", [])]
    deepest = max(drafted, default=1)
    head_rates = []
    for h in range(deepest - 1):  # head h is accepted when a step keeps at least h + 2 tokens
        tried = [a for a, d in zip(accepted, drafted) if d >= h + 2]
        head_rates.append(sum(a >= h + 2 for a in tried) / len(tried) if tried else math.nan)
    latency = sorted(r["latency_seconds"] for r in rows if "latency_seconds" in r)
    last = len(latency) - 1
    batched = {  # --batch-size: each row's own admission-to-finish time
        f"latency_seconds_p{q}": latency[min(last, round(q / 100 * last))] for q in (50, 90, 99)
    } if latency else {}
    return {
        **batched,
        "rtf": speed.rtf,
        "tokens_per_second": speed.tokens_per_second,
        "generation_seconds": speed.seconds,
        "generated_tokens": speed.tokens,
        "decoding_steps": steps,
        "tokens_per_step": speed.tokens / steps if steps else math.nan,
        "head_acceptance": head_rates,
        # how many heads each step drafted with (varies under --adaptive and near the length limit)
        "heads_used_histogram": {str(d - 1): drafted.count(d) for d in sorted(set(drafted))},
    }


def run(settings: RunSettings, model: MedusaModel | None = None, engine: Engine | None = None,
        generator=None) -> dict:
    """Evaluate one strategy (and optionally single-head beside it) on one dataset; writes and
    returns the summary.

    ``model`` and ``engine`` let several runs share one loaded model and its captured graphs (the
    assignment table), ``generator`` the submission's process their preflight started
    (:mod:`medusa.grading.isolation`). The output folder is checked and locked before any work
    (:mod:`medusa.output_dir`).
    """
    if settings.resume and not settings.output_dir:
        raise MedusaError("--resume needs the --output-dir of the run to continue")
    from dataclasses import replace

    # a data-parallel launch: one folder (the main process's name) and its lock for all
    group = processes()
    settings = replace(
        settings,
        output_dir=settings.output_dir or group.broadcast(str(default_output_dir(settings))),
    )
    with claimed_by_main(Path(settings.output_dir), claimed_folder):
        if not settings.resume:
            on_main(lambda: refuse_started(Path(settings.output_dir) / PREDICTIONS))
        else:
            on_main(
                lambda: check_resume_before_loading(
                    Path(settings.output_dir), settings.public_dict()
                )
            )
        return _run(settings, model, engine, generator)


def start_generator(settings: RunSettings, facts):
    """The ``--generator`` submission's process, for the preflight (:mod:`medusa.grading.launch`).
    """
    from medusa.grading.launch import start_submission

    return start_submission(settings, facts)


@dataclass
class Loaded:
    """One run's model, engine and strategy, once the checks before loading passed and the prompt
    style settled."""

    settings: RunSettings
    model: MedusaModel
    engine: Engine
    decoding: DecodeSettings
    strategy: Strategy
    stops: set[int]
    setup_before: float  # the engine's capture seconds before this run (a shared engine has some)

    @property
    def paths(self):
        """The static tree's rank paths, or None for every other strategy."""
        return getattr(getattr(self.strategy, "inner", self.strategy), "paths", None)


def _run(settings: RunSettings, model: MedusaModel | None = None, engine: Engine | None = None,
         generator=None) -> dict:
    """Rows, checks, model, the passes decoded, summary and files: one function per step."""
    torch.manual_seed(settings.seed)
    examples, data_info = _rows(settings)
    asked_prompt = settings.prompt_style
    # the table checks before its one load
    checked = inspect_run(settings, start_generator) if model is None else None
    with closing(checked.generator if checked is not None else None):
        run = _load(settings, model, engine, checked, asked_prompt)
        _say_loaded(run, examples, data_info)
        settings = run.settings
        out_dir = Path(settings.output_dir) if settings.output_dir else default_output_dir(settings)
        out_dir.mkdir(parents=True, exist_ok=True)
        tree_used = _record_run(run, out_dir)
        process = checked.generator if checked is not None else generator
        runs, student = _passes(run, out_dir, process)
        rows_of = _decode_passes(run, runs, student, examples, out_dir)
        launch = launch_record(model_devices(run.model))
        if not processes().is_main:  # the main process scores the merged rows, writes the summary
            return {}
        summary = _summary(run, rows_of, data_info, tree_used, launch, out_dir)
        return _write_results(run, summary, rows_of, runs, student, out_dir)


def _rows(settings: RunSettings) -> tuple[list[Example], object]:
    """The rows to decode and their data description, the same in every process of a launch."""
    examples, data_info = load_examples(settings.dataset, settings.src_lang, settings.tgt_lang,
                                        settings.num_examples, settings.hf_token, settings.split)
    if not examples:
        raise MedusaError(f"{settings.dataset} has no rows to evaluate")
    check_device_map(settings, processes().count)
    check_same({**settings.public_dict(), "examples": [ex.index for ex in examples],
                "data": vars(data_info)})
    check_enough_examples(len(examples))
    return examples, data_info


def check_batch(settings: RunSettings) -> None:
    """--batch-size above 1 needs our fast engine: refused before anything loads."""
    if settings.batch_size == 1:
        return
    if settings.generator:
        raise MedusaError(f"--generator decodes a submission one example at a time: drop"
                          f" --batch-size {settings.batch_size}")
    if settings.engine == "eager":
        raise MedusaError(f"--batch-size {settings.batch_size} needs the fast engine; the eager"
                          " loop decodes one row at a time: use --engine auto or drop --batch-size")


def _load(settings: RunSettings, model: MedusaModel | None, engine: Engine | None, checked,
          asked_prompt: str) -> Loaded:
    """Bad strategy settings, head counts and engines fail on the checkpoint's facts before the
    model loads (a model handed in was checked by its table); then the model, the prompt style
    its tokenizer settles, the engine and the strategy."""
    if checked is not None:
        settings = checked.settings
    check_batch(settings)
    early = make_strategy(decode_settings(settings, model, checked.facts.tree if checked else None))
    if checked is not None:
        if checked.facts.num_heads is not None:
            check_head_count(checked.facts.num_heads, settings.model_name, settings, early)
        # --engine graphs without CUDA: fail now
        resolve_engine(settings.engine, resolve_device(settings.device))
    model = model or load_model(load_settings(settings))
    settings = settle_prompt_style(settings, model.tokenizer, model.info.base)
    if checked is not None:
        say(prompt_note(settings.prompt_style, asked_prompt == "auto", model.info.base))
    engine = engine or make_engine(model, engine_for(model, settings.engine),
                                   settings.batch_size)
    setup_before = engine.setup_seconds
    decoding = decode_settings(settings, model)
    strategy = make_strategy(decoding)
    check_heads(model, settings, strategy)
    stops = stop_token_ids(model.tokenizer, model.base_model)
    return Loaded(settings, model, engine, decoding, strategy, stops, setup_before)


def _say_loaded(run: Loaded, examples: list[Example], data_info) -> None:
    """The model and data lines, and on a CPU a hint when the tree is large."""
    model, settings, extra = run.model, run.settings, run.model.info.extra
    heads = (f" + heads {model.info.heads} ({model.info.head_format}, {model.num_heads} heads)"
             if model.info.heads else " (no Medusa heads)")
    say(f"model: {model.info.base}{heads}; {extra['dtype']} on {extra['device']}, "
        f"engine {run.engine.name}")
    say(f"data: {data_info.name} ({data_info.kind}), {len(examples)} examples, "
        f"{settings.src_lang} → {settings.tgt_lang}"
        + ("" if data_info.has_references else " (no references: speed only)"))
    paths = run.paths
    if paths and len(paths) > CPU_TREE_HINT and extra["device"] == "cpu" and not settings.generator:
        say(cpu_tree_note(len(paths), shipped_drafter(settings)))


def _record_run(run: Loaded, out_dir: Path) -> str | None:
    """``run.json``: what the run decodes with (every process loaded the same model, heads, dtype
    and tree), which ``--resume`` must match; returns the tree file the static tree came from."""
    settings, model = run.settings, run.model
    static = settings.decoding_strategy == "tree" and not settings.dynamic_tree
    tree_used = run.decoding.tree_file if static else None
    fingerprint = {**settings.public_dict(), "tree_used": tree_used, "engine_used": run.engine.name,
                   "base": model.info.base, "heads": model.info.heads, **model.info.extra,
                   "weights": {"base": weights_digest(model.base_model),
                               "heads": weights_digest(model.heads)}}
    check_same(fingerprint)
    on_main(lambda: check_or_write_run(out_dir, fingerprint, settings.resume))
    return tree_used


def _passes(run: Loaded, out_dir: Path, process) -> tuple[list, object]:
    """The passes to decode (single-head first where it runs beside the strategy; a graded
    submission first, then ours), and the submission's decoder, in ``process``, when grading."""
    from medusa.grading.report import Pass, grading_runs

    settings, strategy = run.settings, run.strategy
    runs = [Pass("main", strategy, PREDICTIONS)]
    if settings.compare_single_head and strategy.name != "single-head":
        d = run.decoding  # sampled, single-head samples the same distribution
        single = DecodeSettings(temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
                                seed=d.seed)
        runs.insert(0, Pass("baseline", make_strategy(single), BASELINE))
    if not settings.generator:
        return runs, None
    process.set_log(out_dir / LOG)  # the constructor's output goes with this run's rows
    student = student_decoder(run.model, settings, run.stops, process)
    runs = grading_runs(strategy, run.decoding, settings.compare_single_head,
                        course=not run.model.context_drafter)  # the submission first
    if settings.compare_single_head and strategy.name == "single-head":
        say("note: --compare-single-head: ours is single-head already, and the grading report "
            "compares the submission with it")
    return runs, student


def _decode_passes(run: Loaded, runs: list, student, examples: list[Example],
                   out_dir: Path) -> dict[str, list[dict]]:
    """Each pass's rows, shared out over the processes; after a submission that completed
    nothing, no other pass."""
    from medusa.grading.report import succeeded

    rows_of: dict[str, list[dict]] = {}
    for run_pass in runs:
        if student is not None and run_pass.role != "main" and not succeeded(rows_of["main"]):
            say(f"skipping the {run_pass.name or run_pass.role} pass: the submission completed "
                "no example")
            continue
        rows_of[run_pass.role] = decode_shared(
            out_dir / run_pass.file, run.settings.resume, examples,
            lambda log, share: decode_examples(run.model, run_pass.strategy, share, run.settings,
                                               log, run.stops, run.engine,
                                               student if run_pass.role == "main" else None))
    return rows_of


def _summary(run: Loaded, rows_of: dict[str, list[dict]], data_info, tree_used: str | None,
             launch: dict, out_dir: Path) -> dict:
    """``summary.json``'s content: scores, speed, settings, model, data, device, libraries, and
    single-head's numbers beside the strategy's where it ran."""
    settings, model, rows, paths = run.settings, run.model, rows_of["main"], run.paths
    metrics = score_rows(rows, settings.tgt_lang) if data_info.has_references else {}
    speed = speed_stats(rows)
    if settings.acceptance == "rescore":  # candidates are accepted whole: the rates would read 1.0
        speed["head_acceptance"] = [None] * len(speed["head_acceptance"])
    summary = {
        "metrics": metrics,
        "speed": speed,
        "examples": len(rows),
        "settings": settings.public_dict(),
        "tree_used": tree_used,
        "tree_nodes": len(paths) if paths and settings.decoding_strategy == "tree" else None,
        "engine": run.engine.describe(run.setup_before),
        "model": {"name": model.info.name, "base": model.info.base, "heads": model.info.heads,
                  "head_format": model.info.head_format, "num_heads": model.num_heads,
                  **model.info.extra},
        "dataset": vars(data_info),
        "device": device_description(model.device),
        **launch,
        "libraries": library_versions(),
        "git_commit": git_commit(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output_dir": str(out_dir),
    }
    if "baseline" in rows_of:
        add_baseline(summary, rows, rows_of["baseline"], settings.tgt_lang)
        if run.decoding.acceptance == "greedy" and not run.decoding.temperature:
            summary["divergence"] = _divergence(run, rows, rows_of["baseline"])
    return summary


def _divergence(run: Loaded, rows: list[dict], baseline: list[dict]) -> dict:
    """Where lossless outputs part from single-head's, with the base model's logit margin there
    (:mod:`medusa.evaluation.divergence`)."""
    from medusa.evaluation import divergence

    settings = run.settings
    differ = [row for row, base in zip(rows, baseline) if row["token_ids"] != base["token_ids"]]
    ids = encode_prompts(run.model.tokenizer, [row["source"] for row in differ], settings.src_lang,
                         settings.tgt_lang, settings.prompt_style, settings.max_input_len)
    found = divergence.divergences(run.model, {row["index"]: i for row, i in zip(differ, ids)},
                                   rows, baseline)
    return {**divergence.report(found), "line": divergence.describe(found)}


def add_baseline(summary: dict, rows: list[dict], baseline: list[dict], tgt_lang: str) -> None:
    """Single-head's speed and scores beside the strategy's, the speedup, the identical outputs."""
    base = speed_stats(baseline)
    summary["baseline_single_head"] = base
    if summary["metrics"]:  # scored as the strategy's rows, so both blocks read side by side
        summary["baseline_metrics"] = score_rows(baseline, tgt_lang)
    speedup = summary["speed"]["tokens_per_second"] / base["tokens_per_second"]
    summary["speedup_vs_single_head"] = speedup
    summary["identical_to_single_head"] = sum(a["token_ids"] == b["token_ids"]
                                              for a, b in zip(rows, baseline))


def _write_results(run: Loaded, summary: dict, rows_of: dict[str, list[dict]], runs: list,
                   student, out_dir: Path) -> dict:
    """The grading report when grading, ``summary.json``, ``summary.csv`` and the plots; the
    summary printed."""
    report_path = None
    out_dir.mkdir(parents=True, exist_ok=True)  # removed during the run: made again
    if student is not None:
        report_path = _grade(run.settings, summary, rows_of, runs, student.eos_id, out_dir)
    write_summary(out_dir, summary)
    write_summary_csv(out_dir, summary)
    from medusa.evaluation.plots import run_plots

    plots = run_plots(out_dir, config_row(summary))
    print_summary(summary)
    if report_path is not None:
        from medusa.grading.report import print_report

        print_report(summary["grading"], report_path)
    say(f"results: {out_dir / PREDICTIONS}, {out_dir / 'summary.json'}, {out_dir / SUMMARY_CSV}"
        + "".join(f", {p}" for p in plots))
    return summary


def _grade(settings: RunSettings, summary: dict, rows_of: dict[str, list[dict]], runs: list,
           eos_id: int, out_dir: Path) -> Path:
    """The submission's rows against ours (scored alike), into the summary and ``grading.json``."""
    from medusa.grading.report import compare, grading_report, succeeded, write_report

    rows, metrics = rows_of["main"], summary["metrics"]
    summary["failed_examples"] = len(rows) - len(succeeded(rows))
    references = []
    for run_pass in runs:
        ref_rows = rows_of.get(run_pass.role)
        if run_pass.role not in ("ours", "second") or ref_rows is None:
            continue
        # scored exactly as the submission's rows
        ref_metrics = score_rows(ref_rows, settings.tgt_lang) if metrics else {}
        references.append(compare(rows, ref_rows, metrics, ref_metrics, run_pass))
    summary["grading"] = grading_report(rows, references, settings, eos_id)
    return write_report(out_dir, summary["grading"])


class Terminated(SystemExit):
    """SIGTERM or SIGHUP while a submission's process runs: unwound like an error, so it is killed
    first."""


def _terminated(signum: int, frame) -> None:
    raise Terminated(128 + signum)


@contextmanager
def closing(process) -> Iterator[None]:
    """A submission's process started by this run's preflight ends with the run, however it ends:
    errors, Ctrl-C, and SIGTERM / SIGHUP (turned into an exit that runs this cleanup; SIGKILL is
    left to the child's death signal)."""
    import signal
    import threading

    handlers = {}
    if process is not None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                handlers[sig] = signal.signal(sig, _terminated)
    try:
        yield
    except Terminated as exc:
        say(
            f"stopped by signal {exc.code - 128}: finished examples are saved; rerun with --resume"
            " and the same --output-dir to continue"
        )
        raise
    finally:
        if process is not None:
            process.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def print_summary(summary: dict) -> None:
    """The seed's lines first (BLEU, ROUGE-1/2/LCS, RTF), then the standard scores and speed; with
    single-head run beside the strategy, its block comes first under its own heading, and the
    comparison last."""
    base = summary.get("baseline_single_head")
    if base is not None:
        print("single-head:")
        print_block(
            summary.get("baseline_metrics", {}), base, summary["examples"], summary["settings"]
        )
        print(f"{strategy_title(summary)}:")
    print_block(summary["metrics"], summary["speed"], summary["examples"], summary["settings"],
                summary.get("failed_examples"))
    if "speedup_vs_single_head" in summary:
        s = summary["speed"]
        print(
            f"speedup vs single-head: {summary['speedup_vs_single_head']:.3f}x"
            f" ({s['tokens_per_second']:.2f} vs {base['tokens_per_second']:.2f} tokens/s);"
            f" identical outputs: {summary['identical_to_single_head']}/{summary['examples']}"
            + (" (sampled: equal in distribution, not token by token)"
               if summary["settings"].get("temperature") else "")
        )
    if "divergence" in summary:
        print(summary["divergence"]["line"])
    sys.stdout.flush()


def strategy_title(summary: dict) -> str:
    """The strategy's heading beside single-head: its name, the tree's node count and the engine."""
    settings = summary["settings"]
    parts = [settings["decoding_strategy"]]
    parts += strategy_class(parts[0]).title_details(settings, summary)
    engine = summary.get("engine")
    name = engine.get("name") if isinstance(engine, dict) else engine
    return f"{parts[0]} ({', '.join(parts[1:] + ([f'engine {name}'] if name else []))})"


def print_block(m: dict, s: dict, examples: int, settings: dict, failed: int | None = None) -> None:
    """One run's scores and speed, the seed's lines first."""
    print(f"BLEU: {_fmt(m.get('bleu'))}")
    print(f"ROUGE-1: {_fmt(m.get('rouge1'))}")
    print(f"ROUGE-2: {_fmt(m.get('rouge2'))}")
    print(f"ROUGE-LCS: {_fmt(m.get('rougeL'))}")
    print(f"RTF: {_fmt(s['rtf'])}")
    if m:
        print(f"sacreBLEU: {m['sacrebleu']:.2f} ({m['sacrebleu_signature']})")
        print(f"chrF: {m['chrf']:.2f} ({m['chrf_signature']})")
    print(
        f"tokens/s: {_fmt2(s['tokens_per_second'])} ({s['generated_tokens']} tokens in"
        f" {s['generation_seconds']:.2f} s, {examples} examples)"
    )
    if "latency_seconds_p50" in s:
        print(f"batch: {settings.get('batch_size')} rows (tokens/s and RTF are the batch's"
              f" throughput); latency per example p50 {s['latency_seconds_p50']:.3f} s, p90"
              f" {s['latency_seconds_p90']:.3f} s, p99 {s['latency_seconds_p99']:.3f} s")
    if failed:
        print(
            f"failed examples: {failed}/{examples} (empty predictions in the scores; left out of"
            " the speed)"
        )
    if s["decoding_steps"]:
        print(f"tokens/step (tau): {s['tokens_per_step']:.3f} over {s['decoding_steps']} steps")
    else:  # a submission reports no steps
        print("tokens/step (tau): n/a")
    if s["head_acceptance"] and settings.get("acceptance") == "rescore":
        print(
            "head acceptance: n/a (rescore accepts whole candidates; `measure-acceptance` measures"
            " the heads)"
        )
    elif s["head_acceptance"]:
        print(
            "head acceptance: "
            + ", ".join(f"h{h + 1} {_fmt(r)}" for h, r in enumerate(s["head_acceptance"]))
        )
    if s["head_acceptance"]:
        print(
            "heads used per step: "
            + ", ".join(f"{k}: {v}" for k, v in s["heads_used_histogram"].items())
        )


TABLE_CONFIGS = [("single-head", None, None)] + [
    ("multi-head", w, s) for w in (2, 5, 10) for s in (2, 5)
]


def run_table(settings: RunSettings) -> list[dict]:
    """The course's results table: single-head, then multi-head for W ∈ {2, 5, 10} × S ∈ {2, 5}, one
    model load.

    Every row uses the chosen ``--acceptance`` rule (the course's own step 3 is ``--acceptance
    rescore``).
    """
    base_dir = Path(settings.output_dir or processes().broadcast(str(default_output_dir(settings))))
    with claimed_by_main(base_dir, claimed_folder):
        # each row's run checks too, but after the model loads
        for name, row in table_rows(settings, base_dir):
            if settings.resume:
                on_main(lambda: check_resume_before_loading(base_dir / name, row.public_dict()))
            else:
                on_main(lambda: refuse_started(base_dir / name / PREDICTIONS))
        return _run_table(settings, base_dir)


def table_rows(settings: RunSettings, base_dir: Path) -> list[tuple[str, RunSettings]]:
    """Each table row's name (``single-head``, then ``wW-sS``) and settings, writing to its own
    sub-folder."""
    from dataclasses import replace

    rows = []
    for strategy, width, heads in TABLE_CONFIGS:
        name = strategy_class(strategy).config_name(width, heads)
        rows.append(
            (
                name,
                replace(
                    settings,
                    decoding_strategy=strategy,
                    beam_width=width or settings.beam_width,
                    use_no_medusa_heads=heads or settings.use_no_medusa_heads,
                    output_dir=str(base_dir / name),
                    compare_single_head=False,
                ),
            )
        )
    return rows


def _run_table(settings: RunSettings, base_dir: Path) -> list[dict]:
    needed = max(h for _, _, h in TABLE_CONFIGS if h)
    asked_prompt = settings.prompt_style
    from dataclasses import replace

    # before loading: prompt style, the submission, the head count (a sandbox hides the whole
    # table's folder)
    checked = inspect_run(replace(settings, output_dir=str(base_dir)), start_generator)
    with closing(checked.generator):
        return _table_with(settings, base_dir, checked, asked_prompt, needed)


def _table_with(
    settings: RunSettings, base_dir: Path, checked, asked_prompt: str, needed: int
) -> list[dict]:
    settings = checked.settings
    check_batch(settings)
    if checked.facts.num_heads is not None:
        check_table_heads(checked.facts.num_heads, needed, settings.model_name)
    check_device_map(settings, processes().count)
    resolve_engine(settings.engine, resolve_device(settings.device))
    model = load_model(load_settings(settings))
    settings = settle_prompt_style(settings, model.tokenizer, model.info.base)
    say(prompt_note(settings.prompt_style, asked_prompt == "auto", model.info.base))
    # shared by the rows: each strategy is captured once
    engine = make_engine(model, engine_for(model, settings.engine), settings.batch_size)
    # refuse before spending time on the first rows
    check_table_heads(model.num_heads, needed, model.info.name)
    rows = []
    for name, row_settings in table_rows(settings, base_dir):
        say(f"— table row: {name}")
        summary = run(row_settings, model, engine, checked.generator)
        if summary:  # the other processes of a data-parallel launch write no table
            rows.append(config_row(summary, name))
    if not processes().is_main:
        return rows
    add_speedups(rows)  # against the table's own single-head row
    table = format_table(rows, settings.acceptance)
    (base_dir / "table.md").write_text(table + "\n", encoding="utf-8")
    write_table_csv(base_dir, rows)
    from medusa.evaluation.plots import table_plots

    plots = table_plots(base_dir, rows)
    print(table)
    say(
        f"table: {base_dir / 'table.md'}, {base_dir / 'table.csv'}"
        + "".join(f", {p}" for p in plots)
    )
    return rows


def format_table(rows: list[dict], acceptance: str) -> str:
    """The course's columns, then chrF (raw references), tokens/s, τ and speedup over the
    single-head row."""
    lines = [
        (
            f"| Decoding strategy ({acceptance} acceptance) | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L |"
            " RTF | chrF | tokens/s | τ (tokens/step) | speedup vs single head |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        label = strategy_class(r["strategy"]).table_label(r["beam_width"], r["heads"])
        speedup = _fmt2(r.get("speedup_vs_single_head"))
        lines.append(
            f"| {label} | {_fmt(r.get('bleu'))} | {_fmt(r.get('rouge1'))} | {_fmt(r.get('rouge2'))}"
            f" | {_fmt(r.get('rougeL'))} | {_fmt(r['rtf'])} | {_fmt2(r.get('chrf'))} |"
            f" {_fmt2(r['tokens_per_second'])} | {_fmt2(r['tokens_per_step'])} |"
            f" {speedup}{'' if speedup == 'n/a' else '×'} |"
        )
    return "\n".join(lines)


def _fmt2(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"
