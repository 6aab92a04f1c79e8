"""The draft vocabulary: the token ids a path-dependent drafter drafts from (FR-Spec's
frequency-ranked subset).

Projecting each tree level's states onto all 49,152 SmolLM2 tokens was about half of the
autoregressive drafter's time on the H200, though a Hindi→English translator writes a few thousand
distinct tokens. The ``size`` tokens its own self-distilled text uses most cover nearly every
position; the rest are never drafted (verification still scores every token, so outputs are
unchanged; where such a token comes, that step accepts fewer tokens).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import torch


def frequent_tokens(rows: Iterable[dict], size: int, vocab_size: int) -> torch.Tensor:
    """The ``size`` token ids most frequent in the rows' continuations (``ids`` after
    ``prompt_len``), ties to the lower id, sorted; filled up with the lowest unseen ids when the
    text holds fewer distinct tokens."""
    if not 0 < size <= vocab_size:
        raise ValueError(f"a draft vocabulary holds 1..{vocab_size} tokens, not {size}")
    counts: Counter[int] = Counter()
    for row in rows:
        counts.update(row["ids"][row["prompt_len"]:])
    ranked = sorted(counts, key=lambda t: (-counts[t], t))[:size]
    chosen = set(ranked)
    fill = (t for t in range(vocab_size) if t not in chosen)
    ranked += [next(fill) for _ in range(size - len(ranked))]
    return torch.tensor(sorted(ranked), dtype=torch.long)


def coverage(rows: Iterable[dict], vocab: torch.Tensor) -> float:
    """The share of the rows' continuation tokens that lie in ``vocab``."""
    inside = set(vocab.tolist())
    total = hit = 0
    for row in rows:
        cont = row["ids"][row["prompt_len"]:]
        total += len(cont)
        hit += sum(t in inside for t in cont)
    return hit / total if total else 1.0
