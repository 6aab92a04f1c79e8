"""measure-acceptance end to end on a tiny model: files written, τ per strategy, per-head accuracy;
bad grids refused."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_model
from medusa.measure.acceptance_report import parse_grid
from medusa.model.checkpoints import save_heads
from medusa.cli import main
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads


def _heads_dir(tiny_model_dir, tmp_path):
    base = make_model()
    heads = MedusaHeads(HeadConfig(3, 1, base.config.hidden_size, base.config.vocab_size, True),
                        base.get_output_embeddings())
    with torch.no_grad():
        for name, p in heads.named_parameters():
            if "linear" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    return save_heads(heads, tmp_path / "heads", str(tiny_model_dir))


def test_measure_acceptance_writes_tau_for_every_strategy(tiny_model_dir, tmp_path, capsys):
    heads = _heads_dir(tiny_model_dir, tmp_path)
    out = tmp_path / "acc"
    code = main(
        [
            "measure-acceptance",
            "--model-name",
            str(heads),
            "-d",
            "flores200-sample",
            "-d",
            "in22-gen-sample",
            "-n",
            "3",
            "--prompt-style",
            "seed",
            "-mol",
            "12",
            "--multi-head",
            "2:2",
            "--multi-head",
            "3:3",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "acceptance.json").read_text())
    assert set(report["datasets"]) == {"flores200-sample", "in22-gen-sample"}
    for entry in report["datasets"].values():
        assert entry["rows"] == 3 and len(entry["top1"]) == 3 and len(entry["top5"]) == 3
        assert all(a <= b for a, b in zip(entry["top1"], entry["top5"]))
        assert set(entry["tau"]) == {
            "multi-head W2 S2",
            "multi-head W3 S3",
            "tree (built-in, 3 heads)",
        }
        assert all(1.0 <= t <= 4.0 for t in entry["tau"].values())
    assert "| multi-head W2 S2 |" in (out / "acceptance.md").read_text()


def test_several_trees_are_replayed_in_one_pass(tiny_model_dir, tmp_path):
    from medusa.decoding.trees import save_tree

    heads = _heads_dir(tiny_model_dir, tmp_path)
    save_tree([(0,), (1,), (0, 0)], str(tmp_path / "small.json"))
    out = tmp_path / "acc"
    assert (
        main(
            [
                "measure-acceptance",
                "--model-name",
                str(heads),
                "-d",
                "flores200-sample",
                "-n",
                "2",
                "--prompt-style",
                "seed",
                "-mol",
                "10",
                "--multi-head",
                "2:2",
                "--tree",
                "builtin",
                "--tree",
                str(tmp_path / "small.json"),
                "--device",
                "cpu",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    tau = json.loads((out / "acceptance.json").read_text())["datasets"]["flores200-sample"]["tau"]
    assert {"tree (built-in, 3 heads)", "tree (small.json)"} <= set(tau)


def test_bad_grids_are_refused(tiny_model_dir, tmp_path, capsys):
    for item in ("5x2", "0:2"):
        try:
            parse_grid([item], 5)
        except MedusaError:
            continue
        raise AssertionError(f"{item} was accepted")
    heads = _heads_dir(tiny_model_dir, tmp_path)
    assert (
        main(
            [
                "measure-acceptance",
                "--model-name",
                str(heads),
                "--multi-head",
                "2:9",
                "--device",
                "cpu",
                "-o",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "the model has 3" in capsys.readouterr().err


def test_path_dependent_drafters_are_replayed_drafting_each_step(tiny_model_dir, tmp_path, capsys):
    """Sequential heads: τ from a replay that drafts for real at every visited position (equal to
    decoding every row by hand), head accuracy from teacher forcing."""
    from transformers import AutoModelForCausalLM

    from medusa.decoding import DecodeSettings, generate, make_strategy

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = HeadConfig(3, 1, base.config.hidden_size, base.config.vocab_size, True,
                        drafter="sequential")
    heads = MedusaHeads(config, base.get_output_embeddings(), base.get_input_embeddings())
    with torch.no_grad():
        for name, p in heads.named_parameters():
            if "linear" in name or "seq_proj" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
    folder = save_heads(heads, tmp_path / "heads", str(tiny_model_dir))
    out = tmp_path / "acc"
    code = main(
        [
            "measure-acceptance",
            "--model-name",
            str(folder),
            "-d",
            "flores200-sample",
            "-n",
            "3",
            "--prompt-style",
            "seed",
            "-mol",
            "12",
            "--multi-head",
            "2:2",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "drafting each step with the sequential drafter" in err
    entry = json.loads((out / "acceptance.json").read_text())["datasets"]["flores200-sample"]
    assert entry["tau_method"] == "replayed, drafted per step"
    assert all(a <= b for a, b in zip(entry["top1"], entry["top5"]))
    # τ of the tree equals decoding the same prompts by hand
    from medusa.evaluation.data import load_examples
    from medusa.evaluation.prompts import encode_prompts
    from medusa.model import stop_token_ids
    from medusa.model.loader import LoadSettings, load_model

    model = load_model(LoadSettings(str(folder), device="cpu"))
    examples, _ = load_examples("flores200-sample", "hin_Deva", "eng_Latn", 3)
    prompts = encode_prompts(
        model.tokenizer, [e.source for e in examples], "hin_Deva", "eng_Latn", "seed", 1000
    )
    stops = stop_token_ids(model.tokenizer, model.base_model)
    steps = []
    for prompt in prompts:
        steps += generate(
            model, make_strategy(DecodeSettings("tree", 3)), prompt, 12, stops
        ).accepted_per_step
    assert entry["tau"]["tree (built-in, 3 heads)"] == round(sum(steps) / len(steps), 4)


@pytest.mark.parametrize(
    "module", ["medusa.measure.acceptance_report", "medusa.measure.calibration_run"]
)
def test_every_flag_of_the_measuring_commands_has_help(module):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    bare = [
        a.option_strings[0]
        for a in parser._actions
        if a.option_strings and a.option_strings[0] != "-h" and not a.help
    ]
    assert not bare, f"flags without help: {bare}"
