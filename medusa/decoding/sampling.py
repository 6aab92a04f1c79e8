"""The distribution a sampled decode draws from, defined once: the base logits divided by the
temperature, then cut to the ``top_k`` most likely tokens, then to the smallest set whose
probability reaches ``top_p`` (the most likely token always stays). Temperature 0 is greedy.

Every draw is a Gumbel-max draw, ``argmax(processed logits − log(−log u))`` with ``u`` uniform,
which lands on token ``x`` with exactly its processed probability. The uniforms come in blocks of
``[rows, V]``: a decode's prefill takes one row (its first token), each step one row per draft depth
plus one (:mod:`medusa.decoding.accept` says which row judges which node). Blocks are drawn from a
generator on the model's device, reseeded from ``seed`` and the prompt's ids at the start of every
decode, so an example's output depends on the seed and its own prompt only: the same under
``--resume``, in any row order and in any process of a data-parallel launch. Both engines draw the
same blocks in the same order, so on one device they give the same tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from medusa.decoding.base import DecodeState


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


def gumbel_noise(uniforms: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(uniforms.float()))


def gumbel_draw(logits: torch.Tensor, uniforms: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Token ids [...] drawn from the processed distribution of each row of ``logits`` [..., V],
    one row of ``uniforms`` [..., V] each: pure tensor work, so a captured step can draw."""
    return (processed_logits(logits, sampling) + gumbel_noise(uniforms)).argmax(-1)


class Sampler:
    """Draws for one sampled decode: its seeded generators (one per device) and the blocks of
    uniforms."""

    def __init__(self, sampling: Sampling, depth: int = 0) -> None:
        self.sampling = sampling
        self.begin([])
        self.for_depth(depth)

    def for_depth(self, depth: int) -> "Sampler":
        """Draft trees reach ``depth``: every step takes ``depth + 2`` rows of uniforms, however
        deep its own draft is, so the stream (and the output) does not depend on how a step was
        cut short, nor on the engine."""
        self.rows = depth + 2
        return self

    def begin(self, prompt_ids: list[int]) -> None:
        """Reseed for one decode from the seed and the prompt's ids."""
        text = f"{self.sampling.seed}:{','.join(map(str, prompt_ids))}".encode()
        self.seed = int.from_bytes(hashlib.sha256(text).digest()[:8], "little")
        self.generators: dict[torch.device, torch.Generator] = {}

    def fill(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` refilled in place with the next uniforms of this decode's stream."""
        generator = self.generators.get(out.device)
        if generator is None:
            generator = self.generators[out.device] = torch.Generator(out.device)
            generator.manual_seed(self.seed)
        return out.uniform_(generator=generator)

    def block(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """The next [rows, V] uniforms, on the device of ``like`` [..., V]."""
        return self.fill(torch.empty(rows, like.shape[-1], device=like.device))

    def step_block(self, like: torch.Tensor) -> torch.Tensor:
        """One step's uniforms [rows, V]: row ``d + 1`` judges the children of depth-``d`` nodes."""
        return self.block(self.rows, like)

    def draw(self, logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        return gumbel_draw(logits, uniforms, self.sampling)

    def draw_rows(self, logits: torch.Tensor, block: torch.Tensor, rows: torch.Tensor
                  ) -> torch.Tensor:
        """[N] draws for ``logits`` [N, V], node i with row ``rows[i]`` of ``block`` [R, V] (the
        noise is made for the R rows first: a tree has many nodes per depth)."""
        noise = gumbel_noise(block).index_select(0, rows)
        return (processed_logits(logits, self.sampling) + noise).argmax(-1)

    def first_token(self, state: "DecodeState") -> int:
        """The token after the prompt (one row of its own); later states carry the token the last
        step drew after its accepted path (``state.drawn``)."""
        if state.drawn is None:
            state.drawn = int(self.draw(state.logits, self.block(1, state.logits)[0]))
        return state.drawn
