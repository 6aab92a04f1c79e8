"""Measure how often each head's k-th ranked token is right, and turn that into a tree for this
model.

The built-in trees assume FasterDecoding's 7B head accuracies; heads trained on another model or
language can be far stronger or weaker, and the best tree shape follows. Measuring on the base
model's own greedy output matches what the heads are asked to predict while decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medusa.errors import MedusaError
from medusa.decoding.trees import TreePath, expected_accept_length, optimal_tree


@dataclass
class HeadAccuracy:
    """Per-head, per-rank hit counts over ``total`` positions (the same positions for every head).
    """

    hits: list[list[int]]  # [head][rank]: positions where that rank held the correct token
    total: int  # positions evaluated per head

    def accuracies(self) -> list[list[float]]:
        """``hits / total``: the per-rank acceptance probabilities the tree search needs."""
        if self.total <= 0:
            raise MedusaError(
                "no positions were evaluated: calibrate on longer generated continuations"
            )
        return [[h / self.total for h in row] for row in self.hits]

    def topk(self, k: int) -> list[float]:
        """Cumulative top-``k`` accuracy per head (chance the correct token is among the first k).
        """
        if self.total <= 0:
            raise MedusaError(
                "no positions were evaluated: calibrate on longer generated continuations"
            )
        ranks = min(len(row) for row in self.hits)
        if not 1 <= k <= ranks:
            raise MedusaError(
                f"top-{k} accuracy asked for, but only ranks 1..{ranks} were measured"
            )
        return [sum(row[:k]) / self.total for row in self.hits]


def measure_head_accuracy(
    model,
    sequences: list[list[int]],
    prompt_lengths: list[int],
    num_heads: int,
    max_rank: int = 10,
) -> HeadAccuracy:
    """Count, for each head and rank, how often the true future token sat at that rank.

    Each sequence is a prompt followed by the base model's own greedy continuation; one cache-free
    forward gives every position's head logits (sequential heads fed the true tokens above each
    target: the path a tree node is accepted on). Position i (the state after token i) has head h
    predict ``seq[i + h + 2]``. Only generated positions (i >= prompt_len - 1) where all heads have
    a target count, so every head is scored on the same positions.
    """
    if len(sequences) != len(prompt_lengths):
        raise MedusaError(
            f"got {len(sequences)} sequences but {len(prompt_lengths)} prompt lengths: give one"
            " length per sequence"
        )
    if num_heads < 1:
        raise MedusaError(f"num_heads is {num_heads}: measure at least 1 head")
    if num_heads > model.num_heads:
        raise MedusaError(
            f"asked to measure {num_heads} heads, but the model has {model.num_heads}"
        )
    if max_rank < 1:
        raise MedusaError(f"max_rank is {max_rank}: measure at least rank 1")
    hits = torch.zeros(num_heads, max_rank, dtype=torch.long)
    total = 0
    with torch.inference_mode():
        for seq, prompt_len in zip(sequences, prompt_lengths):
            start = max(prompt_len - 1, 0)
            stop = len(seq) - num_heads - 1  # exclusive: i + K + 1 < len(seq)
            if stop <= start:
                continue
            positions = torch.arange(start, stop)
            seq_t = torch.tensor(seq)
            heads = model.heads
            if heads.needs_context:  # the same, over the whole sequence as its context
                from medusa.training.context_training import teacher_forced_head_logits

                head_logits = teacher_forced_head_logits(model, seq, prompt_len, num_heads).float()
            elif heads.path_dependent:  # each head below the true tokens above it
                out = model.step(torch.tensor([seq], device=model.device), None)
                paths = torch.stack([seq_t[positions + j + 1] for j in range(num_heads)], dim=-1)
                head_logits = heads.teacher_forced(out.hidden[0, start:stop],
                                                   paths.to(model.device), num_heads).float()
            else:
                out = model.step(
                    torch.tensor([seq], device=model.device), None, num_heads=num_heads
                )
                head_logits = out.head_logits[:, 0, start:stop].float()  # [K, P, V]
            targets = torch.stack([seq_t[positions + h + 2] for h in range(num_heads)])  # [K, P]
            k = min(max_rank, head_logits.shape[-1])
            top = head_logits.topk(k, dim=-1).indices.cpu()  # [K, P, k]
            match = top == targets.unsqueeze(-1)
            hits[:, :k] += match.sum(dim=1)
            total += stop - start
    if total == 0:
        raise MedusaError(
            f"no sequence has a generated position with all {num_heads} future tokens: "
            f"generate at least {num_heads + 2} new tokens per prompt"
        )
    return HeadAccuracy(hits=hits.tolist(), total=total)


def calibrate_tree(accuracy: HeadAccuracy, size: int) -> tuple[list[TreePath], float]:
    """The ``size``-node tree that maximises expected accept length for these measurements, and that
    length."""
    acc = accuracy.accuracies()
    tree = optimal_tree(acc, size)
    return tree, expected_accept_length(tree, acc)
