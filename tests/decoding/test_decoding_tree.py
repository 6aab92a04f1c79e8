"""Static trees and adaptive depth: greedy acceptance stays token-identical to single-head."""

from __future__ import annotations

import json

import pytest
from test_decoding_multi_head import prompts, with_heads

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.adaptive import Adaptive
from medusa.decoding.base import DecodeState
from medusa.errors import MedusaError


@pytest.mark.parametrize("heads", [1, 2, 3, 4])
@pytest.mark.parametrize("seed,noise", [(0, 0.0), (1, 0.3), (2, 0.0)])
def test_builtin_tree_greedy_is_token_identical(heads, seed, noise):
    model = with_heads("llama", seed, num_heads=4, noise=noise, tie_word_embeddings=seed == 1)
    tree = make_strategy(DecodeSettings("tree", heads))
    assert tree.num_heads == heads
    for prompt in prompts(seed, n=2):
        ref = generate(model, make_strategy("single-head"), prompt, 30, set())
        got = generate(model, tree, prompt, 30, set())
        assert got.tokens == ref.tokens
        assert max(got.accepted_per_step) <= heads + 1


def test_tree_file_and_its_depth(tmp_path):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps({"paths": [[0], [1], [0, 0], [0, 0, 0]]}))
    model = with_heads("llama", 3, num_heads=3, noise=0.2)
    strategy = make_strategy(DecodeSettings("tree", tree_file=str(path)))
    assert strategy.num_heads == 3
    for prompt in prompts(3, n=2):
        assert generate(model, strategy, prompt, 25, set()).tokens == generate(
            model, make_strategy("single-head"), prompt, 25, set()).tokens
    path.write_text("[[0], [0, 0], [1, 0, 0]]")  # (1,) missing: not a tree
    with pytest.raises(MedusaError, match="tree"):
        make_strategy(DecodeSettings("tree", tree_file=str(path)))


def test_tree_respects_budget_near_the_length_limit():
    model = with_heads("llama", 0, num_heads=4)
    for n in (1, 2, 3, 5):
        got = generate(model, make_strategy(DecodeSettings("tree", 4)), prompts(0)[0], n, set())
        assert len(got.tokens) == n
        assert all(d <= n for d in got.drafted_depth_per_step)


@pytest.mark.parametrize("strategy", ["multi-head", "tree"])
def test_adaptive_is_lossless_and_shrinks_when_drafts_fail(strategy):
    model = with_heads("llama", 1, num_heads=4, noise=0.5)  # noisy heads: drafts mostly rejected
    adaptive = make_strategy(DecodeSettings(strategy, 4, 2, adaptive=True))
    assert isinstance(adaptive, Adaptive)
    for prompt in prompts(1):
        ref = generate(model, make_strategy("single-head"), prompt, 30, set())
        assert generate(model, adaptive, prompt, 30, set()).tokens == ref.tokens
    assert adaptive.depth_counts[4] >= 1  # started with every head
    assert adaptive.heads_to_use() < 4 and min(adaptive.depth_counts) < 4


def test_adaptive_grows_back_when_everything_is_accepted():
    inner = make_strategy(DecodeSettings("multi-head", 3, 1))
    adaptive = Adaptive(inner)
    adaptive.mean_accepted = 1.0
    assert adaptive.heads_to_use() == 1

    class Fake:  # every drafted token accepted
        def accept(self, state, tree, verified):
            return list(range(len(tree)))

    adaptive.inner = Fake()
    from medusa.decoding.base import Tree

    for _ in range(10):
        adaptive.accept(DecodeState(None, None), Tree([1, 2, 3, 4], [-1, 0, 1, 2]), None)
    assert adaptive.heads_to_use() == 3
