"""Faults during a run and data that would give silently wrong results: nothing finished is lost, a
changed dataset or model is never mixed into a resumed run, and each refusal is one line (exit 2, no
traceback)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import perturbed_heads
from test_bad_input import assert_one_line_error, bad_input, cli

from medusa.evaluation import results


def pair(folder: Path, sources: list[str], targets: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "set.hin_Deva").write_text("".join(f"{s}\n" for s in sources), encoding="utf-8")
    (folder / "set.eng_Latn").write_text("".join(f"{t}\n" for t in targets), encoding="utf-8")
    return folder / "set"


SOURCES = ["मैं घर जा रहा हूँ", "वह किताब पढ़ती है", "हम खाना खाते हैं"]
TARGETS = ["I am going home", "She reads a book", "We eat food"]


def base_args(model_dir: Path, data: Path, out_dir: Path) -> list[str]:
    return [
        "-m",
        str(model_dir),
        "-d",
        str(data),
        "-mol",
        "4",
        "--prompt-style",
        "seed",
        "-o",
        str(out_dir),
        "--no-warmup",
    ]


def fault_line(code: int, err: str, needle: str) -> str:
    """A fault mid-run: the one-line error as for bad input (the progress bar's lines aside)."""
    return assert_one_line_error(
        code, "\n".join(x for x in err.splitlines() if not x.startswith("single-head:")), needle
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---- data that would score wrong -----------------------------------------------------------------
def test_a_source_of_invisible_characters_is_an_empty_row(tiny_model_dir, tmp_path, capsys):
    data = pair(tmp_path / "d", [SOURCES[0], "\u200b\u200c \ufeff"], TARGETS[:2])
    bad_input(
        base_args(tiny_model_dir, data, tmp_path / "o"),
        capsys,
        "empty hin_Deva text in row(s) 1",
        before_loading=True,
    )


def test_an_empty_reference_is_refused_not_scored_as_zero(tiny_model_dir, tmp_path, capsys):
    data = pair(tmp_path / "d", SOURCES[:2], [TARGETS[0], "  "])
    error = bad_input(base_args(tiny_model_dir, data, tmp_path / "o"), capsys,
                      "empty eng_Latn references in row(s) 1", before_loading=True)
    assert "set.hin_Deva alone" in error  # how to run without references instead


def test_split_on_local_data_is_said_to_do_nothing(tiny_model_dir, tmp_path, capsys):
    data = pair(tmp_path / "d", SOURCES[:1], TARGETS[:1])
    code, _, err = cli(
        base_args(tiny_model_dir, data, tmp_path / "o") + ["--split", "validation"], capsys
    )
    assert code == 0, err
    assert "note: --split validation is for hub datasets" in err
    code, _, err = cli(base_args(tiny_model_dir, data, tmp_path / "o2"), capsys)
    assert code == 0 and "--split" not in err


# ---- resume never mixes two setups ---------------------------------------------------------------
def test_resume_refuses_data_whose_finished_rows_changed(tiny_model_dir, tmp_path, capsys):
    data = pair(tmp_path / "d", SOURCES, TARGETS)
    args = base_args(tiny_model_dir, data, tmp_path / "o")
    assert cli(args + ["-n", "2"], capsys)[0] == 0
    pair(tmp_path / "d", [SOURCES[0], "यह बिल्कुल अलग वाक्य है", SOURCES[2]], TARGETS)
    bad_input(
        args + ["-n", "3", "--resume"], capsys, "row 1 of the data differs from the one finished"
    )
    pair(tmp_path / "d", SOURCES, [TARGETS[0], "Another reference", TARGETS[2]])
    bad_input(args + ["-n", "3", "--resume"], capsys, "its reference text changed")
    pair(tmp_path / "d", SOURCES, TARGETS)  # the same data again: resumes
    code, _, err = cli(args + ["-n", "3", "--resume"], capsys)
    assert code == 0, err


def test_resume_refuses_heads_that_changed_behind_the_same_path(tiny_model_dir, tmp_path, capsys):
    heads = perturbed_heads(tiny_model_dir, tmp_path / "heads", 2, seed=1)
    data = pair(tmp_path / "d", SOURCES, TARGETS)
    args = base_args(heads, data, tmp_path / "o") + ["-ds", "multi-head", "-nmh", "2"]
    assert cli(args + ["-n", "1"], capsys)[0] == 0
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert record["weights"]["heads"] and record["weights"]["base"]
    perturbed_heads(tiny_model_dir, heads, 2, seed=2)  # retrained: same folder, other weights
    bad_input(args + ["-n", "2", "--resume"], capsys, "weights:")
    del record["weights"]  # a run recorded before weights were: resumes (nothing to compare with)
    (tmp_path / "o" / "run.json").write_text(json.dumps(record))
    code, _, err = cli(args + ["-n", "2", "--resume"], capsys)
    assert code == 0, err


# ---- the disk and the folder under a running run -------------------------------------------------
def fail_on_row(monkeypatch, row: int, error: int = errno.ENOSPC) -> None:
    """The file system refuses the ``row``-th predictions line (counting from 1), as a full disk
    does."""
    real, calls = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(
            ("predictions.jsonl", "predictions.jsonl.tmp")
        ):
            calls["n"] += 1
            if calls["n"] >= row:
                raise OSError(error, os.strerror(error))
        real(fd)

    monkeypatch.setattr(results.os, "fsync", fsync)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the file by /proc/self/fd")
def test_a_full_disk_during_the_run_is_one_line_and_keeps_the_finished_rows(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    data = pair(tmp_path / "d", SOURCES, TARGETS)
    args = base_args(tiny_model_dir, data, tmp_path / "o") + ["-n", "3"]
    fail_on_row(monkeypatch, 2)
    code, _, err = cli(args, capsys)
    error = fault_line(code, err, "No space left on device")
    assert (
        "the 1 finished example written before is kept there: free some disk space, then rerun with"
        " --resume"
        in error
    )
    monkeypatch.undo()
    kept = [r["index"] for r in results.read_predictions(tmp_path / "o" / "predictions.jsonl")]
    assert kept[:1] == [0]  # (row 1's bytes too, where the disk took them before its sync failed)
    assert not (tmp_path / "o" / "predictions.jsonl.tmp").exists()
    code, _, err = cli(args + ["--resume"], capsys)
    assert code == 0, err
    assert [r["index"] for r in lines(tmp_path / "o" / "predictions.jsonl")] == [0, 1, 2]


def test_a_full_disk_before_the_run_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import medusa.runner as runner

    def full(folder, fingerprint, resume):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "run.json"))

    monkeypatch.setattr(runner, "check_or_write_run", full)
    data = pair(tmp_path / "d", SOURCES, TARGETS)
    bad_input(base_args(tiny_model_dir, data, tmp_path / "o"), capsys, "cannot write")


@pytest.mark.parametrize("removed", ["file", "folder"])
def test_predictions_removed_mid_run_are_written_again(
    removed, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """The predictions file (or the whole output folder) deleted while the run goes on: every row
    still ends up in the file the run names, and the summary beside it."""
    out_dir = tmp_path / "o"
    real = results.PredictionLog.write

    def write(self, row):
        real(self, row)
        if row["index"] == 0 and self.path.name == "predictions.jsonl":
            shutil.rmtree(out_dir) if removed == "folder" else self.path.unlink()

    monkeypatch.setattr(results.PredictionLog, "write", write)
    data = pair(tmp_path / "d", SOURCES, TARGETS)
    code, out, err = cli(base_args(tiny_model_dir, data, out_dir) + ["-n", "3"], capsys)
    assert code == 0, err
    assert "was removed or replaced during the run; written again with its 2 rows" in err
    assert [r["index"] for r in lines(out_dir / "predictions.jsonl")] == [0, 1, 2]
    assert json.loads((out_dir / "summary.json").read_text())["examples"] == 3
