"""The grading report counts what a submission generated: empty outputs are flagged, a check with no
completed example says so, speed is measured on generated ids (never an echoed prompt), a prompt
holding the EOS id is warned about, and per-example lines never share a line with the progress bar.
"""

from __future__ import annotations

import json
import re

from student_helpers import grade, report, rows

from medusa.grading.student_output import check_output

BASE = '''
import torch


class Greedy:
    def __init__(self, model, decoding_strategy, eos_id, use_no_medusa_heads, beam_width,
                 max_output_len):
        self.model, self.eos_id, self.max_output_len = model, eos_id, max_output_len

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
        return torch.tensor(self.greedy(input_ids))


class ReturnsNothing(Greedy):
    def __call__(self, input_ids):
        return torch.tensor([], dtype=torch.long)


class EchoesThePrompt(Greedy):
    """The seed script's bug: prompt + one generated token, as a [1, T] batch."""

    def __call__(self, input_ids):
        return torch.cat([input_ids, torch.tensor([self.greedy(input_ids, 1)])], dim=1)


class EchoesPartOfThePrompt(Greedy):
    """Prompt + output cut at max_output_len: only prompt tokens come back."""

    def __call__(self, input_ids):
        return input_ids[0, : self.max_output_len]


class StopsAtAnyEOS(Greedy):
    """Looks for EOS in its whole sequence, prompt included (fine on the course's prompt)."""

    def __call__(self, input_ids):
        out = []
        seq = input_ids
        while len(out) < self.max_output_len and self.eos_id not in seq[0].tolist():
            nxt = int(self.model(seq).logits[0, -1].argmax())
            out.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
        return torch.tensor(out, dtype=torch.long)


class FailsTwice(Greedy):
    def __init__(self, *args):
        super().__init__(*args)
        self.calls = 0

    def __call__(self, input_ids):
        self.calls += 1
        if self.calls <= 2:
            raise RuntimeError(f"bad call {self.calls}")
        return super().__call__(input_ids)
'''


def test_empty_outputs_are_flagged(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "empty"
    code, out, err = grade(BASE, "ReturnsNothing", student_heads_dir, out_dir, capsys)
    assert code == 0, err  # nothing failed: every call returned, empty
    rep = report(out_dir)
    assert rep["completed"] == 3 and rep["empty"] == [0, 1, 2]
    assert rep["checks"]["not_empty"] == {"label": "output is not empty", "passed": 0, "of": 3,
                                          "broken_examples": [0, 1, 2]}
    assert (
        "failed or empty: 3/3" in out and "output is not empty: 0/3 FLAG — examples 0, 1, 2" in out
    )
    assert "time per token: n/a" in out  # no generated token to divide by


def test_speed_counts_generated_ids_not_an_echoed_prompt(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "echo"
    code, out, err = grade(
        BASE, "EchoesThePrompt", student_heads_dir, out_dir, capsys, "--no-warmup"
    )
    assert code == 0, err
    graded = rows(out_dir)
    assert all(r["generated_tokens"] == 1 and r["checks"]["starts_with_prompt"] for r in graded)
    assert all(r["tokens"] == 8 for r in graded)  # what is scored: as returned, cut at -mol
    summary = json.loads((out_dir / "summary.json").read_text())
    speed = summary["speed"]
    assert speed["generated_tokens"] == 3
    assert speed["rtf"] == speed["generation_seconds"] / 3
    t = report(out_dir)["reference"]["seconds_per_token"]
    assert t["submission"] == sum(r["seconds"] for r in graded) / 3
    assert "tokens/s:" in out and "(3 tokens in" in out


def test_a_partial_echo_is_left_out_of_the_speed(student_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "partial"
    code, out, err = grade(BASE, "EchoesPartOfThePrompt", student_heads_dir, out_dir, capsys)
    assert code == 0, err
    rep = report(out_dir)
    assert rep["unknown_generated_count"] == [0, 1, 2]
    assert rep["checks"]["prompt_not_repeated"]["passed"] == 0
    assert "generated ids unknown (the output starts with part of the prompt)" in out
    assert rep["reference"]["seconds_per_token"]["examples"] == 0 and "time per token: n/a" in out
    assert json.loads((out_dir / "summary.json").read_text())["speed"]["generated_tokens"] == 0


def test_a_prompt_holding_the_eos_id_is_warned_about(student_heads_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "eos.hin_Deva").write_text("मैं घर जा रहा हूँ </s>\nवह किताब पढ़ती है\n")
    (data / "eos.eng_Latn").write_text("I am going home\nShe reads a book\n")
    out_dir = tmp_path / "eos"
    code, out, err = grade(
        BASE, "StopsAtAnyEOS", student_heads_dir, out_dir, capsys, "-d", str(data / "eos"), n=2
    )
    assert code == 0, err
    assert (
        err.count("warning: the seed prompt holds the EOS id 2 (</s>) handed to the submission")
        == 1
    )
    assert "--prompt-style seed" in err
    graded = rows(out_dir)
    # stopped on the prompt's EOS
    assert graded[0]["generated_tokens"] == 0 and graded[1]["generated_tokens"] > 0
    out_dir = tmp_path / "clean"
    code, out, err = grade(BASE, "Greedy", student_heads_dir, out_dir, capsys, n=2)
    assert code == 0 and "holds the EOS id" not in err


def test_failure_lines_start_a_line_of_their_own(student_heads_dir, tmp_path, capsys):
    code, out, err = grade(
        BASE, "FailsTwice", student_heads_dir, tmp_path / "lines", capsys, "--no-warmup"
    )
    assert code == 1
    for i in (0, 1):
        assert re.search(rf"(^|\n)\[{i}\] failed: RuntimeError: bad call {i + 1}", err), err
    assert not re.search(r"ex/s\]\[\d\] failed", err)


def test_checks_of_one_output():
    prompt = list(range(10, 30))
    full = check_output(prompt + [5, 6], [22], prompt, 50, 2)
    assert full.starts_with_prompt and full.generated_tokens == 2 and not full.partial_prompt_echo
    cut = check_output(prompt[:8], [8], prompt, 8, 2)
    assert cut.partial_prompt_echo and cut.generated_tokens is None and not cut.starts_with_prompt
    empty = check_output([], [0], prompt, 8, 2)
    assert empty.empty and empty.generated_tokens == 0
    # one id equal to the prompt's first is no echo
    plain = check_output([10, 7, 8], [3], prompt, 8, 2)
    assert not plain.partial_prompt_echo and plain.generated_tokens == 3
    padded = check_output([5, 6, 2, 9, 9, 9], [6], prompt, 50, 2)  # ids after EOS are no speed
    assert padded.generated_tokens == 2 and padded.tokens_after_eos == 3
    long = check_output(list(range(40, 60)), [20], prompt, 8, 2)  # nor ids past the length limit
    assert long.generated_tokens == 8 and long.over_length
    echo_then_pad = check_output(prompt + [5, 2, 2, 2], [24], prompt, 50, 2)
    assert echo_then_pad.generated_tokens == 1


def test_the_cpu_tree_note_names_the_shipped_drafter_only_for_it():
    from medusa.runner import cpu_tree_note, shipped_drafter
    from medusa.settings import RunSettings

    assert shipped_drafter(RunSettings()) and shipped_drafter(
        RunSettings(model_name="embedded:faithful")
    )
    for other in (RunSettings(bare_embedded=True), RunSettings(model_name="my/model"),
                  RunSettings(medusa_heads="heads/")):
        assert not shipped_drafter(other)
    assert "shipped drafter" in cpu_tree_note(127, True) and "--tree-size 3" in cpu_tree_note(
        127, True
    )
    assert "shipped drafter" not in cpu_tree_note(127, False)
