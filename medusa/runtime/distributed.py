"""Data-parallel evaluation through ``accelerate launch``: every process decodes its share of the
examples into a shard file of its own, and the main process merges the shards into the one
predictions file, in dataset order.

A run is data-parallel only when a launcher (``accelerate launch``, ``torchrun``) started several
processes (``WORLD_SIZE`` > 1); plain ``python medusa.py`` never starts a process group. Shards are
folded into the predictions file at the start of every resume, so a run interrupted under N
processes continues under any number.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

from medusa.console import quiet, say
from medusa.errors import MedusaError
from medusa.evaluation.results import PredictionLog, read_predictions, refuse_to_overwrite

# a process that finished its share waits at a barrier for the slowest one; a process that fails
# ends them all
# (the launcher's doing), so a long limit never leaves a hung run behind
BARRIER_TIMEOUT = timedelta(hours=12)
# settings each process may resolve for itself without changing a token (--threads auto counts idle
# cores)
PER_PROCESS = ("threads",)


@dataclass
class Processes:
    """The processes of one launch (one when not launched); ``state`` is accelerate's
    ``PartialState``."""

    index: int = 0
    count: int = 1
    state: object | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def parallel(self) -> bool:
        return self.count > 1

    def barrier(self) -> None:
        if not self.parallel:
            return
        # accelerate's barrier names this rank's GPU, which gloo refuses
        if self.state.backend == "gloo":
            import torch.distributed

            torch.distributed.barrier()
        else:
            self.state.wait_for_everyone()

    def gather(self, value) -> list:
        """Every process's ``value``, in process order, on every process."""
        if not self.parallel:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def broadcast(self, value):
        """The main process's ``value`` on every process."""
        if not self.parallel:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def agree(self, error: str | None) -> None:
        """Raise on every process when any process met an error (the first one's message); the main
        process says it, the others leave with status 2 quietly, so the message is printed once."""
        errors = [e for e in self.gather(error) if e]
        if not errors:
            return
        if self.is_main or not self.parallel:
            raise MedusaError(errors[0])
        raise SystemExit(2)

    def share(self, items: list) -> list:
        return share_of(items, self.index, self.count)


def share_of(items: list, index: int, count: int) -> list:
    """Process ``index``'s contiguous share of ``items`` (accelerate's own split: the first shares
    are one longer)."""
    from accelerate import PartialState

    with PartialState.split_between_processes(
        SimpleNamespace(num_processes=count, process_index=index), list(items)
    ) as part:
        return list(part)


@lru_cache(maxsize=1)
def processes() -> Processes:
    """This launch's processes; starts accelerate's process group (gloo without CUDA) on the first
    call."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    # it makes this process's GPU (local rank modulo the GPUs) the current one: --device auto/cuda
    # loads there, and
    # run.json keeps saying "cuda", so a resume under another process count (or none) matches it
    cuda = torch.cuda.is_available()
    # this machine's processes
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    gpus = torch.cuda.device_count() if cuda else 0
    # NCCL refuses two ranks on one GPU; gloo carries the few small messages as well when processes
    # share GPUs
    backend = "gloo" if cuda and local > gpus else None
    state = PartialState(
        cpu=not cuda, timeout=BARRIER_TIMEOUT, **({"backend": backend} if backend else {})
    )
    group = Processes(state.process_index, state.num_processes, state)
    if group.is_main:
        shared = f", sharing {gpus} GPU{'s' if gpus > 1 else ''}" if backend else ""
        say(
            f"data-parallel: {group.count} processes ({state.backend}{shared}), each decoding its"
            " share of the examples"
        )
    else:
        quiet(f"process {group.index}")  # one banner, one progress bar: the main process's
    return group


def _error_of(work: Callable[[], object]) -> str | None:
    try:
        work()
    except MedusaError as exc:
        return str(exc)
    return None


def on_main(work: Callable[[], object], group: Processes | None = None) -> None:
    """``work`` (a check, or a file only one process may write) on the main process; its error stops
    them all."""
    group = group or processes()
    if not group.parallel:
        work()
        return
    group.agree(_error_of(work) if group.is_main else None)


@contextmanager
def claimed_by_main(folder: Path, claim) -> Iterator[Path]:
    """``claim`` (:func:`medusa.output_dir.claimed_folder`) held by the main process for the whole
    run; the others write their shards under its lock and are never refused by it."""
    group = processes()
    if not group.parallel:
        with claim(folder):
            yield folder
        return
    if not group.is_main:
        group.agree(None)
        yield folder
        return
    held = claim(folder)
    error = _error_of(held.__enter__)
    group.agree(error)
    try:
        yield folder
    finally:
        held.__exit__(None, None, None)


def check_same(what: dict, group: Processes | None = None) -> None:
    """Refuse a launch whose processes would decode different things (another model, data or
    setting)."""
    group = group or processes()
    if not group.parallel:
        return
    what = {k: v for k, v in what.items() if k not in PER_PROCESS}
    views = group.gather(json.loads(json.dumps(what, default=str)))
    main = views[0]
    for index, view in enumerate(views[1:], 1):
        keys = sorted(k for k in set(main) | set(view) if main.get(k) != view.get(k))
        if keys:
            k = keys[0]
            group.agree(
                f"the {group.count} processes disagree on {', '.join(keys)} (process 0:"
                f" {main.get(k)!r}, process {index}: {view.get(k)!r}): launch every process with"
                " the same command and files"
            )
    group.agree(None)


def check_enough_examples(count: int, group: Processes | None = None) -> None:
    group = group or processes()
    if group.count > count:
        group.agree(f"{group.count} processes for {count} examples: launch at most {count} "
                    f"(accelerate launch --num_processes {count}) or evaluate more examples")


def shard_path(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}.process{index}{path.suffix}")


def shards_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.process*{path.suffix}"))


def refuse_started(path: Path) -> None:
    """Without --resume, neither the predictions file nor a shard a killed data-parallel run left
    may hold rows."""
    for started in [path, *shards_of(path)]:
        refuse_to_overwrite(started)


def merge_shards(path: Path) -> int:
    """Fold every shard of ``path`` into it: rows sorted by dataset index, one row per index (the
    file's own row first). Written to a temp file renamed over ``path`` before the shards go, so a
    kill loses nothing; a file already whole and in order is left as it is. Returns the number of
    rows."""
    shards = shards_of(path)
    own = read_predictions(path) if path.exists() else []
    indices = [row["index"] for row in own]
    if not shards and indices == sorted(set(indices)):
        return len(own)
    rows: dict[int, dict] = {}
    for row in own + [row for shard in shards for row in read_predictions(shard)]:
        rows.setdefault(row["index"], row)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in sorted(rows)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for shard in shards:
        shard.unlink()
    return len(rows)


def decode_shared(
    path: Path,
    resume: bool,
    examples: list,
    decode: Callable[[PredictionLog, list], object],
    group: Processes | None = None,
) -> list:
    """All rows of ``examples`` in dataset order, each process decoding its share of those not yet
    in ``path``.

    ``decode(log, share)`` decodes ``share`` into ``log``. One process: ``path`` itself is the log,
    as before (a resume first folds in the shards a data-parallel run left). Several: the main
    process folds earlier shards in (or refuses a started file without --resume), each process
    writes its own shard, and the main process merges them once every process is done.
    """
    group = group or processes()
    if not group.parallel:
        merge_shards(path) if resume else refuse_started(path)
        log = PredictionLog(path, resume)
        try:
            decode(log, examples)
        finally:
            log.close()
        # rows a shard held come before the new ones, and batched rows land as they finish:
        # dataset order again (a file already in order is left as it is)
        merge_shards(path)
        return [log.done[ex.index] for ex in examples]

    on_main(lambda: merge_shards(path) if resume else refuse_started(path), group)
    done = {row["index"] for row in read_predictions(path)} if resume and path.exists() else set()
    todo = [ex for ex in examples if ex.index not in done]
    if done:
        say(f"resuming: {len(examples) - len(todo)} examples already in {path}")
    mine = group.share(todo)
    log = PredictionLog(shard_path(path, group.index), resume=False)
    try:
        if mine:
            decode(log, mine)
    finally:
        log.close()
    group.barrier()
    if group.is_main:
        merge_shards(path)
    group.barrier()
    rows = {row["index"]: row for row in read_predictions(path)}
    return [rows[ex.index] for ex in examples]


def end_processes(code: int = 0) -> None:
    """After the work: wait for every process, then leave without tearing the process group down.

    Taking it down (``destroy_process_group``) and leaving gloo's threads to the interpreter's exit
    both aborted a finished process now and then ("terminate called without an active exception":
    once in seven runs of the two-process test on a 2-core CPU), after every file was written, which
    turned a good run into a failed one. Every file is closed by now, so each process flushes its
    streams and exits at once (``os._exit``), skipping that teardown. A process whose peer already
    failed and left goes on quietly: that peer said what failed. ``code`` is the exit status the run
    earned (1 where a graded submission failed examples)."""
    group = processes()
    if not group.parallel:
        return
    import torch.distributed as dist

    try:
        group.barrier()
    except RuntimeError:
        pass
    if dist.is_initialized():  # a launched process (a simulated group in the tests has none)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch_record(model_devices: list[str]) -> dict:
    """For the summary: how many processes decoded and on how many GPUs (``model_devices``: this
    process's)."""
    group = processes()
    every = {d for devices in group.gather(sorted(set(model_devices))) for d in devices}
    record = {"processes": group.count, "gpus": sum(d.startswith("cuda") for d in every)}
    if group.parallel:
        record["backend"] = getattr(group.state, "backend", None)
    return record
