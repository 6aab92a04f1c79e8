"""Attention for the fast engine's steps: a few queries against a whole static cache.

transformers' ``sdpa`` sends a masked fp32 (or masked bf16) attention to the memory-efficient
kernel, which gives one thread block to each (head, 64 queries) tile and walks every cache slot
inside it: with one query and 9 heads that is 9 blocks on a 132-SM GPU, and on the H200 it took 0.93
ms of a 3.4 ms single-head step on the embedded model
(docs/measured/engines/profile-h200-135m-fp32-tree-sizes.json). Written as two batched matmuls
around a softmax, the same attention spreads over the cache slots instead; the query heads that
share a key/value head are stacked as rows of one matmul (no ``repeat_kv`` copies).

It is registered with transformers' public :class:`~transformers.AttentionInterface` under
:data:`NAME` and switched on only while the fast engine builds or runs a step
(:func:`use_attention`), so the eager loop, the reference every engine is tested against, keeps the
model's own attention.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import AttentionInterface

NAME = "medusa_grouped"
# the fast engine's choices: by dtype, ours, or the model's own
ATTENTIONS = ("auto", "grouped", "model")


def resolve_attention(attention: str, dtype: torch.dtype) -> str:
    """``auto``: grouped in float32, the model's own otherwise.

    Measured on the H200 (docs/experiments/engines.md): in fp32 the grouped attention made the
    embedded model's captured single-head step 1.35× faster (3.68 against 4.95 ms); in bf16 on the
    Llama-2-7B shape it was 6 % slower (7.04 against 6.64 ms), since sdpa has fast half-precision
    kernels and 7B has no grouped heads to share.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention '{attention}'; use one of: {', '.join(ATTENTIONS)}")
    if attention == "auto":
        return "grouped" if dtype == torch.float32 else "model"
    return attention


def grouped_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``softmax(q kᵀ · scaling + mask) v`` with grouped query heads; returns [batch, queries,
    heads, head dim].

    ``query`` is [batch, heads, queries, dim], ``key``/``value`` [batch, kv heads, slots, dim]
    (query head ``h`` reads key/value head ``h // (heads / kv heads)``, as ``repeat_kv``), the mask
    additive [batch, 1, queries, ≥ slots]. Scores and softmax are float32 whatever the model's
    dtype.
    """
    if dropout:
        raise ValueError("the grouped attention is for inference only (dropout must be 0)")
    # a sliding window, as for sdpa, is the mask's business (the engine's masks say what each query
    # sees)
    unsupported = [k for k in ("softcap", "s_aux") if kwargs.get(k) is not None]
    if unsupported:
        raise ValueError(f"the grouped attention does not implement {', '.join(unsupported)}")
    batch, heads, queries, dim = query.shape
    if attention_mask is None and queries > 1:
        raise ValueError(
            "the grouped attention needs the 4D mask the fast engine passes (several queries, no"
            " mask)"
        )
    kv_heads, slots = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(batch, kv_heads, group * queries, dim)
    # no-op casts in float32, the engine's case
    scores = torch.matmul(q.float(), key.transpose(-1, -2).float())
    scores = scores.view(batch, kv_heads, group, queries, slots) * scale
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, None, :, :slots].float()
    probs = (
        torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, group * queries, slots)
    )
    out = torch.matmul(probs, value).view(batch, heads, queries, dim)
    return out.transpose(1, 2), None


AttentionInterface.register(NAME, grouped_attention)


@contextmanager
def use_attention(model, attention: str) -> Iterator[None]:
    """Run the block with ``attention`` (``grouped``, or ``model``: its own) as the base's
    implementation.

    A base that cannot switch (transformers warns and keeps its own) simply runs its own attention.
    Nested blocks keep the outer choice (the engine's build runs inside its generate).
    """
    base = model.base_model
    before = base.config._attn_implementation
    wanted = NAME if attention == "grouped" else before
    if wanted == before:
        yield
        return
    base.set_attn_implementation(wanted)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
