"""LoRA fine-tuning on a tiny model: loss falls, the adapter saves, and merging equals peft's
unmerged model."""

from __future__ import annotations

import json

import pytest
import torch

from medusa.errors import MedusaError
from medusa.model.adapters import merge_adapter
from medusa.training.finetune import FinetuneSettings, end_of_turn_id, finetune, training_pairs

PAIRS = [
    ("मैं घर जा रहा हूँ", "I am going home"),
    ("वह किताब पढ़ती है", "She reads a book"),
    ("हम पानी पीते हैं", "We drink water"),
    ("बच्चे खेल रहे हैं", "The children are playing"),
]


@pytest.fixture()
def parallel(tmp_path):
    folder = tmp_path / "par"
    folder.mkdir()
    for split, rows in (("train", PAIRS * 4), ("heldout", PAIRS[:2])):
        (folder / f"{split}.hin_Deva").write_text("\n".join(h for h, _ in rows) + "\n")
        (folder / f"{split}.eng_Latn").write_text("\n".join(e for _, e in rows) + "\n")
    return folder


def test_finetune_lowers_loss_and_adapter_merges_exactly(tiny_model_dir, parallel, tmp_path):
    out = tmp_path / "adapter"
    s = FinetuneSettings(
        model_name=str(tiny_model_dir),
        train_data=[str(parallel / "train")],
        eval_data=str(parallel / "heldout"),
        eval_examples=2,
        rank=4,
        alpha=8,
        epochs=8,
        batch_size=4,
        lr=5e-3,
        output_dir=str(out),
        device="cpu",
        max_input_len=64,
    )
    report = finetune(s)
    assert report["loss_last"] < report["loss_first"]
    assert report["pairs"] == 16 and "sacrebleu" in report["after"] and "chrf" in report["before"]
    assert (out / "adapter_model.safetensors").is_file() and (
        out / "finetune_report.json"
    ).is_file()
    assert 0.0 <= report["after"]["bleu1"] <= 1.0 and report["after"]["max_input_len"] == 64
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in rows] == [e for _, e in PAIRS[:2]] and rows[0][
        "prediction"
    ] == report["after"]["sample"][0]
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(out / "adapter_model.safetensors")).values()} == {
        torch.float16
    }

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 33, 48, 60, 7]])
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)
    ).eval()
    merged = merge_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        a, b, c = unmerged(ids).logits, merged(ids).logits, plain(ids).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(b, c, atol=1e-4)  # the adapter changed something


def test_before_score_can_be_skipped_and_the_saved_dtype_chosen(tiny_model_dir, parallel, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "adapter32"
    s = FinetuneSettings(
        model_name=str(tiny_model_dir),
        train_data=[str(parallel / "train")],
        eval_data=str(parallel / "heldout"),
        eval_examples=2,
        rank=2,
        epochs=1,
        batch_size=8,
        output_dir=str(out),
        device="cpu",
        max_input_len=64,
        score_before=False,
        save_dtype="float32",
    )
    report = finetune(s)
    assert report["before"] is None and "chrf" in report["after"]
    assert {t.dtype for t in load_file(str(out / "adapter_model.safetensors")).values()} == {
        torch.float32
    }
    with pytest.raises(MedusaError, match="save-dtype"):
        finetune(FinetuneSettings(train_data=[str(parallel / "train")], save_dtype="int8"))


def test_replies_end_with_end_of_turn_and_only_replies_are_learnt(tiny_tokenizer, parallel):
    s = FinetuneSettings(train_data=[str(parallel / "train")], max_input_len=64)
    eos = end_of_turn_id(tiny_tokenizer, None)
    assert eos == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, labels = training_pairs(s, tiny_tokenizer, eos)[0]
    assert ids[-1] == eos and labels[-1] == eos
    first = next(i for i, y in enumerate(labels) if y != -100)
    assert all(y == -100 for y in labels[:first]) and labels[first:] == ids[first:]
    assert tiny_tokenizer.decode(ids[first:-1]) == PAIRS[0][1]


def test_training_on_the_evaluation_set_is_refused(parallel):
    s = FinetuneSettings(train_data=[str(parallel / "train")], eval_data=str(parallel / "train"))
    with pytest.raises(MedusaError, match="held out|hold"):
        finetune(s)


def test_finetune_command_then_adapter_flag(tiny_model_dir, parallel, tmp_path, capsys):
    from medusa.cli import main

    out = tmp_path / "ad"
    assert (
        main(
            [
                "finetune",
                "-m",
                str(tiny_model_dir),
                "--train-data",
                str(parallel / "train"),
                "--epochs",
                "1",
                "--rank",
                "2",
                "--batch-size",
                "8",
                "--device",
                "cpu",
                "--output-dir",
                str(out),
                "--no-score-before",
                "--save-dtype",
                "bfloat16",
            ]
        )
        == 0
    )
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(out / "adapter_model.safetensors")).values()} == {
        torch.bfloat16
    }
    code = main(
        [
            "-m",
            str(tiny_model_dir),
            "--adapter",
            str(out),
            "-d",
            str(parallel / "heldout"),
            "-n",
            "2",
            "-mol",
            "5",
            "--prompt-style",
            "seed",
            "-o",
            str(tmp_path / "run"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "+ adapter" in captured.err
    code = main(
        [
            "-m",
            str(tiny_model_dir),
            "--adapter",
            str(tmp_path / "nope"),
            "-n",
            "1",
            "-o",
            str(tmp_path / "r2"),
        ]
    )
    assert code == 2 and "--adapter" in (err := capsys.readouterr().err) and "does not exist" in err


def test_reply_loss_equals_the_models_own_loss(tiny_model_dir, tiny_tokenizer, parallel):
    """The shortcut (LM head on reply positions only) must be the model's labels= loss, also through
    peft's LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from medusa.training.finetune import batches, reply_loss

    s = FinetuneSettings(train_data=[str(parallel / "train")], max_input_len=64)
    pairs = training_pairs(s, tiny_tokenizer, end_of_turn_id(tiny_tokenizer, None))
    ids, labels, mask = batches(pairs, 5, 0, seed=0)[0]
    # mostly prompt: the case the shortcut is for
    assert (labels == -100).sum() > (labels != -100).sum()
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=2, target_modules=["q_proj", "down_proj"], init_lora_weights=False),
    )
    # no fallback here
    assert model.get_decoder() is not None and model.get_output_embeddings() is not None
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    short = reply_loss(model, ids, labels, mask)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
    short.backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in model.named_parameters()
        if "lora_" in n
    )


def test_reply_loss_falls_back_to_the_models_own_loss_for_other_logits(
    tiny_model_dir, tiny_tokenizer, parallel
):
    """A model type whose logits are more than the LM head (soft-capped, scaled) gets the model's
    own loss."""
    from transformers import AutoModelForCausalLM

    from medusa.training.finetune import batches, reply_loss

    s = FinetuneSettings(train_data=[str(parallel / "train")], max_input_len=64)
    ids, labels, mask = batches(
        training_pairs(s, tiny_tokenizer, end_of_turn_id(tiny_tokenizer, None)), 3, 0, 0
    )[0]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(k.get("labels") is not None) or forward(*a, **k)
    reply_loss(model, ids, labels, mask)
    assert calls == []  # llama: the shortcut, the full forward never runs
    model.config.model_type = "cohere"
    reply_loss(model, ids, labels, mask)
    assert calls == [True]


def test_saved_adapter_is_what_the_model_in_memory_holds(tiny_model_dir, tmp_path):
    """save_adapter rounds the trained fp32 LoRA weights in memory too, so the after-training score
    is the file's."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from medusa.training.finetune import save_adapter

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 1e-3)  # not representable in fp16
    save_adapter(model, tmp_path, "float16")
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(saved) == len(trained) > 0
    for name, tensor in saved.items():
        match = [
            p
            for n, p in trained.items()
            if n.replace(".default", "").endswith(name.split("base_model.model.", 1)[1])
        ]
        assert len(match) == 1 and match[0].dtype == torch.float32
        assert torch.equal(match[0], tensor.float())
