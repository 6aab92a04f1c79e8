"""Head-accuracy measurement (exact counts on crafted logits, sanity on a real tiny model) and tree
calibration."""

from __future__ import annotations

import pytest
import torch

from conftest import make_model
from medusa.measure.calibrate import HeadAccuracy, calibrate_tree, measure_head_accuracy
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.model import MedusaModel
from medusa.decoding.trees import expected_accept_length, optimal_tree, validate_tree

VOCAB = 12
MAX_RANK = 3


def _medusa(
    num_heads: int, vocab: int = 400, seed: int = 0, random_heads: bool = False
) -> MedusaModel:
    base = make_model("llama", seed=seed, vocab_size=vocab)
    heads = MedusaHeads(
        HeadConfig(num_heads, 1, base.config.hidden_size, vocab), base.get_output_embeddings()
    )
    if random_heads:
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in heads.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return MedusaModel(base, tokenizer=None, heads=heads).eval()


class _FakeOut:
    def __init__(self, head_logits: torch.Tensor):
        self.head_logits = head_logits


def _crafted_logits(
    seq: list[int], num_heads: int, ranks: dict[tuple[int, int], int | None]
) -> torch.Tensor:
    """[K, 1, L, V] logits where head h at position i ranks seq[i+h+2] at ``ranks[(h, i)]`` (None:
    below top-3).

    The off-by-one tokens seq[i+h+1] and seq[i+h+3] are ranked last, so a wrong target offset cannot
    score. Every position not listed ranks its target first, so counting a position outside the
    window shows up.
    """
    L = len(seq)
    logits = torch.zeros(num_heads, 1, L, VOCAB)
    for h in range(num_heads):
        for i in range(L):
            target = seq[i + h + 2] if i + h + 2 < L else None
            neighbours = {seq[j] for j in (i + h + 1, i + h + 3) if j < L} - {target}
            ranked = [t for t in range(VOCAB) if t != target and t not in neighbours]
            if target is not None:
                rank = ranks.get((h, i), 0)
                ranked.insert(MAX_RANK if rank is None else rank, target)
            row = torch.full((VOCAB,), -100.0)
            for pos, tok in enumerate(ranked):
                row[tok] = float(len(ranked) - pos)
            logits[h, 0, i] = row
    return logits


def test_measure_head_accuracy_exact_counts(monkeypatch):
    model = _medusa(2, vocab=VOCAB)
    seq_a, seq_b, seq_short = [0, 1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 8, 7, 6], [1, 2, 3]
    # seq_a, prompt 4: positions 3..5 (i >= 3, i + 3 < 9); seq_b, prompt 1: positions 0..2;
    # seq_short: none
    ranks = {
        id(seq_a): {
            (0, 3): 0,
            (0, 4): 2,
            (0, 5): None,
            (1, 3): 1,
            (1, 4): 0,
            (1, 5): 0,
            (0, 2): None,
            (1, 2): None,
            (0, 6): None,
        },  # outside the window: must not count
        id(seq_b): {
            (0, 0): 0,
            (0, 1): 0,
            (0, 2): 1,
            (1, 0): None,
            (1, 1): 2,
            (1, 2): 2,
            (0, 3): None,
        },
    }
    calls = []

    def fake_step(input_ids, past_key_values=None, num_heads=0, **kwargs):
        seq = input_ids[0].tolist()
        assert input_ids.shape == (1, len(seq)) and past_key_values is None and num_heads == 2
        calls.append(seq)
        source = next(s for s in (seq_a, seq_b, seq_short) if s == seq)
        return _FakeOut(_crafted_logits(seq, 2, ranks.get(id(source), {})))

    monkeypatch.setattr(model, "step", fake_step)
    acc = measure_head_accuracy(
        model, [seq_a, seq_b, seq_short], [4, 1, 2], num_heads=2, max_rank=MAX_RANK
    )
    assert acc.total == 6
    assert acc.hits == [[3, 1, 1], [2, 1, 2]]
    assert [a * 6 for row in acc.accuracies() for a in row] == pytest.approx([3, 1, 1, 2, 1, 2])
    assert acc.topk(1) == pytest.approx([3 / 6, 2 / 6])
    assert acc.topk(2) == pytest.approx([4 / 6, 3 / 6])
    assert acc.topk(3) == pytest.approx([5 / 6, 5 / 6])
    assert seq_a in calls and seq_b in calls


def _greedy(model: MedusaModel, prompt: list[int], new: int) -> list[int]:
    seq = list(prompt)
    with torch.inference_mode():
        for _ in range(new):
            seq.append(int(model.step(torch.tensor([seq]), None).logits[0, -1].argmax()))
    return seq


def test_measure_head_accuracy_real_tiny_model():
    model = _medusa(3, seed=4, random_heads=True)
    prompts = [[5, 6, 7, 8], [20, 21]]
    seqs = [_greedy(model, p, 8) for p in prompts]
    lengths = [len(p) for p in prompts]
    seen = []
    real_step = model.step

    def spy(*args, **kwargs):
        out = real_step(*args, **kwargs)
        seen.append(out.head_logits)
        return out

    model.step = spy
    acc = measure_head_accuracy(model, seqs, lengths, num_heads=3, max_rank=5)
    # per sequence: i from prompt_len - 1 up to len - 5 inclusive -> 5 positions each
    assert acc.total == 10
    assert len(acc.hits) == 3 and all(len(row) == 5 for row in acc.hits)
    table = acc.accuracies()
    assert all(0.0 <= a <= 1.0 for row in table for a in row)
    assert all(c <= 1.0 + 1e-12 for c in acc.topk(5))
    # independent reference on the same logits: a token's rank is how many logits beat it
    assert len(seen) == 2 and all(h.shape == (3, 1, len(s), 400) for h, s in zip(seen, seqs))
    expected = [[0] * 5 for _ in range(3)]
    for head_logits, seq, plen in zip(seen, seqs, lengths):
        for i in range(plen - 1, len(seq) - 4):
            for h in range(3):
                row = head_logits[h, 0, i]
                rank = int((row > row[seq[i + h + 2]]).sum())
                if rank < 5:
                    expected[h][rank] += 1
    assert acc.hits == expected


def test_measure_head_accuracy_errors():
    model = _medusa(2)
    with pytest.raises(MedusaError, match="has 2"):
        measure_head_accuracy(model, [[1, 2, 3, 4, 5, 6]], [1], num_heads=3)
    with pytest.raises(MedusaError, match="one length per sequence"):
        measure_head_accuracy(model, [[1, 2, 3, 4, 5, 6]], [1, 2], num_heads=2)
    with pytest.raises(MedusaError, match="at least 4 new tokens"):
        measure_head_accuracy(model, [[1, 2, 3, 4, 5, 6]], [5], num_heads=2)


def test_head_accuracy_guards():
    with pytest.raises(MedusaError, match="no positions"):
        HeadAccuracy(hits=[[0, 0]], total=0).accuracies()
    with pytest.raises(MedusaError, match="ranks 1..2"):
        HeadAccuracy(hits=[[1, 0]], total=2).topk(3)


def test_calibrate_tree():
    accuracy = HeadAccuracy(hits=[[50, 20, 10], [30, 10, 5], [10, 5, 2]], total=100)
    tree, length = calibrate_tree(accuracy, 7)
    assert len(tree) == 7 and validate_tree(tree, 3) == tree
    assert tree == optimal_tree(accuracy.accuracies(), 7)
    assert length == pytest.approx(expected_accept_length(tree, accuracy.accuracies()))
    # by hand: (0,)=.5 (1,)=.2 (0,0)=.15 (2,)=.1 (1,0)=.06 (0,1)=.05 (2,0)=.03 | (0,2)=.025
    # (1,1)=.02 (0,0,0)=.015
    assert set(tree) == {(0,), (1,), (0, 0), (2,), (1, 0), (0, 1), (2, 0)}
    assert length == pytest.approx(1 + 0.5 + 0.2 + 0.15 + 0.1 + 0.06 + 0.05 + 0.03)
