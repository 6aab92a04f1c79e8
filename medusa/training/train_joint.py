"""``train-heads --joint-lora``: Medusa-2 style joint training of the heads and a LoRA on the base
model.

The heads get a base whose hidden states also learn to serve them, while a KL term to the original
model's own next-token distribution (the adapter switched off) keeps the base model's predictions
where they were — the outputs users verify against must not drift. Hidden states change every step
here, so nothing is cached.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn import functional as F

from medusa.model.checkpoints import save_heads
from medusa.console import say
from medusa.errors import MedusaError
from medusa.drafters import Drafter, build_drafter, drafter_class
from medusa.model.loader import LoadSettings, load_model, training_base
from medusa.model import MedusaModel
from medusa.training.train_heads import (SEQUENCES, TrainSettings, evaluate_heads, head_loss,
                                         hidden_and_targets, resolve_drafter,
                                         self_distilled_sequences, split_by_source)

ADAPTER_DIR = "adapter"


def pad_batch(rows: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and a mask of the positions that predict generated tokens.
    """
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    gen = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r["ids"])
        ids[i, :n] = torch.tensor(r["ids"])
        mask[i, :n] = 1
        gen[i, max(r["prompt_len"] - 1, 0): n - 1] = True
    return ids, mask, gen


def joint_step(model: MedusaModel, peft_model, heads: Drafter, rows: list[dict], pad_id: int,
               weights: torch.Tensor, head_weight: float) -> tuple[torch.Tensor, float]:
    """KL(original ‖ adapted) on generated positions + head_weight × Σ_k w_k CE(head k)."""
    device = model.device
    ids, mask, gen = (t.to(device) for t in pad_batch(rows, pad_id))
    with torch.no_grad(), peft_model.disable_adapter():
        original = model.step(ids, None, attention_mask=mask).logits[gen].float().log_softmax(-1)
    out = model.step(ids, None, attention_mask=mask)
    adapted = out.logits[gen].float().log_softmax(-1)
    kl = F.kl_div(adapted, original, log_target=True, reduction="batchmean")
    k = heads.config.num_heads
    targets = torch.full(ids.shape + (k,), -100, device=device)
    for h in range(k):
        shift = h + 2
        if ids.shape[1] > shift:
            future = torch.where(
                mask[:, shift:].bool(), ids[:, shift:], torch.full_like(ids[:, shift:], -100)
            )
            targets[:, :-shift, h] = future
    # the token after each position: what drafters that read the next token see
    next_ids = torch.roll(ids, -1, dims=1)[gen]
    head_logits = heads(out.hidden[gen].float(), None, next_ids)
    loss = kl + head_weight * head_loss(head_logits, targets[gen], weights)
    return loss, kl.item()


def train_joint(s: TrainSettings) -> dict:
    """Joint heads + LoRA training on self-distilled sequences; saves heads (naming the adapter) and
    the adapter."""
    from peft import LoraConfig, get_peft_model

    from medusa.training.finetune import LORA_TARGETS

    if s.adapter:
        raise MedusaError(
            "--joint-lora trains its own LoRA and saves only that one: merge --adapter into the"
            " base first (or train frozen-base heads without --joint-lora)"
        )
    if s.num_heads < 1 or s.epochs < 1 or s.batch_size < 1 or s.rank < 1:
        raise MedusaError("need --num-heads ≥ 1, --epochs ≥ 1, --batch-size ≥ 1 and --rank ≥ 1")
    kind = drafter_class(resolve_drafter(s).drafter)  # (--token-input is --drafter token-input)
    if not kind.joint_training:
        raise MedusaError(f"--joint-lora trains the heads with the base; {kind.name} drafters "
                          "train on a frozen base")
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(s.seed)
    torch.manual_seed(s.seed)
    # embedded:faithful = embedded + its adapter
    s.model_name, s.adapter = training_base(s.model_name, s.adapter)
    model = load_model(
        LoadSettings(
            s.model_name,
            None,
            s.hf_token,
            s.device,
            s.dtype,
            adapter=s.adapter,
            embedded_extras=False,
        )
    )
    rows = self_distilled_sequences(model, s, out / SEQUENCES)
    train, held = split_by_source(rows, s)
    base = model.base_model.float()
    for p in base.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=s.rank,
            lora_alpha=s.alpha,
            lora_dropout=0.0,
            target_modules=list(LORA_TARGETS),
            task_type="CAUSAL_LM",
        ),
    )
    lm_head = model.lm_head
    config = kind.training_config(s.num_heads, s.num_layers, lm_head.weight.shape[1],
                                  lm_head.weight.shape[0], s.shared_lm_head, 0)
    heads = build_drafter(config, lm_head, base.get_input_embeddings())
    heads = heads.to(device=lm_head.weight.device, dtype=torch.float32)
    model.heads = heads
    params = [p for p in peft_model.parameters() if p.requires_grad]
    params += [p for p in heads.parameters() if p.requires_grad and p is not lm_head.weight]
    optim = torch.optim.AdamW(params, lr=s.lr)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    total = steps_per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda t: min(1.0, (t + 1) / max(1, total // 20))
        * 0.5
        * (1 + math.cos(math.pi * t / total)),
    )
    weights = torch.tensor([s.head_decay ** k for k in range(s.num_heads)])
    pad = (
        model.tokenizer.pad_token_id
        if model.tokenizer is not None and model.tokenizer.pad_token_id is not None
        else 0
    )

    def held_out() -> dict:
        if not held:
            return {}
        return evaluate_heads(heads, *hidden_and_targets(model, held, s.num_heads))

    from tqdm.auto import tqdm

    history: list[dict] = []
    step = 0
    bar = tqdm(total=total, desc="train heads + LoRA", unit="step", dynamic_ncols=True)
    for epoch in range(s.epochs):
        shuffled = train[:]
        random.Random(s.seed + epoch).shuffle(shuffled)
        for i in range(0, len(shuffled), s.batch_size):
            loss, kl = joint_step(
                model,
                peft_model,
                heads,
                shuffled[i : i + s.batch_size],
                pad,
                weights,
                s.head_loss_weight,
            )
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", kl=f"{kl:.4f}")
            if step % s.eval_every == 0 or step == total:
                history.append({"step": step, "loss": loss.item(), "kl": kl, **held_out()})
    bar.close()
    final = held_out()
    peft_model.save_pretrained(str(out / ADAPTER_DIR), safe_serialization=True)
    # heads name a base that loads again, adapter apart
    base_name = model.info.base_id or model.info.base
    meta = {
        "trained_on": s.datasets,
        "examples": len(rows),
        "heldout": final,
        "steps": step,
        "joint_lora": True,
        "settings": {k: v for k, v in asdict(s).items() if k != "hf_token"},
    }
    save_heads(heads, out, base_name, extra={"adapter": ADAPTER_DIR, "training": meta})
    (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    if final:
        print("held-out top-1: " + ", ".join(f"{a:.3f}" for a in final["top1"]))
        print("held-out top-5: " + ", ".join(f"{a:.3f}" for a in final["top5"]))
    say(
        f"saved heads to {out} and the LoRA adapter to {out / ADAPTER_DIR} (merged automatically"
        f" when loading {out})"
    )
    return {"history": history, "heldout": final}
