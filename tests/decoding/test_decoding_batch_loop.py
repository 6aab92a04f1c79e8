"""Batched decoding (B rows in one step, continuous refill) against one row at a time, on the CPU.

The graphs engine replays exactly this batched step; here it runs uncaptured
(``StaticEngine(capture=False)``); tests/test_cuda.py checks it under capture.
"""

from __future__ import annotations

import time

import pytest
import torch
import test_autoregressive_drafter
import test_sequential_heads
from test_decoding_multi_head import prompts, with_heads

from medusa.decoding import DecodeSettings, make_strategy
from medusa.decoding.batch_step import BatchDecoder
from medusa.decoding.engine import EagerEngine, StaticEngine
from medusa.decoding.static_cache import StaticKVCache
from medusa.errors import MedusaError

SETTINGS = [
    DecodeSettings("single-head"),
    DecodeSettings("tree", 4),
    DecodeSettings("tree", 3, adaptive=True),
    DecodeSettings("multi-head", 3, 3),
    DecodeSettings("tree", 3, acceptance="typical"),
    DecodeSettings("tree", 3, acceptance="rescore"),
    DecodeSettings("tree", 4, temperature=0.7, seed=2),
    DecodeSettings("multi-head", 2, 2, temperature=0.9, top_k=20, seed=1),
    DecodeSettings("tree", 3, acceptance="typical", temperature=0.7, seed=3),
]
MODELS = {
    "medusa": lambda: with_heads("llama", 2, num_heads=4, noise=0.3),
    "sequential": lambda: test_sequential_heads._model(2, 0.25),
    "autoregressive": lambda: test_autoregressive_drafter._model(2, 0.15),
}


def _rows() -> list[list[int]]:
    """Prompts of different lengths; one ends at once (its first token is the stop id 2), others
    stop early or run to the budget."""
    return prompts(3, n=5) + [[9] * 7, [5, 6], [11] * 30]


@pytest.mark.parametrize("drafter", list(MODELS))
def test_batched_rows_equal_one_row_at_a_time(drafter):
    """Every strategy and rule, greedy and sampled: each row's tokens and per-step counts equal
    its one-row decode, at batch sizes that refill (3), fill exactly and idle rows (8, 11)."""
    model = MODELS[drafter]()
    engine = StaticEngine(model, capture=False)
    rows = _rows()
    for settings in SETTINGS:
        ref = [engine.generate(make_strategy(settings), ids, 25, {2}) for ids in rows]
        for batch_size in (3, 8, 11):
            start = time.perf_counter()
            done = list(engine.generate_batch(make_strategy(settings), rows, 25, {2}, batch_size))
            wall = time.perf_counter() - start
            assert sorted(f.index for f in done) == list(range(len(rows)))
            # the rows' shares split the wall time; none exceeds the row's own latency
            assert sum(f.seconds for f in done) <= wall
            assert all(f.seconds <= f.latency for f in done)
            for f in done:
                want = ref[f.index]
                assert f.result.tokens == want.tokens, (settings, batch_size, f.index)
                assert f.result.accepted_per_step == want.accepted_per_step
                assert f.result.drafted_depth_per_step == want.drafted_depth_per_step
                assert f.result.stop_reason == want.stop_reason
                assert f.seconds > 0


def test_a_row_stopped_by_its_first_token_never_takes_a_step():
    """A prompt whose first token is a stop finishes at admission; its row goes to the next
    prompt."""
    model = with_heads("llama", 2, num_heads=4, noise=0.3)
    engine = StaticEngine(model, capture=False)
    rows = _rows()
    first = [engine.generate(make_strategy("single-head"), ids, 1, set()).tokens[0] for ids in rows]
    stop = {first[0]}
    done = {f.index: f.result for f in engine.generate_batch(make_strategy(DecodeSettings(
        "tree", 4)), rows, 20, stop, 2)}
    assert done[0].tokens == [] and done[0].stop_reason == "eos" and done[0].steps == 0
    for i, ids in enumerate(rows):
        assert done[i].tokens == engine.generate(make_strategy(DecodeSettings("tree", 4)), ids, 20,
                                                 stop).tokens


def test_per_row_cache_writes_and_compaction_equal_each_row_alone():
    """[B, T] write slots put each row's K/V at its own slots; compact_rows moves each row's path
    as compact() does for that row alone."""
    model = with_heads("llama", 0, num_heads=3)
    torch.manual_seed(0)
    batch = StaticKVCache(model.config, 64, model.device, model.dtype, batch=3)
    alone = [StaticKVCache(model.config, 64, model.device, model.dtype) for _ in range(3)]
    for b, cache in enumerate(alone):
        cache.kv.normal_()
        batch.kv[:, :, b].copy_(cache.kv[:, :, 0])
    layer = batch.layers[0]
    keys = torch.randn(3, batch.kv.shape[3], 4, batch.kv.shape[5])
    slots = torch.tensor([[5, 6, 7, 8], [0, 1, 2, 3], [20, 21, 22, 23]])
    batch.write_slots = slots
    layer.update(keys, keys + 1)
    committed = torch.tensor([5, 0, 20])
    paths = torch.tensor([[0, 2, 3], [1, 1, 1], [0, 1, 3]])
    batch.compact_rows(committed, paths)
    for b, cache in enumerate(alone):
        cache.write_slots = slots[b]
        cache.layers[0].update(keys[b:b + 1], keys[b:b + 1] + 1)
        cache.compact(committed[b], paths[b])
        assert torch.equal(batch.kv[:, :, b], cache.kv[:, :, 0])
    other = StaticKVCache(model.config, 64, model.device, model.dtype)
    other.kv.normal_()
    batch.copy_row(1, other, 10)
    assert torch.equal(batch.kv[:, :, 1, :, :10], other.kv[:, :, 0, :, :10])


def test_per_row_tree_masks_stack_the_one_row_masks():
    from medusa.decoding.fixed_tree import FixedTree

    tree = FixedTree([-1, 0, 0, 1, -1, 4], "cpu")
    columns = torch.arange(32)
    committed = torch.tensor([0, 7, 20])
    masks = tree.mask(committed, columns, torch.float32)
    assert masks.shape == (3, 1, 6, 32)
    for b in range(3):
        assert torch.equal(masks[b:b + 1], tree.mask(committed[b], columns, torch.float32))


def test_batches_are_built_once_per_size_and_refused_where_rows_cannot_share_a_step():
    model = with_heads("llama", 0, num_heads=3)
    engine = StaticEngine(model, capture=False)
    strategy = make_strategy(DecodeSettings("tree", 3))
    engine.prepare(strategy, 40, 20, batch_size=4)
    prepared = engine._plan(strategy)
    assert [key[0] for key in prepared.batches] == [4]
    batch = next(iter(prepared.batches.values()))[0]
    assert isinstance(batch, BatchDecoder) and batch.cache.batch == 4
    list(engine.generate_batch(strategy, [[5] * 10, [6] * 12], 20, set(), 4))
    assert len(prepared.batches) == 1  # the prepared step is reused
    with pytest.raises(MedusaError, match="--batch-size 4 needs the fast engine"):
        list(EagerEngine(model).generate_batch(strategy, [[5] * 10], 20, set(), 4))
    context = test_autoregressive_drafter._model(1, 0.1, context=True)
    with pytest.raises(MedusaError, match="own context decodes one row at a time"):
        list(StaticEngine(context, capture=False).generate_batch(
            make_strategy(DecodeSettings("tree", 3)), [[5] * 10], 20, set(), 2))


def test_eager_engine_at_batch_size_one_decodes_in_order():
    model = with_heads("llama", 0, num_heads=3)
    engine = EagerEngine(model)
    rows = _rows()[:3]
    done = list(engine.generate_batch(make_strategy("single-head"), rows, 10, set(), 1))
    assert [f.index for f in done] == [0, 1, 2]
    for f in done:
        assert f.result.tokens == engine.generate(make_strategy("single-head"), rows[f.index], 10,
                                                  set()).tokens
