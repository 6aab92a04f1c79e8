"""``python medusa.py finetune``: LoRA fine-tuning of a base model for translation (merged at load
by :mod:`medusa.model.adapters`).

The embedded SmolLM2 copies Hindi instead of translating it; a small LoRA adapter trained on public
Hindi–English pairs fixes that, is a few MB to ship, and is merged into the weights when the model
loads (so decoding pays nothing for it). Training uses the same chat prompt as evaluation and puts
the loss on the reply only, ending with the model's real end-of-turn token (not the GGUF's
mislabelled EOS).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medusa.model.batch_generate import batched_greedy
from medusa.console import say
from medusa.evaluation.data import load_examples
from medusa.evaluation.data_spec import PromptSpec
from medusa.model.embedded import EMBEDDED_NAME
from medusa.errors import MedusaError
from medusa.arg_types import COUNT, FRACTION, POSITIVE, SEED
from medusa.model.adapters import ADAPTER_WEIGHTS
from medusa.model.loader import SHIPPED_FOLDERS, load_model
from medusa.model.model_spec import BaseModelSpec
from medusa.evaluation.metrics import bleu1, sacrebleu_scores
from medusa.model import MedusaModel, stop_token_ids
from medusa.evaluation.prompts import encode_prompt

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class FinetuneSettings(BaseModelSpec, PromptSpec):
    """The base, the pairs, the LoRA's shape and its optimisation; languages and prompt as
    evaluation builds them."""

    train_data: list[str] = field(default_factory=list)
    eval_data: str | None = None
    prompt_style: str = "chat"
    max_target_len: int = 128
    eval_examples: int | None = 200
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-4
    output_dir: str = "adapter"
    seed: int = 0
    # off when the base model's score is already known: saves a full eval pass
    score_before: bool = True
    # the adapter file's dtype: half the bytes of fp32, the format the package ships
    save_dtype: str = "float16"


# Model types whose logits are the LM head of the last hidden state, nothing more (no soft-capping
# or scaling, as
# Gemma 2, Cohere or Granite apply): for these the reply-only loss below is exactly the model's own.
PLAIN_LOGITS = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3"})
SAVE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def end_of_turn_id(tokenizer, base_model) -> int:
    """The id a reply must end with: ``<|im_end|>``-style markers first, else the configured EOS."""
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if marker in vocab:
            return vocab[marker]
    stops = stop_token_ids(tokenizer, base_model)
    if not stops:
        raise MedusaError(
            "the tokenizer names no end-of-sequence token to train replies to end with"
        )
    return min(stops)


def training_pairs(
    s: FinetuneSettings, tokenizer, eos_id: int
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per pair; labels are -100 on the prompt, so only the reply is learnt."""
    pairs = []
    for name in s.train_data:
        examples, info = load_examples(name, s.src_lang, s.tgt_lang, None, s.hf_token)
        if not info.has_references:
            raise MedusaError(f"{name} has no {s.tgt_lang} side to train on")
        for ex in examples:
            prompt = encode_prompt(
                tokenizer, ex.source, s.src_lang, s.tgt_lang, s.prompt_style, s.max_input_len
            )
            reply = tokenizer(" " + ex.target if s.prompt_style == "seed" else ex.target,
                              add_special_tokens=False)["input_ids"][: s.max_target_len] + [eos_id]
            pairs.append((prompt + reply, [-100] * len(prompt) + reply))
    if not pairs:
        raise MedusaError("no training pairs: pass --train-data with at least one dataset")
    return pairs


def batches(pairs, batch_size: int, pad_id: int, seed: int):
    """Right-padded batches of similar length (sorted within shuffled chunks) to waste little
    compute."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    chunks = [order[i:i + batch_size * 32] for i in range(0, len(order), batch_size * 32)]
    out = []
    for chunk in chunks:
        chunk.sort(key=lambda i: len(pairs[i][0]))
        for i in range(0, len(chunk), batch_size):
            rows = [pairs[j] for j in chunk[i:i + batch_size]]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.full((len(rows), width), pad_id)
            labels = torch.full((len(rows), width), -100)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (x, y) in enumerate(rows):
                ids[r, : len(x)] = torch.tensor(x)
                labels[r, : len(y)] = torch.tensor(y)
                mask[r, : len(x)] = 1
            out.append((ids, labels, mask))
    random.Random(seed + 1).shuffle(out)
    return out


def translate(model, tokenizer, sources: list[str], s: FinetuneSettings, eos_ids: list[int],
              batch_size: int = 64) -> list[str]:
    """Batched greedy translations for before/after scoring."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    prompts = [
        encode_prompt(tokenizer, src, s.src_lang, s.tgt_lang, s.prompt_style, s.max_input_len)
        for src in sources
    ]
    outs = batched_greedy(
        model, prompts, s.max_target_len, eos_ids, pad, batch_size, progress="translating"
    )
    return [tokenizer.decode(o, skip_special_tokens=True).strip() for o in outs]


def score(
    model, tokenizer, s: FinetuneSettings, eos_ids: list[int], predictions_file: Path | None = None
) -> dict | None:
    """sacreBLEU, chrF and BLEU-1 (all on the raw references) of batched greedy translations of
    ``eval_data``.

    With ``predictions_file``, every source, translation and reference is written there (JSON
    lines), so samples can be quoted and scores recomputed without decoding again.
    """
    if not s.eval_data:
        return None
    examples, _ = load_examples(s.eval_data, s.src_lang, s.tgt_lang, s.eval_examples, s.hf_token)
    preds = translate(model, tokenizer, [ex.source for ex in examples], s, eos_ids)
    refs = [ex.target for ex in examples]
    result = sacrebleu_scores(preds, refs, s.tgt_lang)
    result.update(
        bleu1=bleu1(preds, refs),
        examples=len(examples),
        max_input_len=s.max_input_len,
        sample=preds[:3],
    )
    if predictions_file is not None:
        predictions_file.parent.mkdir(parents=True, exist_ok=True)
        predictions_file.write_text(
            "".join(
                json.dumps(
                    {"index": i, "source": ex.source, "prediction": p, "reference": ex.target},
                    ensure_ascii=False,
                )
                + "\n"
                for i, (ex, p) in enumerate(zip(examples, preds))
            ),
            encoding="utf-8",
        )
    return result


def save_adapter(model, out: Path, dtype: str) -> None:
    """The adapter's safetensors, with its LoRA weights cast to ``dtype`` (trained in fp32; shipped
    in 16 bits).

    The model in memory is rounded the same way first, so the score after training is the saved
    file's score.
    """
    from safetensors.torch import load_file, save_file

    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(p.to(SAVE_DTYPES[dtype]))
    model.save_pretrained(str(out), safe_serialization=True)
    weights = out / ADAPTER_WEIGHTS
    tensors = {k: v.to(SAVE_DTYPES[dtype]).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})


def reply_loss(model, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The causal-LM loss on the reply tokens, with the LM head applied to those positions alone.

    A translation prompt is several times longer than its reply, and the LM head over the full
    vocabulary is the largest matmul of a small model: the model's own ``labels=`` loss builds
    logits for every prompt position too (64 × 1,100 × 49,152 floats in the longest batch; one H200
    run with it held 83 GB). Same mean cross-entropy, in float32.
    """
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if (
        decoder is None
        or head is None
        or getattr(model.config, "model_type", None) not in PLAIN_LOGITS
    ):
        # a model the shortcut does not fit
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    logits = head(hidden[keep]).float()
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def check_settings(s: FinetuneSettings) -> None:
    """Settings that would fail after the model loaded, refused before it does."""
    if s.rank < 1 or s.epochs < 1 or s.batch_size < 1:
        raise MedusaError("need --rank ≥ 1, --epochs ≥ 1 and --batch-size ≥ 1")
    if s.save_dtype not in SAVE_DTYPES:
        raise MedusaError(f"--save-dtype must be one of {', '.join(SAVE_DTYPES)} "
                          f"(got {s.save_dtype!r})")
    held = {Path(s.eval_data).name} if s.eval_data else set()
    overlap = {Path(d).name for d in s.train_data} & held
    if overlap:
        raise MedusaError(f"{', '.join(overlap)} is both trained and evaluated on: hold the "
                          "evaluation set out")
    if s.model_name in SHIPPED_FOLDERS:
        raise MedusaError(f"finetune trains a translator on a base model, and {s.model_name} is "
                          f"one already: use --model-name {EMBEDDED_NAME}")


def finetune(s: FinetuneSettings) -> dict:
    """Train a LoRA adapter on the pairs, score before/after on ``eval_data``, save the adapter
    (safetensors)."""
    from peft import LoraConfig, get_peft_model

    check_settings(s)
    torch.manual_seed(s.seed)
    wrapped: MedusaModel = load_model(s.load_settings(embedded_extras=False))
    base, tokenizer = wrapped.base_model, wrapped.tokenizer
    eos_id = end_of_turn_id(tokenizer, base)
    eos_ids = sorted(stop_token_ids(tokenizer, base) | {eos_id})
    pairs = training_pairs(s, tokenizer, eos_id)
    say(f"{len(pairs)} training pairs from {', '.join(s.train_data)}; replies end with id {eos_id}")
    out = Path(s.output_dir)
    before = score(base, tokenizer, s, eos_ids) if s.score_before else None
    if before:
        say(f"before: sacreBLEU {before['sacrebleu']:.2f}, chrF {before['chrf']:.2f}")
    base.float()  # LoRA weights and optimiser in fp32; bf16 autocast on CUDA keeps it fast
    model = get_peft_model(base, LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout,
                                            target_modules=list(LORA_TARGETS),
                                            task_type="CAUSAL_LM"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    losses = train_lora(model, pairs, s, pad)
    save_adapter(model, out, s.save_dtype)
    after = score(model, tokenizer, s, eos_ids, out / "eval_predictions.jsonl")
    if after:
        say(f"after: sacreBLEU {after['sacrebleu']:.2f}, chrF {after['chrf']:.2f}")
    report = {"settings": {k: v for k, v in asdict(s).items() if k != "hf_token"},
              "pairs": len(pairs), "loss_first": losses[0], "loss_last": losses[-1],
              "before": before, "after": after}
    (out / "finetune_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False)
                                              + "\n")
    say(f"saved adapter to {out}")
    return report


def train_lora(model, pairs, s: FinetuneSettings, pad: int) -> list[float]:
    """AdamW with a 5 % warm-up and a cosine decay over ``s.epochs`` passes; each step's loss.
    The model is left in eval mode."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=s.lr)
    total = math.ceil(len(pairs) / s.batch_size) * s.epochs
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * t / total)))
    device = next(model.parameters()).device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    from tqdm.auto import tqdm

    losses = []
    model.train()
    bar = tqdm(total=total, desc="finetune", unit="step", dynamic_ncols=True)
    for epoch in range(s.epochs):
        for ids, labels, mask in batches(pairs, s.batch_size, pad, s.seed + epoch):
            with autocast:
                loss = reply_loss(model, ids.to(device), labels.to(device), mask.to(device))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return losses


HELPS = {"model_name": "the base model to fine-tune: a local folder, a hub id or a .gguf file "
         "({default})"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every value is refused before loading when it is out of range."""
    d = FinetuneSettings()
    BaseModelSpec.add_arguments(p, d, HELPS, only=("model_name",))
    p.add_argument("--train-data", action="append", default=[], required=True,
                   help="a dataset to train on (repeatable): local file/folder set or hub id with "
                   "both languages")
    p.add_argument("--eval-data", default=None,
                   help="held-out set scored before and after (sacreBLEU, chrF)")
    PromptSpec.add_arguments(p, d, auto_style=False)
    for name, kind, text in (
            ("max-target-len", COUNT, "reference tokens trained on per pair, and new tokens when "
             "scoring"),
            ("eval-examples", COUNT, "first N rows of --eval-data scored"),
            ("rank", COUNT, "LoRA rank"),
            ("alpha", COUNT, "LoRA alpha: the update scaled by alpha/rank"),
            ("dropout", FRACTION, "LoRA dropout"), ("epochs", COUNT, "passes over the pairs"),
            ("batch-size", COUNT, "pairs per step"),
            ("lr", POSITIVE, "peak learning rate, warm-up then cosine"),
            ("output-dir", str, "where the adapter goes"), ("seed", SEED, "random seed")):
        default = getattr(d, name.replace("-", "_"))
        p.add_argument(f"--{name}", type=kind, default=default, help=f"{text} ({default})")
    BaseModelSpec.add_arguments(p, d, only=("device", "dtype", "hf_token"))
    p.add_argument("--save-dtype", choices=list(SAVE_DTYPES), default=d.save_dtype,
                   help=f"the adapter file's type ({d.save_dtype})")
    p.add_argument("--no-score-before", dest="score_before", action="store_false",
                   help="skip scoring the model before training (when that score is already known)")
