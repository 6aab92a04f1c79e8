"""Batched generation with transformers ``generate`` (left padding), greedy or sampled, for bulk
work, not timing.

Self-distillation and before/after scoring decode thousands of prompts; one at a time that is
launch-bound on a GPU. Batched outputs can differ from one-at-a-time decoding by rounding in half
precision, which is fine for training targets and corpus scores, and is why the timed evaluation
never uses this path.
"""

from __future__ import annotations

import torch


def batched_greedy(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    batch_size: int = 32,
    progress: str | None = None,
) -> list[list[int]]:
    """Generated ids per prompt (stop token and padding removed), in the prompts' order."""
    return [
        outs[0]
        for outs in batched_generate(
            model, prompts, max_new_tokens, stop_ids, pad_id, batch_size, progress
        )
    ]


@torch.inference_mode()
def batched_generate(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    batch_size: int = 32,
    progress: str | None = None,
    samples: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[list[list[int]]]:
    """Per prompt: its greedy continuation (``samples=0``), or ``samples`` continuations sampled at
    ``temperature`` from the full distribution (no top-k or top-p cut). ``batch_size`` counts
    sequences, so a batch holds ``batch_size // samples`` prompts; each batch seeds the sampler from
    ``seed`` and its first prompt's position, so a rerun reproduces it.
    """
    device = next(model.parameters()).device
    per_prompt = max(1, samples)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    out: list[list[list[int]]] = [[] for _ in prompts]
    step = max(1, batch_size // per_prompt)
    starts = range(0, len(order), step)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", dynamic_ncols=True)
    mode = (
        dict(
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            num_return_sequences=samples,
        )
        if samples
        else dict(do_sample=False)
    )
    for start in starts:
        idx = order[start:start + step]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor(
            [[pad_id] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device
        )
        mask = torch.tensor(
            [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device
        )
        # sampling draws from a generator forked off the global one, so what the caller seeds next
        # (fresh heads,
        # say) starts the same whether or not this call sampled
        with torch.random.fork_rng(
            devices=[device] if device.type == "cuda" else [], enabled=bool(samples)
        ):
            if samples:
                torch.manual_seed(seed * 1_000_003 + start)
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop_ids,
                pad_token_id=pad_id,
                **mode,
            )[:, width:].tolist()
        for r, row in enumerate(gen):  # num_return_sequences keeps each prompt's samples together
            cut = next((j for j, t in enumerate(row) if t in stop_ids), len(row))
            out[idx[r // per_prompt]].append(row[:cut])
    return out


@torch.inference_mode()
def batched_hidden_states(
    model, seqs: list[list[int]], embed_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Last hidden states [B, L, H] of right-padded sequences (a ``MedusaModel``): with causal
    attention every real position equals a one-sequence forward, so teacher-forced passes can run
    many sequences at once. ``embed_dtype``: feed the decoder its input embeddings in this dtype
    (the base's own, where training has turned a tied embedding to float32)."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
    decoder = model.decoder()
    if embed_dtype is None:
        return decoder(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       use_cache=False).last_hidden_state
    table = decoder.get_input_embeddings()
    embeds = table(ids.to(table.weight.device)).to(embed_dtype)
    return decoder(
        inputs_embeds=embeds, attention_mask=mask.to(embeds.device), use_cache=False
    ).last_hidden_state
