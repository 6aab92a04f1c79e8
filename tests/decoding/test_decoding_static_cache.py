"""The static KV cache: forwards through it equal plain forwards, and in-place compaction equals
recomputing."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model

from medusa.decoding.fixed_tree import FixedTree, causal_prefill_mask
from medusa.decoding.static_cache import StaticKVCache
from medusa.model import MedusaModel


def _prefill(model: MedusaModel, cache: StaticKVCache, ids: list[int]) -> torch.Tensor:
    cols = torch.arange(cache.capacity)
    cache.write_slots = torch.arange(len(ids))
    out = model._run_decoder(torch.tensor([ids]), cache, torch.arange(len(ids))[None],
                             causal_prefill_mask(len(ids), cols, torch.float32))
    return model.lm_head(out.last_hidden_state[0])


@pytest.mark.parametrize(
    "kind,overrides",
    [("llama", {}), ("llama", {"num_key_value_heads": 1}), ("qwen2", {}), ("mistral", {})],
)
def test_prefill_through_the_static_cache_equals_a_plain_forward(kind, overrides):
    model = MedusaModel(make_model(kind, seed=3, **overrides), tokenizer=None)
    ids = [5, 17, 33, 48, 60, 7, 9]
    cache = StaticKVCache(model.config, 32, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        got = _prefill(model, cache, ids)
        want = model.base_model(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert cache.kv[:, :, :, :, len(ids):].abs().sum() == 0  # nothing written past the prompt


@pytest.mark.parametrize("seed", range(4))
def test_compaction_equals_recomputing_the_cache_for_the_accepted_prefix(seed):
    model = MedusaModel(make_model("llama", seed=seed), tokenizer=None)
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(
        3, 400, (int(torch.randint(2, 12, (1,), generator=gen)),), generator=gen
    ).tolist()
    parents = [-1, 0, 0, 1, 1, 2, 3, 6, -1, 8]
    tree = FixedTree(parents, "cpu")
    tokens = torch.randint(3, 400, (len(parents),), generator=gen)
    capacity = 48
    cache = StaticKVCache(model.config, capacity, torch.device("cpu"), torch.float32)
    cols = torch.arange(capacity)
    with torch.no_grad():
        _prefill(model, cache, prompt)
        committed = torch.tensor(len(prompt))
        cache.write_slots = committed + torch.arange(len(parents))
        model._run_decoder(
            tokens[None],
            cache,
            (committed + tree.depth)[None],
            tree.mask(committed, cols, torch.float32),
        )
        for node in (7, 4, 9, 0):  # a deep path, a branch, the second root, the root alone
            kept = StaticKVCache(model.config, capacity, torch.device("cpu"), torch.float32)
            kept.kv.copy_(cache.kv)
            kept.compact(committed, tree.path[node])
            length = len(prompt) + int(tree.depth[node]) + 1
            path_tokens = tokens[tree.path[node][: int(tree.depth[node]) + 1]].tolist()
            fresh = StaticKVCache(model.config, capacity, torch.device("cpu"), torch.float32)
            _prefill(model, fresh, prompt + path_tokens)
            torch.testing.assert_close(
                kept.kv[..., :length, :], fresh.kv[..., :length, :], rtol=1e-5, atol=1e-5
            )


def test_the_cache_answers_the_transformers_cache_interface():
    model = make_model("llama", seed=1)
    cache = StaticKVCache(model.config, 64, torch.device("cpu"), torch.float32)
    assert len(cache.layers) == model.config.num_hidden_layers
    assert cache.get_max_length() == 64 and cache.nbytes == cache.kv.numel() * 4
    assert cache.kv.shape == (2, 2, 1, 2, 64, 8)  # layers, k/v, batch, kv heads, slots, head dim
