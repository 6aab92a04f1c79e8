"""The distribution a sampled decode draws from, defined once: the base logits divided by the
temperature, then cut to the ``top_k`` most likely tokens, then to the smallest set whose
probability reaches ``top_p`` (the most likely token always stays). Temperature 0 is greedy.

Draws come from a CPU generator reseeded from ``seed`` and the prompt's ids at the start of every
decode, so an example's output depends on the seed and its own prompt only: the same under
``--resume``, in any row order and in any process of a data-parallel launch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """``--temperature``, ``--top-k`` (0: every token), ``--top-p`` (1: every token), ``--seed``."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def processed_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Float logits over the last dimension after temperature, top-k and top-p; the tokens cut
    away are -inf. Temperature must be above 0 (temperature 0 is the argmax, not a distribution)."""
    x = logits.float() / sampling.temperature
    vocab = x.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = torch.topk(x, sampling.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p < 1:
        ordered, order = torch.sort(x, dim=-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # the probability of the tokens ranked above each one
        cut = before >= sampling.top_p  # the first token has 0 above it and always stays
        x = x.masked_fill(cut.scatter(-1, order, cut), float("-inf"))
    return x


def processed_probs(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """:func:`processed_logits` as probabilities (each row sums to 1)."""
    return processed_logits(logits, sampling).softmax(-1)


class Sampler:
    """Draws tokens from :func:`processed_probs` with its own seeded generator."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self.generator = torch.Generator()
        self.begin([])

    def begin(self, prompt_ids: list[int]) -> None:
        """Reseed for one decode from the seed and the prompt's ids."""
        text = f"{self.sampling.seed}:{','.join(map(str, prompt_ids))}".encode()
        self.generator.manual_seed(int.from_bytes(hashlib.sha256(text).digest()[:8], "little"))

    def sample(self, logits: torch.Tensor) -> int:
        """One token id drawn from the processed distribution of ``logits`` [V]."""
        probs = processed_probs(logits, self.sampling).cpu()
        return int(torch.multinomial(probs, 1, generator=self.generator))
