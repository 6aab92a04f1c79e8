"""Batched greedy generation with transformers ``generate`` (left padding), for bulk work rather than timing.

Self-distillation and before/after scoring decode thousands of prompts; one at a time that is launch-bound on a
GPU. Batched outputs can differ from one-at-a-time decoding by rounding in half precision, which is fine for
training targets and corpus scores, and is why the timed evaluation never uses this path.
"""

from __future__ import annotations

import torch


@torch.inference_mode()
def batched_greedy(model, prompts: list[list[int]], max_new_tokens: int, stop_ids: list[int], pad_id: int,
                   batch_size: int = 32, progress: str | None = None) -> list[list[int]]:
    """Generated ids per prompt (stop token and padding removed), in the prompts' order."""
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    out: list[list[int]] = [[] for _ in prompts]
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", dynamic_ncols=True)
    for start in starts:
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stop_ids, pad_token_id=pad_id)[:, width:].tolist()
        for i, row in zip(idx, gen):
            cut = next((j for j, t in enumerate(row) if t in stop_ids), len(row))
            out[i] = row[:cut]
    return out


@torch.inference_mode()
def batched_hidden_states(model, seqs: list[list[int]]) -> torch.Tensor:
    """Last hidden states [B, L, H] of right-padded sequences (a ``MedusaModel``): with causal attention every real
    position equals a one-sequence forward, so teacher-forced passes can run many sequences at once."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
    return model.decoder()(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                           use_cache=False).last_hidden_state
