"""Training the context drafter over whole sequences: its layer attends over every earlier position,
so positions cannot be shuffled one by one as the other drafters' cached hidden states are
(train_heads.py). Each step runs the frozen base over a batch of self-distilled sequences (no cache:
a prompt's hidden states are most of a sequence), then the drafter's rollout
(:meth:`~medusa.drafters.context.ContextDraftLayer.rollout`) drafts K tokens ahead from every reply
position at once, each depth fed its own predicted hidden state and the text's token, as a decode's
draft is; head k's loss is on the token k + 2 ahead, weighted like the other drafters'.
"""

from __future__ import annotations

import random

import torch
from torch.nn import functional as F

from medusa.drafters import ContextDrafter
from medusa.model.batch_generate import batched_hidden_states

# padded tokens per step: bounds the base's activations and the rollout's L×L attention
MAX_BATCH_TOKENS = 65536


def sequence_batches(
    rows: list[dict], positions: int, max_tokens: int = MAX_BATCH_TOKENS
) -> list[list[int]]:
    """Row indices in batches of similar lengths, each with about ``positions`` training positions
    (reply tokens) and at most ``max_tokens`` padded tokens."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
    batches: list[list[int]] = []
    current: list[int] = []
    count = 0
    for i in order:
        width = len(rows[i]["ids"])  # the longest so far, since rows come sorted
        if current and (count >= positions or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current, count = [], 0
        current.append(i)
        count += len(rows[i]["ids"]) - rows[i]["prompt_len"]
    if current:
        batches.append(current)
    return batches


class ContextTrainer:
    """Batches, loss and held-out accuracy of a context drafter (``heads``) on ``model``'s
    self-distilled rows."""

    heads: ContextDrafter | None = None  # the drafter being trained, set once built

    def __init__(
        self,
        model,
        train: list[dict],
        held: list[dict],
        num_heads: int,
        positions: int,
        weights: torch.Tensor,
        relabel: bool = False,
        feature_weight: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.model, self.train, self.held = model, train, held
        # the base's own dtype, before training turns the shared projection (and a tied embedding)
        # to float32
        self.base_dtype = model.dtype
        self.num_heads, self.relabel, self.feature_weight = num_heads, relabel, feature_weight
        self.weights = weights.tolist()
        self.seed = seed
        self.batches = sequence_batches(train, positions)
        self.held_batches = sequence_batches(held, positions) if held else []

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def loss(self, epoch: int, offset: int) -> torch.Tensor:
        """The loss of step ``offset`` of ``epoch`` (batches visited in a seeded order per epoch).
        """
        order = list(range(len(self.batches)))
        random.Random(self.seed + epoch).shuffle(order)
        rows = [self.train[i] for i in self.batches[order[offset]]]
        logits, targets, states, features = self.rollout(rows, self.relabel)
        loss = sum(
            w * F.cross_entropy(l.float(), t)
            for w, l, t in zip(self.weights, logits, targets)
            if t.numel()
        )
        if self.feature_weight:
            loss = loss + self.feature_weight * sum(
                w * F.smooth_l1_loss(s.float(), f.float())
                for w, s, f in zip(self.weights, states, features)
                if f.numel()
            )
        return loss

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Top-1 and top-5 of each head on the held-out rows' reply positions (the text's tokens, as
        for the other drafters)."""
        k = self.num_heads
        hit1, hit5, total = torch.zeros(k), torch.zeros(k), torch.zeros(k)
        for batch in self.held_batches:
            logits, targets, _, _ = self.rollout([self.held[i] for i in batch], relabel=False)
            for j, (l, t) in enumerate(zip(logits, targets)):
                if not t.numel():
                    continue
                top = l.topk(5, dim=-1).indices
                hit1[j] += (top[:, 0] == t).sum().item()
                hit5[j] += (top == t[:, None]).any(-1).sum().item()
                total[j] += t.numel()
        total = total.clamp(min=1)
        return {
            "top1": (hit1 / total).tolist(),
            "top5": (hit5 / total).tolist(),
            "positions": int(total[0]),
        }

    def rollout(
        self, rows: list[dict], relabel: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per depth j: head j's logits [n_j, V] at the reply positions that have a target, the
        targets [n_j], the predicted hidden states there and the base model's own (what the feature
        loss compares)."""
        heads, weight = self.heads, self.heads.drafter.fc.weight
        device = weight.device
        seqs = [r["ids"] for r in rows]
        with torch.no_grad():
            # [B, L, H]
            hidden = batched_hidden_states(self.model, seqs, self.base_dtype).to(
                device, weight.dtype
            )
        b, length, _ = hidden.shape
        ids = torch.zeros(b, length + self.num_heads + 1, dtype=torch.long)
        valid = torch.zeros(b, length + self.num_heads + 1, dtype=torch.bool)
        starts = torch.zeros(b, 1, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row["ids"])] = torch.tensor(row["ids"])
            valid[r, :len(row["ids"])] = True
            starts[r] = max(row["prompt_len"] - 1, 0)
        ids, valid, starts = ids.to(device), valid.to(device), starts.to(device)
        labels = self._greedy_labels(hidden, valid, starts) if relabel else ids
        padded = torch.cat(
            [hidden, hidden.new_zeros(b, self.num_heads + 1, hidden.shape[-1])], dim=1
        )
        emb = heads.embed(ids, hidden)  # [B, L + K + 1, H]
        drafter = heads.drafter
        first = drafter.inputs(hidden[:, :-1], emb[:, 1:length])  # position i: f_i and t_{i+1}

        # row i: ĥ_{i+j} and t_{i+j+1}
        def next_input(j: int, predictions: torch.Tensor) -> torch.Tensor:
            return drafter.inputs(predictions, emb[:, j + 1:j + length])

        predictions = drafter.rollout(first, next_input, self.num_heads)
        rows_at = torch.arange(length - 1, device=device)[None, :]
        out: tuple[list, list, list, list] = ([], [], [], [])
        for j, pred in enumerate(predictions):
            # the target t_{i+j+2} exists
            mask = (rows_at >= starts) & valid[:, j + 2:j + 1 + length]
            out[0].append(heads.heads[j](pred[mask]))
            # the text's t_{i+j+2}, or the base's argmax after t_{i+j+1} (at position i + j + 1)
            out[1].append(
                labels[:, j + 1 : j + length][mask]
                if relabel
                else labels[:, j + 2 : j + 1 + length][mask]
            )
            out[2].append(pred[mask])
            # f_{i+j+1}: what the prediction stands for
            out[3].append(padded[:, j + 1:j + length][mask])
        return out

    def _greedy_labels(
        self, hidden: torch.Tensor, valid: torch.Tensor, starts: torch.Tensor
    ) -> torch.Tensor:
        """[B, W] (``valid``'s width): the base model's argmax after each token at reply positions
        (0 elsewhere): below a sampled path, the token greedy verification accepts."""
        labels = torch.zeros(valid.shape, dtype=torch.long, device=hidden.device)
        length = hidden.shape[1]
        at = valid[:, :length] & (torch.arange(length, device=hidden.device)[None, :] >= starts)
        with torch.no_grad():
            labels[:, :length][at] = self.model.lm_head(
                hidden[at].to(self.model.lm_head.weight.dtype)
            ).argmax(-1)
        return labels


def teacher_forced_head_logits(
    model, seq: list[int], prompt_len: int, num_heads: int
) -> torch.Tensor:
    """[K, P, V]: head k's logits below the true tokens, at the P positions from ``prompt_len`` - 1
    on where every head has a target (what the other drafters' ``teacher_forced`` gives, for a
    tree's calibration)."""
    trainer = ContextTrainer(model, [], [], num_heads, 1, torch.ones(num_heads))
    trainer.heads = model.heads
    logits = trainer.rollout([{"ids": seq, "prompt_len": prompt_len}], relabel=False)[0]
    count = len(seq) - num_heads - 1 - max(prompt_len - 1, 0)
    return torch.stack([level[:count] for level in logits])
