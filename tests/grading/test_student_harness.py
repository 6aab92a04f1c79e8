"""A submission that misbehaves fails one example, never the run; the grading report flags contract
breaches."""

from __future__ import annotations

import json
import re

import pytest
import torch
from student_helpers import grade, report, rows

from medusa.grading.student_output import BadOutput, as_token_ids, check_output, scored_tokens

GREEDY = '''
import sys
import time
import torch


class Greedy:
    def __init__(self, model, decoding_strategy, eos_id, use_no_medusa_heads, beam_width,
                 max_output_len):
        self.model, self.eos_id, self.max_output_len = model, eos_id, max_output_len
        self.calls = 0

    def greedy(self, input_ids, n=None):
        out = []
        for _ in range(n or self.max_output_len):
            nxt = int(self.model(input_ids).logits[0, -1].argmax())
            if nxt == self.eos_id:
                break
            out.append(nxt)
            input_ids = torch.cat([input_ids, torch.tensor([[nxt]])], dim=1)
        return out

    def __call__(self, input_ids):
        self.calls += 1
        return torch.tensor(self.greedy(input_ids))
'''

MISBEHAVING = GREEDY + '''

class EachCallDifferent(Greedy):
    """Call i misbehaves in the i-th way; the last call works (in the process that replaced the one
    killed at the timeout, so it is told by a file in the working folder, which the grader keeps for
    every process it starts)."""

    def __call__(self, input_ids):
        import os

        if os.path.exists("timed-out"):
            return super().__call__(input_ids)
        self.calls += 1
        i = self.calls
        if i == 1:
            raise ValueError("shapes do not match\\n  left: [1, 5]\\n  right: [1, 6]")
        if i == 2:
            return "a translation"
        if i == 3:
            return torch.tensor([1.5, 2.0])
        if i == 4:
            return torch.tensor([5, 400])
        if i == 5:
            return torch.tensor([5, -1])
        if i == 6:
            return torch.tensor([[5, 6], [7, 8]])
        if i == 7:
            sys.exit(3)
        if i == 8:
            open("timed-out", "w").close()
            while True:
                try:
                    time.sleep(0.05)
                except Exception:
                    pass
        return super().__call__(input_ids)


class FailsFirstCall(Greedy):
    def __call__(self, input_ids):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("cold start")
        return super().__call__(input_ids)


class AlwaysFails(Greedy):
    def __call__(self, input_ids):
        raise NotImplementedError


class BreaksContract(Greedy):
    """Example 0: prompt + output as [1, T]; 1: past EOS; 2: longer than max_output_len."""

    def __call__(self, input_ids):
        self.calls += 1
        out = self.greedy(input_ids, 4)
        if self.calls == 1:
            return torch.cat([input_ids, torch.tensor([out])], dim=1)
        if self.calls == 2:
            return torch.tensor(out[:2] + [self.eos_id, 7])
        return torch.tensor(self.greedy(input_ids, self.max_output_len) + [7, 7, 7])
'''

EXPECTED_ERRORS = [
    "ValueError: shapes do not match",
    "returned a str",
    "returned float32 values",
    "returned id 400, outside the vocabulary (0..399)",
    "returned id -1, outside the vocabulary",
    "returned shape (2, 2)",
    "called sys.exit(3)",
    "ran longer than the --timeout of 1 s",
]


def _line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def test_each_failure_fails_its_example_only(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "mixed"
    code, out, err = grade(MISBEHAVING, "EachCallDifferent", student_heads_dir, out_dir, capsys,
                           "--no-warmup", "--timeout", "1", n=9)
    assert code == 1 and "exit status 1: the submission failed 8 examples" in err, err
    graded = rows(out_dir)
    assert [r["index"] for r in graded] == list(range(9))
    for row, expected in zip(graded, EXPECTED_ERRORS):
        assert row["error"].startswith(expected) and "\n" not in row["error"], row
        assert row["prediction"] == "" and row["tokens"] == 0
    assert graded[-1]["error"] is None and graded[-1]["tokens"] > 0
    name = "mixed_submission.py"
    assert graded[0]["error_at"] == f"{name}:{_line_of(MISBEHAVING, 'shapes do not match')}"
    assert graded[6]["error_at"] == f"{name}:{_line_of(MISBEHAVING, 'sys.exit(3)')}"
    # a bad value is blamed on its __call__
    start = _line_of(MISBEHAVING, "class EachCallDifferent")
    call_line = next(i for i, line in enumerate(MISBEHAVING.splitlines(), 1)
                     if i > start and line.strip().startswith("def __call__"))
    assert [r["error_at"] for r in graded[1:6]] == [f"{name}:{call_line}"] * 5
    assert re.fullmatch(rf"{name}:\d+", graded[7]["error_at"])
    assert json.loads((out_dir / "summary.json").read_text())["failed_examples"] == 8
    assert "failed examples: 8/9" in out and "completed examples: 1/9" in out
    assert "[0] failed: ValueError: shapes do not match" in err and "Traceback" not in err + out
    speed = rows(out_dir)[-1]
    assert f"({speed['tokens']} tokens in" in out  # the speed counts the completed example only


def test_warm_up_failure_does_not_abort(student_heads_dir, tmp_path, capsys):
    code, out, err = grade(
        MISBEHAVING, "FailsFirstCall", student_heads_dir, tmp_path / "warm", capsys
    )
    assert code == 0, err
    assert "warm-up: the submission failed (RuntimeError: cold start" in err
    assert [r["error"] for r in rows(tmp_path / "warm")] == [None] * 3


def test_no_reference_pass_before_the_submission_works(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "never"
    code, out, err = grade(
        MISBEHAVING,
        "AlwaysFails",
        student_heads_dir,
        out_dir,
        capsys,
        "--compare-single-head",
        "-ds",
        "multi-head",
    )
    assert code == 1, err
    assert (
        not (out_dir / "ours.jsonl").exists()
        and not (out_dir / "baseline-single-head.jsonl").exists()
    )
    assert not (out_dir / "ours-lossless.jsonl").exists()
    assert (
        "skipping the ours pass" in err
        and "skipping the baseline pass" in err
        and "skipping the lossless" in err
    )
    assert report(out_dir)["reference"] is None and "against ours: skipped" in out
    assert "failed or empty: 3/3" in out
    # every check, none "ok"
    assert out.count("n/a (no completed example)") == 5 and "0/0" not in out
    assert (
        "tokens/step (tau): n/a" in out and "nan" not in out.split("tokens/step")[1].splitlines()[0]
    )
    # no completed example: n/a, like RTF
    assert "nan" not in out.split("tokens/s:")[1].splitlines()[0]


def test_report_flags_contract_breaches(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "contract"
    code, out, err = grade(
        MISBEHAVING, "BreaksContract", student_heads_dir, out_dir, capsys, "--no-warmup"
    )
    assert code == 0, err
    checks = report(out_dir)["checks"]
    assert checks["one_dimensional"]["broken_examples"] == [0]
    assert checks["prompt_not_repeated"]["broken_examples"] == [0]
    assert checks["stops_at_eos"]["broken_examples"] == [1]
    # the prompt alone is longer than 8 tokens
    assert checks["within_length"]["broken_examples"] == [0, 2]
    assert "does not start with the prompt: 2/3 FLAG — examples 0" in out
    graded = rows(out_dir)
    assert graded[1]["stop_reason"] == "eos" and len(graded[1]["token_ids"]) == 2
    assert graded[2]["tokens"] == 8 and graded[2]["checks"]["returned_tokens"] == 11


def test_report_compares_with_ours(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "ours"
    code, out, err = grade(
        MISBEHAVING, "Greedy", student_heads_dir, out_dir, capsys, "--compare-single-head"
    )
    assert code == 0, err
    ref = report(out_dir)["reference"]
    assert ref["agreement"] == {
        "examples": 3,
        "identical": 3,
        "agreeing_prefix_share": 1.0,
        "differing_examples": [],
    }
    assert all(m["difference"] == pytest.approx(0.0) for m in ref["metrics"].values())
    assert set(ref["metrics"]) == {"bleu", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf"}
    t = ref["seconds_per_token"]
    assert (
        t["submission"] > 0
        and t["ours"] > 0
        and t["ratio"] == pytest.approx(t["submission"] / t["ours"])
    )
    # single-head: ours is the baseline
    assert not (out_dir / "baseline-single-head.jsonl").exists()
    assert "time per token:" in out and "ours is single-head already" in err
    # not the report's line again
    assert "identical outputs" not in out and "speedup vs single-head" not in out


def test_agreement_counts_the_prefix_before_the_first_difference(
    student_heads_dir, tmp_path, capsys
):
    source = GREEDY + '''

class OffAtThree(Greedy):
    def __call__(self, input_ids):
        out = self.greedy(input_ids)
        return torch.tensor(out[:3] + [(t + 1) % 300 + 5 for t in out[3:]])
'''
    out_dir = tmp_path / "off"
    code, out, err = grade(source, "OffAtThree", student_heads_dir, out_dir, capsys)
    assert code == 0, err
    ours = rows(out_dir, "ours.jsonl")
    a = report(out_dir)["reference"]["agreement"]
    longer = [r for r in ours if len(r["token_ids"]) > 3]
    assert a["identical"] == 3 - len(longer) and len(longer) >= 1
    assert a["agreeing_prefix_share"] == pytest.approx(
        sum(min(3, len(r["token_ids"])) for r in ours) / sum(len(r["token_ids"]) for r in ours))


def test_rescore_does_not_report_head_acceptance(student_heads_dir, tmp_path, capsys):
    from medusa.cli import main

    out_dir = tmp_path / "rescore"
    code = main(
        [
            "-m",
            str(student_heads_dir),
            "-n",
            "2",
            "-mol",
            "8",
            "--prompt-style",
            "seed",
            "-o",
            str(out_dir),
            "-ds",
            "multi-head",
            "--acceptance",
            "rescore",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "head acceptance: n/a" in out and "h1 1.0000" not in out
    speed = json.loads((out_dir / "summary.json").read_text())["speed"]
    assert speed["head_acceptance"] and all(r is None for r in speed["head_acceptance"])


def test_timeout_needs_a_generator(student_heads_dir, tmp_path, capsys):
    from medusa.cli import main

    for args, needle in (
        (["--timeout", "5"], "add --generator"),
        (["--timeout", "0"], "positive number"),
        (["--timeout", "x"], "number of seconds"),
    ):
        try:
            code = main(["-m", str(student_heads_dir), "-o", str(tmp_path / "t"), *args])
        except SystemExit as exc:  # argparse's own errors leave through our one-line parser
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "returned None"),
        ("text", "returned a str"),
        (b"x", "returned a bytes"),
        (torch.tensor([1.0]), "float32"),
        ([1.5, 2.5], "float32"),
        (torch.tensor([True]), "bool values"),
        (torch.tensor(7), "single number"),
        (torch.zeros(1, 2, 3, dtype=torch.long), "shape (1, 2, 3)"),
        (torch.zeros(3, 2, dtype=torch.long), "shape (3, 2)"),
        ([[1, 2], [3]], "not a tensor of token ids"),
        (torch.tensor([3, 10]), "id 10, outside"),
        ([3, -2], "id -2, outside"),
        ({"ids": 1}, "returned a dict"),
    ],
)
def test_values_that_are_not_token_ids(value, message):
    with pytest.raises(BadOutput, match=re.escape(message)):
        as_token_ids(value, vocab_size=10)


def test_values_read_as_token_ids():
    assert as_token_ids(torch.tensor([[3, 4]]), 10) == ([3, 4], [1, 2])
    assert as_token_ids([3, 4], 10) == ([3, 4], [2])
    assert as_token_ids(torch.tensor([], dtype=torch.long), 10) == ([], [0])
    assert as_token_ids(torch.tensor([9], dtype=torch.int32), 10) == ([9], [1])


def test_checks_and_scored_tokens():
    c = check_output([1, 2, 3, 9, 2, 4], [6], prompt=[1, 2], max_len=5, eos_id=9)
    assert c.starts_with_prompt and c.over_length and c.tokens_after_eos == 2 and c.one_dimensional
    # EOS inside the prompt: not counted
    c = check_output([1, 9, 3, 4], [4], prompt=[1, 9], max_len=5, eos_id=9)
    assert c.starts_with_prompt and c.tokens_after_eos == 0
    c = check_output([1], [1, 1], prompt=[1, 2], max_len=5, eos_id=9)
    assert (
        not c.starts_with_prompt
        and not c.over_length
        and c.tokens_after_eos == 0
        and not c.one_dimensional
    )
    assert scored_tokens([5, 6, 9, 7], 10, {9}) == ([5, 6], "eos")
    assert scored_tokens([5, 6, 7, 9], 2, {9}) == ([5, 6], "length")


def test_constructor_failures_are_one_line(student_heads_dir, tmp_path, capsys):
    source = GREEDY + '''

class SlowInit(Greedy):
    def __init__(self, *args):
        while True:
            time.sleep(0.05)


class ChattyInit(Greedy):
    def __init__(self, *args):
        raise RuntimeError("weights mismatch\\nexpected [5, 576]\\ngot [4, 576]")
'''
    for cls, needle in (
        ("SlowInit", "constructing SlowInit failed: ran longer than the --timeout of 1 s"),
        ("ChattyInit", "constructing ChattyInit failed: RuntimeError: weights mismatch ("),
    ):
        code, out, err = grade(
            source, cls, student_heads_dir, tmp_path / cls, capsys, "--timeout", "1"
        )
        lines = err.strip().splitlines()
        assert code == 2 and needle in lines[-1] and "Traceback" not in err, err
        assert re.search(rf"\({cls}_submission\.py:\d+\)$", lines[-1]), lines[-1]


def test_a_helper_module_beside_the_submission_imports(student_heads_dir, tmp_path, capsys):
    """Submissions often split their code; `python generate_medusa.py` finds the sibling file, so
    must we."""
    helper = tmp_path / "greedy_helper_for_grading.py"
    helper.write_text(GREEDY)
    source = "from greedy_helper_for_grading import Greedy as MedusaTextGenerator\n"
    code, out, err = grade(
        source, "MedusaTextGenerator", student_heads_dir, tmp_path / "split", capsys, n=2
    )
    assert code == 0, err
    assert report(tmp_path / "split")["completed"] == 2


def test_grading_resumes_both_passes(student_heads_dir, tmp_path, capsys):
    """--resume continues the submission's rows and ours.jsonl alike; the report covers every row.
    """
    out_dir = tmp_path / "resumed"
    code, _, err = grade(GREEDY, "Greedy", student_heads_dir, out_dir, capsys, n=2)
    assert code == 0, err
    code, out, err = grade(GREEDY, "Greedy", student_heads_dir, out_dir, capsys, "--resume", n=3)
    assert code == 0, err
    assert err.count("resuming: 2 examples already in") == 2  # predictions.jsonl, then ours.jsonl
    assert [r["index"] for r in rows(out_dir)] == [0, 1, 2]
    assert [r["index"] for r in rows(out_dir, "ours.jsonl")] == [0, 1, 2]
    graded = report(out_dir)
    assert graded["completed"] == 3 and graded["reference"]["agreement"]["identical"] == 3
