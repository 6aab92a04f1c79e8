"""The command line end to end on a tiny model, and every bad-input case as a one-line error."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medusa.model.checkpoints import save_heads
from medusa.cli import build_parser, main, settings_from_args
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.settings import SEED_DATASET, SEED_MODEL

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_end_to_end_tiny_model_writes_both_files(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        [
            "-m",
            str(tiny_model_dir),
            "--num-examples",
            "3",
            "-mol",
            "12",
            "-o",
            str(out_dir),
            "--prompt-style",
            "seed",
        ],
        capsys,
    )
    assert code == 0, err
    for line in ("BLEU:", "ROUGE-1:", "ROUGE-2:", "ROUGE-LCS:", "RTF:", "sacreBLEU:", "chrF:"):
        assert line in out
    rows = [json.loads(x) for x in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(0 < r["tokens"] <= 12 and r["seconds"] > 0 for r in rows)
    assert rows[0]["reference"] == rows[0]["reference"].lower()
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["examples"] == 3
    assert summary["speed"]["generated_tokens"] == sum(r["tokens"] for r in rows)
    assert summary["speed"]["rtf"] == pytest.approx(
        sum(r["seconds"] for r in rows) / sum(r["tokens"] for r in rows)
    )
    assert set(summary["metrics"]) >= {"bleu", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf"}
    from medusa.evaluation.metrics import bleu1, sacrebleu_scores

    preds = [r["prediction"] for r in rows]
    standard = sacrebleu_scores(preds, [r["target"] for r in rows], "eng_Latn")  # raw references
    assert (summary["metrics"]["sacrebleu"], summary["metrics"]["chrf"]) == (
        standard["sacrebleu"],
        standard["chrf"],
    )
    # the seed's references
    assert summary["metrics"]["bleu"] == bleu1(preds, [r["reference"] for r in rows])
    import csv

    with open(out_dir / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["config"] == "single-head" and int(row["examples"]) == 3
    assert (
        float(row["rtf"]) == summary["speed"]["rtf"]
        and float(row["chrf"]) == summary["metrics"]["chrf"]
    )
    assert int(row["generated_tokens"]) == summary["speed"]["generated_tokens"]
    assert not (out_dir / "head-acceptance.png").exists()  # single-head drafts nothing
    assert summary["settings"]["max_output_len"] == 12
    assert summary["libraries"]["torch"] and summary["device"].startswith(("cpu", "cuda"))


def test_token_never_written(tiny_model_dir, tmp_path, capsys):
    secret = "hf_" + "x" * 34
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        [
            "-m",
            str(tiny_model_dir),
            "-d",
            "flores200-sample",
            "-n",
            "1",
            "-mol",
            "4",
            "-o",
            str(out_dir),
            "--hf-token",
            secret,
            "--prompt-style",
            "seed",
        ],
        capsys,
    )
    assert code == 0, err
    for f in out_dir.iterdir():
        assert secret not in f.read_text()
    assert secret not in out + err
    assert json.loads((out_dir / "summary.json").read_text())["settings"]["hf_token"] == "given"


def test_resume_continues_a_run_recorded_before_the_sandbox_flag(tiny_model_dir, tmp_path, capsys):
    """--sandbox changes no decoded token: a run.json without it (or with the other value) resumes.
    """
    out_dir = tmp_path / "run"
    base = ["-m", str(tiny_model_dir), "-mol", "5", "-o", str(out_dir), "--prompt-style", "seed"]
    assert run_cli(base + ["-n", "1"], capsys)[0] == 0
    record = json.loads((out_dir / "run.json").read_text())
    record.pop("sandbox", None)  # as a run recorded before the flag existed
    (out_dir / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(base + ["-n", "2", "--resume"], capsys)
    assert code == 0, err


def test_resume_skips_finished_examples(tiny_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "run"
    base = ["-m", str(tiny_model_dir), "-mol", "5", "-o", str(out_dir), "--prompt-style", "seed"]
    assert run_cli(base + ["-n", "2"], capsys)[0] == 0
    first = (out_dir / "predictions.jsonl").read_text().splitlines()
    # a crash mid-write leaves a cut line: it must be ignored, not fatal
    with open(out_dir / "predictions.jsonl", "a") as f:
        f.write('{"index": 2, "sou')
    code, _, err = run_cli(base + ["-n", "2"], capsys)
    assert code == 2 and "--resume" in err  # refuses to mix runs silently
    code, _, err = run_cli(base + ["-n", "3", "--resume"], capsys)
    assert code == 0, err
    assert "2 examples already" in err
    rows = [
        json.loads(x)
        for x in (out_dir / "predictions.jsonl").read_text().splitlines()
        if x.endswith("}")
    ]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert (out_dir / "predictions.jsonl").read_text().splitlines()[:2] == first
    # resuming with another setup would mix two kinds of rows in one result: refused, naming what
    # changed
    code, _, err = run_cli(base + ["-n", "4", "--resume", "-mol", "6"], capsys)
    assert code == 2 and "max_output_len: 5 then, 6 now" in err and "Traceback" not in err
    assert "loading base model" not in err  # a changed flag is seen before the model loads
    code, _, err = run_cli(base + ["-n", "4", "--resume", "--dtype", "bfloat16"], capsys)
    assert code == 2 and "dtype" in err
    # the record is left alone
    assert json.loads((out_dir / "run.json").read_text())["max_output_len"] == 5
    # more rows, more output: fine
    assert run_cli(base + ["-n", "4", "--resume", "--debug"], capsys)[0] == 0


def test_seed_setup_selected_by_hf_token_flag():
    s = settings_from_args(
        build_parser().parse_args(["--hf-token", "abc", "--decoding-strategy", "single-head"])
    )
    assert (s.setup, s.model_name, s.dataset, s.prompt_style) == (
        "seed",
        SEED_MODEL,
        SEED_DATASET,
        "seed",
    )
    assert (
        s.max_input_len,
        s.max_output_len,
        s.num_examples,
        s.use_no_medusa_heads,
        s.beam_width,
    ) == (1000, 50, 50, 2, 2)
    s = settings_from_args(build_parser().parse_args([]))
    assert (s.setup, s.model_name, s.dataset, s.prompt_style) == (
        "embedded",
        "embedded",
        "flores200-sample",
        "auto",
    )
    s = settings_from_args(
        build_parser().parse_args(
            [
                "-token",
                "t",
                "-ds",
                "multi-head",
                "-w",
                "5",
                "-nmh",
                "5",
                "-m",
                "x/y",
                "-mil",
                "10",
                "-mol",
                "7",
                "-db",
            ]
        )
    )
    assert (s.decoding_strategy, s.beam_width, s.use_no_medusa_heads, s.model_name, s.max_input_len,
            s.max_output_len, s.debug) == ("multi-head", 5, 5, "x/y", 10, 7, True)


def test_seed_command_fails_offline_only_at_the_hub(capsys):
    code, _, err = run_cli(["--hf-token", "dummy", "--decoding-strategy", "single-head"], capsys)
    assert code == 2
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "ai4bharat/IN22-Gen" in lines[0] and "Traceback" not in err


def test_too_many_heads(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(2, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True), lm
    )
    save_heads(heads, tmp_path / "heads", str(tiny_model_dir))
    code, _, err = run_cli(
        ["-m", str(tmp_path / "heads"), "-nmh", "3", "-n", "1", "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "more heads than the checkpoint has (2)" in err


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message shown when CUDA is absent"
)
def test_cuda_asked_but_absent(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(
        ["-m", str(tiny_model_dir), "--device", "cuda", "-n", "1", "-o", str(tmp_path)], capsys
    )
    assert code == 2 and "CUDA is not available" in err


def test_beam_wider_than_the_vocabulary(tiny_heads_dir, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-ds",
            "multi-head",
            "-w",
            "401",
            "-n",
            "1",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 2 and "larger than the vocabulary (400 tokens)" in err and "Traceback" not in err


def test_multi_head_needs_heads(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(
        ["-m", str(tiny_model_dir), "-ds", "multi-head", "-n", "1", "-o", str(tmp_path)], capsys
    )
    assert code == 2 and "needs Medusa heads" in err and "--medusa-heads" in err


def test_script_prints_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "medusa.py"), "-w", "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "medusa.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0 and "--use-no-medusa-heads" in proc.stdout and "-nmh" in proc.stdout


def test_help_lists_every_subcommand(capsys):
    from medusa.cli import SUBCOMMANDS

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and len(SUBCOMMANDS) >= 4
    for name in SUBCOMMANDS:  # every name main() dispatches, on a line of its own
        assert f"python medusa.py {name} " in out, name
    def help_of(flag: str) -> str:
        return " ".join(out.split(f"  {flag}", 1)[1].split("\n  --", 1)[0].split())

    assert "table.csv" in help_of("--assignment-table") and "plots" in help_of("--assignment-table")
    assert "summary.csv" in help_of("--output-dir")


@pytest.mark.parametrize(
    "command", ["train-heads", "calibrate-tree", "measure-acceptance", "finetune"]
)
def test_a_subcommand_flag_error_points_at_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--no-such-flag"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err
    assert f"(see python medusa.py {command} --help)" in err, err


@pytest.fixture(scope="module")
def tiny_heads_dir(student_heads_dir):
    """Heads-only checkpoint (3 shared-projection heads, lightly perturbed) on the tiny model:
    conftest's."""
    return student_heads_dir


@pytest.mark.parametrize("extra", [
    ["-ds", "multi-head", "-w", "2", "-nmh", "2"],
    ["-ds", "multi-head", "-w", "3", "-nmh", "3", "--adaptive"],
    ["-ds", "tree", "-nmh", "3"],
    ["-ds", "tree", "-nmh", "3", "--dynamic-tree", "10"],
    ["-ds", "multi-head", "--acceptance", "typical"],
    ["-ds", "multi-head", "--acceptance", "rescore"],
    ["-ds", "tree", "-nmh", "3", "--temperature", "0.8", "--top-k", "20"],
])
def test_medusa_strategies_end_to_end(tiny_heads_dir, tmp_path, capsys, extra):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-n",
            "3",
            "-mol",
            "10",
            "-o",
            str(out_dir),
            "--prompt-style",
            "seed",
            "--compare-single-head",
            *extra,
        ],
        capsys,
    )
    assert code == 0, err
    assert (
        "tokens/step (tau):" in out
        and "speedup vs single-head:" in out
        and "head acceptance:" in out
    )
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["model"]["num_heads"] == 3 and summary["model"]["head_format"] == "project"
    assert summary["speed"]["tokens_per_step"] >= 1
    assert (out_dir / "baseline-single-head.jsonl").is_file()
    sampled = "--temperature" in extra
    if "typical" not in extra and "rescore" not in extra and not sampled:  # greedy: lossless
        assert summary["identical_to_single_head"] == 3
        assert summary["divergence"]["outputs"] == [] and "every output equals single-head's" in out
    else:  # lossy rules differ by design, sampled runs agree in distribution only
        assert "divergence" not in summary
    assert ("equal in distribution, not token by token" in out) == sampled
    # every candidate is accepted whole: no per-head rate to plot (printed as n/a)
    if "rescore" in extra:
        assert "head acceptance: n/a" in out and not (out_dir / "head-acceptance.png").exists()
    else:
        assert (out_dir / "head-acceptance.png").read_bytes().startswith(b"\x89PNG")
    import csv

    with open(out_dir / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["speedup_vs_single_head"]) == summary["speedup_vs_single_head"]
    rate = summary["speed"]["head_acceptance"][0]
    # rescore: n/a, an empty cell
    assert row["head_1"] == "" if rate is None else float(row["head_1"]) == rate


def test_bad_tree_file_is_one_line(tiny_heads_dir, tmp_path, capsys):
    bad = tmp_path / "tree.json"
    bad.write_text("{not json")
    code, _, err = run_cli(["-m", str(tiny_heads_dir), "-ds", "tree", "--tree", str(bad), "-n", "1",
                            "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "tree.json" in err
    bad.write_text("[[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]")  # deeper than the 3 heads
    code, _, err = run_cli(["-m", str(tiny_heads_dir), "-ds", "tree", "--tree", str(bad), "-n", "1",
                            "-o", str(tmp_path / "o2")], capsys)
    assert code == 2 and "4 levels deep" in err


def test_calibrate_tree_command(tiny_heads_dir, tmp_path, capsys):
    out = tmp_path / "tree.json"
    code = main(
        [
            "calibrate-tree",
            "-m",
            str(tiny_heads_dir),
            "-n",
            "2",
            "-mol",
            "10",
            "--tree-size",
            "7",
            "--prompt-style",
            "seed",
            "-o",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "head top-1:" in printed
    tree = json.loads(out.read_text())
    assert len(tree["paths"]) == 7 and len(tree["top1"]) == 3 and tree["positions"] > 0
    code, _, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-ds",
            "tree",
            "--tree",
            str(out),
            "-n",
            "1",
            "-mol",
            "6",
            "--prompt-style",
            "seed",
            "-o",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    code = main(
        ["calibrate-tree", "-m", str(tiny_heads_dir), "--heads", "9", "-n", "1", "-o", str(out)]
    )
    assert code == 2 and "more than the model has" in capsys.readouterr().err


def test_tree_size_rebuilds_a_calibrated_tree(tiny_heads_dir, tmp_path, capsys):
    tree = tmp_path / "tree.json"
    assert (
        main(
            [
                "calibrate-tree",
                "-m",
                str(tiny_heads_dir),
                "-n",
                "2",
                "-mol",
                "8",
                "--tree-size",
                "7",
                "--prompt-style",
                "seed",
                "-o",
                str(tree),
            ]
        )
        == 0
    )
    capsys.readouterr()
    out_dir = tmp_path / "small"
    code, out, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-ds",
            "tree",
            "--tree",
            str(tree),
            "--tree-size",
            "3",
            "-n",
            "2",
            "-mol",
            "8",
            "--prompt-style",
            "seed",
            "--compare-single-head",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["settings"]["tree_size"] == 3 and summary["identical_to_single_head"] == 2
    assert "--tree-size 3 decodes" not in err  # a small tree gets no CPU hint
    code, _, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-ds",
            "multi-head",
            "--tree-size",
            "3",
            "-n",
            "1",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 2 and "-ds tree" in err
    code, _, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-ds",
            "tree",
            "--tree",
            "builtin",
            "--tree-size",
            "200",
            "-n",
            "1",
            "-o",
            str(tmp_path / "o3"),
        ],
        capsys,
    )
    # refused before loading
    assert code == 2 and "raise -nmh" in err and "loading base model" not in err
    # without --tree, --tree-size resizes the tree shipped beside the heads (more nodes than -nmh
    # 2's defaults allow)
    shipped = tmp_path / "heads"
    shutil.copytree(tiny_heads_dir, shipped)
    shutil.copy(tree, shipped / "tree.json")
    out_dir = tmp_path / "big"
    code, _, err = run_cli(
        [
            "-m",
            str(shipped),
            "-ds",
            "tree",
            "--tree-size",
            "120",
            "-n",
            "1",
            "-mol",
            "6",
            "--device",
            "cpu",
            "--prompt-style",
            "seed",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert (
        summary["tree_used"] == str(shipped / "tree.json")
        and summary["settings"]["tree_size"] == 120
    )
    assert "the tree has 120 nodes and a CPU pays for each; a small --tree-size (3 to 15)" in err
    assert "shipped drafter" not in err  # these heads are not the shipped drafter
    plain = tmp_path / "plain.json"
    plain.write_text('[[0], [1]]')
    code, _, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-ds",
            "tree",
            "--tree",
            str(plain),
            "--tree-size",
            "3",
            "-n",
            "1",
            "-o",
            str(tmp_path / "o2"),
        ],
        capsys,
    )
    assert code == 2 and "keeps no calibration accuracies" in err and "Traceback" not in err


def test_assignment_table(tiny_heads_dir, tmp_path, capsys):
    out_dir = tmp_path / "table"
    code, out, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-n",
            "2",
            "-mol",
            "6",
            "--prompt-style",
            "seed",
            "--assignment-table",
            "--acceptance",
            "rescore",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 2 and "needs 5 Medusa heads" in err and "has 3" in err
    assert not out_dir.exists() or not any(out_dir.iterdir())  # refused before running any row


def test_assignment_table_runs_every_row(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(5, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True), lm
    )
    save_heads(heads, tmp_path / "h5", str(tiny_model_dir))
    out_dir = tmp_path / "table"
    code, out, err = run_cli(
        [
            "-m",
            str(tmp_path / "h5"),
            "-n",
            "2",
            "-mol",
            "6",
            "--prompt-style",
            "seed",
            "--assignment-table",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    table = (out_dir / "table.md").read_text().splitlines()
    assert len(table) == 2 + 7 and table[2].startswith("| Single head |")
    assert table[-1].startswith("| Beam 10, Medusa heads 5 |")
    assert (
        "tokens/s" in table[0]
        and "speedup vs single head" in table[0]
        and table[2].endswith("| 1.00× |")
    )
    names = ["single-head", "w2-s2", "w2-s5", "w5-s2", "w5-s5", "w10-s2", "w10-s5"]
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == sorted(names)
    import csv

    with open(out_dir / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["config"] for r in rows] == names
    single = json.loads((out_dir / "single-head" / "summary.json").read_text())
    for r in rows:  # each row holds its own run's numbers; speedup is over the single-head row
        summary = json.loads((out_dir / r["config"] / "summary.json").read_text())
        assert float(r["tokens_per_second"]) == summary["speed"]["tokens_per_second"]
        assert float(r["tokens_per_step"]) == summary["speed"]["tokens_per_step"]
        assert (
            float(r["bleu"]) == summary["metrics"]["bleu"]
            and float(r["chrf"]) == summary["metrics"]["chrf"]
        )
        assert float(r["speedup_vs_single_head"]) == pytest.approx(
            summary["speed"]["tokens_per_second"] / single["speed"]["tokens_per_second"])
    assert (rows[1]["beam_width"], rows[1]["heads"], rows[-1]["beam_width"], rows[-1]["heads"]) == (
        "2",
        "2",
        "10",
        "5",
    )
    for png in ("quality-vs-rtf.png", "tau.png", "head-acceptance.png"):
        assert (out_dir / png).read_bytes().startswith(b"\x89PNG"), png
    args = [
        "-m",
        str(tmp_path / "h5"),
        "-n",
        "2",
        "-mol",
        "6",
        "--prompt-style",
        "seed",
        "--assignment-table",
        "-o",
        str(out_dir),
    ]
    # a finished table is never overwritten, and that is known before loading
    code, _, err = run_cli(args, capsys)
    assert (
        code == 2 and "already exists: pass --resume" in err and "loading base model" not in err
    ), err
    # a changed flag: refused before loading
    code, _, err = run_cli(args + ["--resume", "-mol", "7"], capsys)
    assert (
        code == 2 and "max_output_len: 6 then, 7 now" in err and "loading base model" not in err
    ), err
    # every row's sub-folder resumes: nothing decoded again
    code, out, err = run_cli(args + ["--resume"], capsys)
    assert code == 0 and err.count("resuming: 2 examples already in") == 7, err
    assert (out_dir / "table.md").read_text().splitlines()[2:] == table[2:]


STUDENT = '''
import torch


class MedusaTextGenerator:
    """Shaped like the course's starter code: greedy with the LM head, no cache, FasterDecoding
    calls."""

    def __init__(self, model, decoding_strategy, eos_id, use_no_medusa_heads, beam_width,
                 max_output_len):
        self.model, self.eos_id, self.max_output_len = model, eos_id, max_output_len
        assert decoding_strategy in ("single-head", "multi-head")
        assert len(model.medusa_head) >= use_no_medusa_heads

    def __call__(self, input_ids):
        out = []
        for _ in range(self.max_output_len):
            medusa_logits, outputs, orig = self.model(input_ids, medusa_forward=True,
                                                      output_orig=True)
            nxt = int(orig[0, -1].argmax())
            if nxt == self.eos_id:
                break
            out.append(nxt)
            nxt_ids = torch.tensor([[nxt]], device=input_ids.device)
            input_ids = torch.cat([input_ids, nxt_ids], dim=1)
        return torch.tensor(out)


class Broken:
    def __init__(self, *args):
        raise RuntimeError("student bug")
'''


def test_grading_a_student_generator(tiny_heads_dir, tmp_path, capsys):
    student = tmp_path / "student.py"
    student.write_text(STUDENT)
    out_dir = tmp_path / "graded"
    code, out, err = run_cli(
        [
            "-m",
            str(tiny_heads_dir),
            "-n",
            "3",
            "-mol",
            "8",
            "--prompt-style",
            "seed",
            "--generator",
            f"{student}:MedusaTextGenerator",
            "--compare-single-head",
            "-o",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    # ours is single-head: not decoded twice
    assert summary["grading"]["reference"]["agreement"]["identical"] == 3
    assert (
        summary["settings"]["generator"].endswith("MedusaTextGenerator")
        and "identical_to_single_head" not in summary
    )
    for spec, needle in ((f"{student}:Broken", "student bug"), (f"{student}:Nope", "has no Nope"),
                         ("missing.py:X", "does not exist"), ("nocolon", "FILE.py:ClassName")):
        code, _, err = run_cli(
            [
                "-m",
                str(tiny_heads_dir),
                "-n",
                "1",
                "--generator",
                spec,
                "--prompt-style",
                "seed",
                "-o",
                str(tmp_path / spec.replace("/", "_").replace(":", "_")),
            ],
            capsys,
        )
        assert code == 2 and needle in err, err


def test_batched_run_equals_one_row_at_a_time_in_dataset_order(tiny_heads_dir, tmp_path, capsys):
    """--batch-size 3 on the CPU (the fast step uncaptured): the same predictions and per-step
    counts as the one-row run, rows in dataset order, latency percentiles in the summary and on
    the console; an interrupted batched run resumes at the same batch size and not at another."""
    base = ["-m", str(tiny_heads_dir), "-n", "7", "-mol", "12", "--prompt-style", "seed",
            "-ds", "tree", "-nmh", "3", "--compare-single-head"]
    assert run_cli(base + ["-o", str(tmp_path / "one")], capsys)[0] == 0
    code, out, err = run_cli(base + ["-o", str(tmp_path / "three"), "--batch-size", "3"], capsys)
    assert code == 0, err
    assert "batch: 3 rows" in out and "latency per example p50" in out
    for name in ("predictions.jsonl", "baseline-single-head.jsonl"):
        one = [json.loads(x) for x in (tmp_path / "one" / name).read_text().splitlines()]
        three = [json.loads(x) for x in (tmp_path / "three" / name).read_text().splitlines()]
        assert [r["index"] for r in three] == list(range(7))
        for a, b in zip(one, three):
            assert (a["token_ids"], a["accepted_per_step"]) == (b["token_ids"],
                                                                b["accepted_per_step"])
            assert b["batch_size"] == 3 and 0 < b["seconds"] <= b["latency_seconds"]
    summary = json.loads((tmp_path / "three" / "summary.json").read_text())
    speed = summary["speed"]
    assert speed["latency_seconds_p50"] <= speed["latency_seconds_p90"]
    assert summary["identical_to_single_head"] == 7
    # interrupted after 4 rows (the last line cut off): resumed at the same batch size
    path = tmp_path / "three" / "predictions.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    (tmp_path / "three" / "summary.json").unlink()
    code, _, err = run_cli(base + ["-o", str(tmp_path / "three"), "--batch-size", "2"] +
                           ["--resume"], capsys)
    assert code == 2 and "batch_size: 3 then, 2 now" in err
    code, _, err = run_cli(base + ["-o", str(tmp_path / "three"), "--batch-size", "3",
                                   "--resume"], capsys)
    assert code == 0, err
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(7))
    assert [r["token_ids"] for r in rows] == [json.loads(x)["token_ids"] for x in (
        tmp_path / "one" / "predictions.jsonl").read_text().splitlines()]


def test_batch_size_needs_the_fast_engine(tiny_heads_dir, tmp_path, capsys):
    code, _, err = run_cli(["-m", str(tiny_heads_dir), "-n", "2", "-o", str(tmp_path / "r"),
                            "--batch-size", "2", "--engine", "eager"], capsys)
    assert code == 2 and "needs the fast engine" in err and "Traceback" not in err
    assert "loading base model" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["-m", str(tiny_heads_dir), "--batch-size", "0"])
    assert exit_.value.code == 2 and "--batch-size: must be at least 1" in capsys.readouterr().err


def test_assignment_table_at_a_batch_size_decodes_the_same_tokens(tiny_model_dir, tmp_path,
                                                                   capsys):
    """--assignment-table --batch-size 3: every row's predictions equal the one-row table's (the
    course's rescore rows included)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(5, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True), lm
    )
    save_heads(heads, tmp_path / "h5", str(tiny_model_dir))
    common = ["-m", str(tmp_path / "h5"), "-n", "4", "-mol", "6", "--prompt-style", "seed",
              "--assignment-table"]
    assert run_cli(common + ["-o", str(tmp_path / "one")], capsys)[0] == 0
    code, _, err = run_cli(common + ["-o", str(tmp_path / "three"), "--batch-size", "3"], capsys)
    assert code == 0, err
    configs = sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir())
    assert len(configs) == 7
    for name in configs:
        one, three = ([json.loads(x)["token_ids"] for x in (tmp_path / d / name /
                      "predictions.jsonl").read_text().splitlines()] for d in ("one", "three"))
        assert three == one, name
