"""Tree verification through public inputs equals plain forwards; keep_path leaves the cache of a
fresh forward."""

from __future__ import annotations

import torch
from conftest import make_model

from medusa.decoding.base import Tree
from medusa.decoding.cache import keep_path, new_cache
from medusa.decoding.verify import tree_attention_mask, verify
from medusa.model import MedusaModel


def test_mask_on_hand_drawn_tree():
    # node 0 root; 1, 2 children of 0; 3 child of 1 — with a 2-token prefix
    tree = Tree([10, 11, 12, 13], [-1, 0, 0, 1])
    mask = tree_attention_mask(tree, 2, torch.float32, torch.device("cpu"))[0, 0]
    allowed = (mask == 0).int().tolist()
    assert allowed == [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 1, 0],
        [1, 1, 1, 1, 0, 1],
    ]
    assert mask.min() == torch.finfo(torch.float32).min


def _prefill(model, prompt):
    cache = new_cache(model.base_model)
    model.step(torch.tensor([prompt]), cache)
    return cache


def test_tree_logits_equal_plain_forward_per_path():
    base = make_model("llama", seed=11)
    model = MedusaModel(base, tokenizer=None)
    prompt = [5, 9, 14, 3, 77, 120, 8]
    tree = Tree([30, 31, 32, 33, 34], [-1, 0, 0, 1, -1])  # two first-level nodes: a forest
    cache = _prefill(model, prompt)
    got = verify(model, cache, len(prompt), tree).logits
    for node in range(len(tree)):
        path = [tree.tokens[i] for i in tree.path_to(node)]
        with torch.no_grad():
            ref = base(torch.tensor([prompt + path])).logits[0, -1]
        torch.testing.assert_close(got[node], ref, atol=1e-5, rtol=1e-5)


def test_keep_path_equals_fresh_cache():
    base = make_model("llama", seed=12)
    model = MedusaModel(base, tokenizer=None)
    prompt = [5, 9, 14, 3]
    tree = Tree([30, 31, 32, 33], [-1, 0, 0, 2])
    cache = _prefill(model, prompt)
    verify(model, cache, len(prompt), tree)
    path = [0, 2, 3]
    keep_path(cache, len(prompt), path)
    fresh = _prefill(model, prompt + [tree.tokens[i] for i in path])
    assert cache.get_seq_length() == fresh.get_seq_length() == len(prompt) + len(path)
    for mine, ref in zip(cache.layers, fresh.layers):
        torch.testing.assert_close(mine.keys, ref.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine.values, ref.values, atol=1e-5, rtol=1e-5)
