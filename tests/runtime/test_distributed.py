"""Data-parallel runs (medusa/runtime/distributed.py): shares, shards and their merge with simulated
processes (threads that meet at real barriers), then two real processes started by ``accelerate
launch`` (gloo on this CPU)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from test_cli import STUDENT

from conftest import perturbed_heads
from medusa.evaluation.data import Example
from medusa.decoding import generate, make_strategy
from medusa.runtime.distributed import (
    Processes,
    check_enough_examples,
    check_same,
    decode_shared,
    merge_shards,
    shard_path,
    share_of,
)
from medusa.errors import MedusaError
from medusa.evaluation.metrics import compute_all
from medusa.model import MedusaModel
from medusa.evaluation.results import read_predictions

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Meeting:
    """What simulated processes share: a barrier and a table to exchange values through."""

    count: int
    barrier: threading.Barrier = field(init=False)
    table: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.barrier = threading.Barrier(self.count, timeout=60)


class SimulatedProcess(Processes):
    """One of ``count`` processes of a launch, as a thread: the collectives of accelerate, over a
    :class:`Meeting`."""

    def __init__(self, index: int, meeting: Meeting) -> None:
        super().__init__(index, meeting.count, None)
        self.meeting = meeting

    def barrier(self) -> None:
        self.meeting.barrier.wait()

    def gather(self, value) -> list:
        self.barrier()
        self.meeting.table[self.index] = value
        self.barrier()
        values = [self.meeting.table[i] for i in range(self.count)]
        self.barrier()
        return values

    def broadcast(self, value):
        return self.gather(value)[0]


def run_processes(count: int, work) -> list:
    """``work(process)`` in ``count`` simulated processes at once; their results (or exceptions), in
    process order."""
    meeting = Meeting(count)
    results: list = [None] * count

    def body(i: int) -> None:
        try:
            results[i] = work(SimulatedProcess(i, meeting))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            results[i] = exc
            # those are agreed on by every process
            if not isinstance(exc, (MedusaError, SystemExit)):
                # a lone failure: the others leave their barrier instead of waiting
                meeting.barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.fixture(scope="module")
def greedy(tiny_model_dir, tiny_tokenizer):
    """A real decoder: the tiny model's greedy tokens for an example's source, as a prediction row.
    """
    from transformers import AutoModelForCausalLM

    model = MedusaModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tiny_tokenizer)
    lock = threading.Lock()  # the simulated processes share one model: one forward pass at a time

    def decode(log, share: list[Example]) -> None:
        for ex in share:
            ids = tiny_tokenizer(ex.source)["input_ids"][:20]
            with lock, torch.no_grad():
                tokens = generate(model, make_strategy("single-head"), ids, 6, set()).tokens
            log.write(
                {
                    "index": ex.index,
                    "prediction": tiny_tokenizer.decode(tokens),
                    "reference": ex.target,
                    "target": ex.target,
                    "token_ids": tokens,
                }
            )
    return decode


EXAMPLES = [
    Example(index=i, source=s, target=t)
    for i, (s, t) in enumerate(
        [
            ("उन्होंने कहा कि अब", "He said that now"),
            ("हमारे पास चार महीने", "We have four months"),
            ("उम्र वाले चूहे हैं", "old mice are here"),
            ("The quick brown fox", "jumps over"),
            ("0123", "456789"),
            ("कहा कि", "he added"),
            ("lazy dog", "the dog is lazy"),
        ]
    )
]


def test_shares_cover_the_examples_once_in_order():
    items = list(range(7))
    for count in (1, 2, 3, 7):
        shares = [share_of(items, i, count) for i in range(count)]
        assert [x for s in shares for x in s] == items
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [share_of(items, i, 2) for i in range(2)] == [[0, 1, 2, 3], [4, 5, 6]]


def test_two_processes_give_the_single_process_rows_and_metrics(tmp_path, greedy):
    (tmp_path / "one").mkdir()
    single = decode_shared(tmp_path / "one" / "p.jsonl", False, EXAMPLES, greedy, Processes())
    (tmp_path / "two").mkdir()
    path = tmp_path / "two" / "p.jsonl"
    results = run_processes(2, lambda group: decode_shared(path, False, EXAMPLES, greedy, group))
    for rows in results:
        assert not isinstance(rows, BaseException), rows
        assert [r["index"] for r in rows] == [ex.index for ex in EXAMPLES]
        assert [r["token_ids"] for r in rows] == [r["token_ids"] for r in single]
    on_disk = read_predictions(path)
    # merged in dataset order, once each
    assert [r["index"] for r in on_disk] == list(range(len(EXAMPLES)))
    assert not list(path.parent.glob("p.process*.jsonl"))  # shards folded in
    metrics = [
        compute_all([r["prediction"] for r in rows], [r["reference"] for r in rows], "eng_Latn")
        for rows in (single, on_disk)
    ]
    assert metrics[0] == metrics[1]


def test_a_started_file_is_refused_on_every_process_without_resume(tmp_path, greedy):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"index": 0}) + "\n")
    results = run_processes(2, lambda group: decode_shared(path, False, EXAMPLES, greedy, group))
    assert isinstance(results[0], MedusaError) and "--resume" in str(results[0])
    # the main process says it, once
    assert isinstance(results[1], SystemExit) and results[1].code == 2


class Interrupt(Exception):
    pass


def test_resume_under_another_process_count_keeps_every_finished_row(tmp_path, greedy):
    reference = decode_shared(tmp_path / "ref.jsonl", False, EXAMPLES, greedy, Processes())
    path = tmp_path / "p.jsonl"

    # each of three processes finishes one example, then the run is killed
    def stops_after_one(log, share):
        greedy(log, share[:1])
        raise Interrupt

    results = run_processes(
        3, lambda group: decode_shared(path, False, EXAMPLES, stops_after_one, group)
    )
    assert all(isinstance(r, Interrupt) for r in results)
    assert sorted(p.name for p in tmp_path.glob("p.process*.jsonl")) == [
        f"p.process{i}.jsonl" for i in range(3)
    ]
    with open(shard_path(path, 2), "a", encoding="utf-8") as f:
        f.write('{"index": 6, "predic')  # a line cut off by the kill
    finished = {r["index"] for i in range(3) for r in read_predictions(shard_path(path, i))}
    assert len(finished) == 3

    decoded: list[int] = []

    def counting(log, share):
        decoded.extend(ex.index for ex in share)
        greedy(log, share)

    results = run_processes(2, lambda group: decode_shared(path, True, EXAMPLES, counting, group))
    assert sorted(decoded) == sorted(set(range(len(EXAMPLES))) - finished)  # nothing decoded twice
    for rows in results:
        assert [r["token_ids"] for r in rows] == [r["token_ids"] for r in reference]
    assert [r["index"] for r in read_predictions(path)] == list(range(len(EXAMPLES)))


def test_one_process_resume_folds_in_the_shards(tmp_path, greedy):
    path = tmp_path / "p.jsonl"
    greedy_rows = decode_shared(tmp_path / "ref.jsonl", False, EXAMPLES, greedy, Processes())
    with open(shard_path(path, 1), "w", encoding="utf-8") as f:
        f.write(json.dumps(greedy_rows[4]) + "\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(greedy_rows[0]) + "\n")
    decoded: list[int] = []

    def counting(log, share):
        todo = [ex for ex in share if ex.index not in log.done]
        decoded.extend(ex.index for ex in todo)
        greedy(log, todo)

    rows = decode_shared(path, True, EXAMPLES, counting, Processes())
    assert decoded == [1, 2, 3, 5, 6]
    assert [r["token_ids"] for r in rows] == [r["token_ids"] for r in greedy_rows]
    assert not shard_path(path, 1).exists()


def test_merge_keeps_one_row_per_index(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"index": 2, "v": "file"}) + "\n")
    shard_path(path, 0).write_text(
        json.dumps({"index": 2, "v": "shard"}) + "\n" + json.dumps({"index": 0}) + "\n"
    )
    assert merge_shards(path) == 2
    assert read_predictions(path) == [{"index": 0}, {"index": 2, "v": "file"}]


def test_more_processes_than_examples_is_refused():
    results = run_processes(3, lambda group: check_enough_examples(2, group))
    assert isinstance(results[0], MedusaError)
    assert str(results[0]).startswith("3 processes for 2 examples") and "--num_processes 2" in str(
        results[0]
    )
    assert run_processes(2, lambda group: check_enough_examples(2, group)) == [None, None]


def test_processes_that_disagree_are_refused():
    views = [{"model_name": "a", "dtype": "float32"}, {"model_name": "b", "dtype": "float32"}]
    results = run_processes(2, lambda group: check_same(views[group.index], group))
    assert isinstance(results[0], MedusaError) and isinstance(results[1], SystemExit)
    message = str(results[0])
    assert (
        "disagree on model_name" in message
        and "'a'" in message
        and "'b'" in message
        and "\n" not in message
    )
    assert run_processes(2, lambda group: check_same(views[0], group)) == [None, None]


# ---- two real processes: accelerate launch (torchrun underneath; gloo without CUDA) ----

def free_port() -> int:
    import socket

    with socket.socket() as s:  # other test runs on this machine may hold torchrun's default port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    accelerate = shutil.which("accelerate") or pytest.skip("accelerate's launcher is not on PATH")
    return subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            str(ROOT / "medusa.py"),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def plain(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "medusa.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tokens(folder: Path, name: str = "predictions.jsonl") -> list[list[int]]:
    return [r["token_ids"] for r in read_predictions(folder / name)]


@pytest.fixture(scope="module")
def five_heads_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Five perturbed heads on the tiny model: enough for the assignment table."""
    return perturbed_heads(tiny_model_dir, tmp_path_factory.mktemp("five-heads"), 5, seed=1)



def test_accelerate_launch_two_processes_equals_one(five_heads_dir, tmp_path):
    common = [
        "-m",
        str(five_heads_dir),
        "-n",
        "5",
        "-mol",
        "8",
        "--prompt-style",
        "seed",
        "-ds",
        "multi-head",
        "--compare-single-head",
    ]
    one = plain([*common, "-o", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = launch([*common, "-o", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("data-parallel: 2 processes (gloo)") == 1
    assert two.stderr.count("setup: ") == 1  # the other process is quiet
    for name in ("predictions.jsonl", "baseline-single-head.jsonl"):
        assert tokens(tmp_path / "two", name) == tokens(tmp_path / "one", name), name
        assert [r["index"] for r in read_predictions(tmp_path / "two" / name)] == list(range(5))
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert (
        s2["metrics"] == s1["metrics"]
        and s2["identical_to_single_head"] == s1["identical_to_single_head"]
    )
    assert (s1["processes"], s2["processes"], s2["gpus"], s2["backend"]) == (1, 2, 0, "gloo")
    with open(tmp_path / "two" / "summary.csv", newline="") as f:
        assert next(csv.DictReader(f))["processes"] == "2"
    assert (
        not list((tmp_path / "two").glob("*.process*.jsonl"))
        and not (tmp_path / "two" / ".medusa.lock").exists()
    )

    # resume under one process after a two-process run was cut short: rows of both shards are kept
    rows = read_predictions(tmp_path / "two" / "predictions.jsonl")
    (tmp_path / "two" / "predictions.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "two" / "predictions.process1.jsonl").write_text(json.dumps(rows[3]) + "\n")
    again = plain([*common, "-o", str(tmp_path / "two"), "--resume", "--debug"])
    assert again.returncode == 0, again.stderr
    decoded = sorted(int(i) for i in re.findall(r"\[(\d+)\] ['\"].*\(ref: ", again.stderr))
    assert decoded == [1, 2, 4]  # the baseline file was whole; rows 0 and 3 were kept
    assert tokens(tmp_path / "two") == tokens(tmp_path / "one")


def test_accelerate_launch_batched_equals_one_row(five_heads_dir, tmp_path):
    """Two processes, each decoding its share --batch-size 2 rows at a time: the one-process,
    one-row tokens, in dataset order."""
    common = ["-m", str(five_heads_dir), "-n", "5", "-mol", "8", "--prompt-style", "seed",
              "-ds", "tree", "-nmh", "3"]
    one = plain([*common, "-o", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = launch([*common, "-o", str(tmp_path / "two"), "--batch-size", "2"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert tokens(tmp_path / "two") == tokens(tmp_path / "one")
    rows = read_predictions(tmp_path / "two" / "predictions.jsonl")
    assert [r["index"] for r in rows] == list(range(5)) and {r["batch_size"] for r in rows} == {2}


def test_accelerate_launch_table_and_generator(five_heads_dir, tmp_path):
    table = launch(
        [
            "-m",
            str(five_heads_dir),
            "-n",
            "3",
            "-mol",
            "6",
            "--prompt-style",
            "seed",
            "--assignment-table",
            "-o",
            str(tmp_path / "table"),
        ]
    )
    assert table.returncode == 0, table.stderr[-3000:]
    assert table.stdout.count("| Beam ") == 6 and (tmp_path / "table" / "table.csv").is_file()
    first = read_predictions(tmp_path / "table" / "single-head" / "predictions.jsonl")
    assert [r["index"] for r in first] == [0, 1, 2]
    student = tmp_path / "student.py"
    student.write_text(STUDENT)
    graded = launch(
        [
            "-m",
            str(five_heads_dir),
            "-n",
            "3",
            "-mol",
            "6",
            "--prompt-style",
            "seed",
            "--generator",
            f"{student}:MedusaTextGenerator",
            "-o",
            str(tmp_path / "graded"),
        ]
    )
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert tokens(tmp_path / "graded") == tokens(tmp_path / "graded", "ours.jsonl") == \
        [r["token_ids"] for r in first]
    assert json.loads((tmp_path / "graded" / "grading.json").read_text())


def test_more_processes_than_examples_end_to_end(tiny_model_dir, tmp_path):
    out = launch(
        ["-m", str(tiny_model_dir), "-n", "1", "--prompt-style", "seed", "-o", str(tmp_path / "x")]
    )
    assert out.returncode != 0
    assert "error: 2 processes for 1 examples: launch at most 1" in out.stderr
    assert out.stderr.count("error: ") == 1


def test_device_map_needs_cuda(tiny_model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = plain(
        ["-m", str(tiny_model_dir), "-n", "1", "--device-map", "auto", "-o", str(tmp_path / "x")]
    )
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
        "error: --device-map auto splits a model over GPUs, but CUDA is not available")
    assert "Traceback" not in out.stderr
    for args, needle in ((["--max-memory", "0=40GiB"], "add --device-map auto"),
                         (["--device-map", "auto", "--max-memory", "zero=1GiB"], "is not GPU=SIZE"),
                         (["--device-map", "auto", "--device", "cpu"], "drop --device cpu")):
        out = plain(["-m", str(tiny_model_dir), "-n", "1", *args, "-o", str(tmp_path / "x")])
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, (
            args,
            out.stderr,
        )


def test_a_check_on_the_main_process_stops_every_process(tmp_path):
    from medusa.runtime.distributed import on_main

    def refuse():
        raise MedusaError("run.json says otherwise")

    results = run_processes(2, lambda group: on_main(refuse, group))
    assert isinstance(results[0], MedusaError) and isinstance(results[1], SystemExit)
    written = []
    assert run_processes(2, lambda group: on_main(lambda: written.append(group.index), group)) == [
        None,
        None,
    ]
    assert written == [0]  # only the main process writes


def test_a_shard_left_by_a_killed_run_needs_resume(tmp_path, greedy):
    path = tmp_path / "p.jsonl"
    shard_path(path, 1).write_text(json.dumps({"index": 3}) + "\n")
    with pytest.raises(MedusaError, match=r"p\.process1\.jsonl already exists: pass --resume"):
        decode_shared(path, False, EXAMPLES, greedy, Processes())
    results = run_processes(2, lambda group: decode_shared(path, False, EXAMPLES, greedy, group))
    assert isinstance(results[0], MedusaError) and isinstance(results[1], SystemExit)
    assert not path.exists()


def test_thread_counts_may_differ_between_processes():
    views = [{"model_name": "a", "threads": 2}, {"model_name": "a", "threads": 4}]
    assert run_processes(2, lambda group: check_same(views[group.index], group)) == [None, None]
