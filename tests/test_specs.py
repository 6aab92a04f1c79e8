"""The shared settings specs: each one's flags round-trip (parsed flags → spec → the same values),
every command declares a shared flag alike (names, type, choices, default, the same refusal), every
flag of every command has help, and the run's settings keep the keys its summary files have
always had."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from medusa.arg_types import settings_from_namespace
from medusa.cli import build_parser, main, settings_from_args, subcommand_parser
from medusa.evaluation.data_spec import DataSpec, PromptSpec
from medusa.evaluation.results import check_resume_before_loading
from medusa.errors import MedusaError
from medusa.model.model_spec import BaseModelSpec, ModelSpec, ServedBaseSpec
from medusa.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
# a summary.json the main run wrote (the CPU demo): its settings block's keys are the contract
DEMO_SUMMARY = ROOT / "docs" / "measured" / "speed" / "demo-cpu-flores-sample-50-2-threads.json"
# an older summary, written before some flags existed
OLD_SUMMARY = ROOT / "docs" / "measured" / "engines" / "cli-h200-tree-graphs-summary.json"

SUBCOMMAND_MODULES = {
    "calibrate-tree": "medusa.measure.calibration_run",
    "measure-acceptance": "medusa.measure.acceptance_report",
    "train-heads": "medusa.training.train_heads",
    "finetune": "medusa.training.finetune",
}
SHARED = {f.name for spec in (ModelSpec, DataSpec) for f in fields(spec)}
# the defaults a command chooses for itself (the main run's model and data come from --setup)
OWN_DEFAULTS = {"model_name", "dataset", "num_examples", "prompt_style"}


def parsers() -> dict[str, argparse.ArgumentParser]:
    import importlib

    found = {"main": build_parser()}
    for name, module in SUBCOMMAND_MODULES.items():
        found[name] = subcommand_parser(name, "", importlib.import_module(module).add_arguments)
    return found


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


ROUND_TRIPS = [
    (BaseModelSpec, ["-m", "org/base", "--device", "cpu", "--dtype", "bfloat16", "-token", "t"],
     {"model_name": "org/base", "device": "cpu", "dtype": "bfloat16", "hf_token": "t"}),
    (ServedBaseSpec, ["--adapter", "lora/", "--device-map", "auto", "--max-memory", "0=9GiB"],
     {"adapter": "lora/", "device_map": "auto", "max_memory": "0=9GiB"}),
    (ModelSpec, ["--medusa-heads", "heads/", "-m", "x/y"], {"medusa_heads": "heads/",
                                                            "model_name": "x/y"}),
    (PromptSpec, ["--src-lang", "ben_Beng", "--tgt-lang", "eng_Latn", "--prompt-style", "seed",
                  "-mil", "77"],
     {"src_lang": "ben_Beng", "prompt_style": "seed", "max_input_len": 77}),
    (DataSpec, ["-d", "in22-gen-sample", "--split", "dev", "-n", "7", "--max-input-len", "12"],
     {"dataset": "in22-gen-sample", "split": "dev", "num_examples": 7, "max_input_len": 12}),
]


@pytest.mark.parametrize("spec,argv,changed", ROUND_TRIPS, ids=lambda x: getattr(x, "__name__", ""))
def test_a_spec_round_trips_through_its_flags(spec, argv, changed):
    parser = argparse.ArgumentParser()
    spec.add_arguments(parser, spec())
    assert settings_from_namespace(spec, parser.parse_args([])) == spec()
    parsed = settings_from_namespace(spec, parser.parse_args(argv))
    assert parsed == spec(**changed)
    assert set(flags(parser)) == {f.name for f in fields(spec)}  # one flag per field, no more


def test_every_command_declares_a_shared_flag_alike():
    by_command = {name: flags(p) for name, p in parsers().items()}
    for dest in sorted(SHARED):
        actions = {name: found[dest] for name, found in by_command.items() if dest in found}
        assert len(actions) >= 2, dest
        first = next(iter(actions.values()))
        for name, action in actions.items():
            where = f"{name} {action.option_strings[0]}"
            assert action.option_strings == first.option_strings, where
            if dest != "dataset":  # commands that pool or measure several datasets repeat it
                assert type(action) is type(first), where
            assert action.type is first.type, where
            assert getattr(action, "check", None) is getattr(first, "check", None), where
            if dest == "prompt_style":  # training commands have no tokenizer check to settle auto
                assert set(action.choices) - {"auto"} == set(first.choices) - {"auto"}, where
            else:
                assert action.choices == first.choices, where
            if dest not in OWN_DEFAULTS:
                assert action.default == first.default, where


@pytest.mark.parametrize("flag", ["--max-input-len", "--num-examples"])
def test_a_shared_flag_refuses_a_bad_value_with_the_same_line(flag, capsys):
    lines = {}
    for name, parser in parsers().items():
        if not any(flag in a.option_strings for a in parser._actions):
            continue
        argv = ([] if name == "main" else [name]) + [flag, "0"]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.count("\n") == 0, err
        lines[name] = err.split(" (see python")[0]
    assert len(lines) >= 4, lines
    assert set(lines.values()) == {f"error: {flag} must be at least 1, got 0"}, lines


def test_every_flag_of_every_command_has_help():
    bare = [f"{name} {a.option_strings[0]}" for name, p in parsers().items()
            for a in flags(p).values() if not a.help]
    assert not bare, f"flags without help: {bare}"


# settings the recorded demo summary does not hold (sampling, batches)
SAMPLING_KEYS = {"temperature", "top_k", "top_p", "batch_size"}


def test_the_run_settings_keep_the_summary_keys():
    written = json.loads(DEMO_SUMMARY.read_text(encoding="utf-8"))["settings"]
    assert set(RunSettings().public_dict()) == set(written) | SAMPLING_KEYS
    assert set(settings_from_args(build_parser().parse_args([])).public_dict()) == (
        set(written) | SAMPLING_KEYS)


def test_resume_reads_a_run_record_written_from_older_settings(tmp_path):
    """An older run's settings (fewer keys) still resume when nothing changed, and a changed flag
    is named."""
    old = json.loads(OLD_SUMMARY.read_text(encoding="utf-8"))["settings"]
    names = {f.name for f in fields(RunSettings)}
    assert set(old) <= names
    (tmp_path / "run.json").write_text(json.dumps(old), encoding="utf-8")
    same = RunSettings(**{**{k: v for k, v in old.items() if k != "hf_token"}, "hf_token": None})
    check_resume_before_loading(tmp_path, same.public_dict())
    other = RunSettings(**{**same.public_dict(), "hf_token": None, "max_output_len": 3})
    with pytest.raises(MedusaError, match="max_output_len"):
        check_resume_before_loading(tmp_path, other.public_dict())


def test_the_main_settings_are_the_flags_of_the_same_names():
    argv = ["-ds", "multi-head", "-w", "3", "-nmh", "4", "-m", "x/y", "-mil", "9", "-mol", "8",
            "--acceptance", "typical", "--posterior-threshold", "0.2", "--posterior-alpha", "0.5",
            "--medusa-heads", "h/", "--adapter", "a/", "-d", "in22-gen-sample", "--split", "dev",
            "--src-lang", "ben_Beng", "-n", "5", "--prompt-style", "seed", "--device", "cpu",
            "--dtype", "float32", "--engine", "eager", "-o", "out", "--resume", "--no-warmup",
            "--seed", "4", "--adaptive", "--compare-single-head"]
    s = settings_from_args(build_parser().parse_args(argv))
    assert s == RunSettings(
        setup="embedded", model_name="x/y", medusa_heads="h/", adapter="a/",
        dataset="in22-gen-sample", split="dev", src_lang="ben_Beng", num_examples=5,
        decoding_strategy="multi-head", beam_width=3, use_no_medusa_heads=4, acceptance="typical",
        posterior_threshold=0.2, posterior_alpha=0.5, adaptive=True, compare_single_head=True,
        max_input_len=9, max_output_len=8, prompt_style="seed", device="cpu", dtype="float32",
        engine="eager", output_dir="out", seed=4, warmup=False, resume=True,
        hf_token=s.hf_token)  # HF_TOKEN of the environment, if set
    assert s.load_settings().small_fp32 and s.load_settings().adapter == "a/"
