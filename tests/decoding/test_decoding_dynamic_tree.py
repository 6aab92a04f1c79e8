"""Dynamic trees: the shape follows the drafter's cumulative confidence; greedy decoding stays
lossless."""

from __future__ import annotations

import pytest
import torch
from test_autoregressive_drafter import _model as autoregressive
from test_decoding_multi_head import prompts, with_heads
from test_sequential_heads import _model as sequential

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.base import DecodeState
from medusa.decoding.dynamic_tree import DynamicTree
from medusa.decoding.engine import StaticEngine
from medusa.errors import MedusaError


@pytest.mark.parametrize("make", [lambda: with_heads("llama", 1, num_heads=4, noise=0.3),
                                  lambda: sequential(0, 0.1), lambda: autoregressive(0, 0.15)],
                         ids=["medusa", "sequential", "autoregressive"])
def test_greedy_decoding_with_a_dynamic_tree_equals_single_head(make):
    model = make()
    # no device plan: the reference loop decodes it
    engine = StaticEngine(model, capture=False, quiet=True)
    multi_token_steps = 0
    for size in (1, 6, 24):
        for prompt in prompts(5, n=1) + [[7] * 12]:
            settings = DecodeSettings("tree", 4, dynamic_tree=size)
            ref = generate(model, make_strategy("single-head"), prompt, 30, {2})
            got = generate(model, make_strategy(settings), prompt, 30, {2})
            assert (
                got.tokens
                == ref.tokens
                == engine.generate(make_strategy(settings), prompt, 30, {2}).tokens
            )
            assert max(got.drafted_depth_per_step) <= 5
            multi_token_steps += sum(a > 1 for a in got.accepted_per_step)
    assert multi_token_steps > 0


def test_the_tree_keeps_the_nodes_of_highest_cumulative_probability():
    model = sequential(4, 0.3)
    hidden = torch.randn(model.hidden_size)
    levels = lambda paths: model.level_logits(hidden, paths).detach()  # noqa: E731
    strategy = DynamicTree(
        size=10, depth=3, acceptance=make_strategy(DecodeSettings("tree", 4)).acceptance, branch=3
    )
    tree = strategy.draft(
        DecodeState(torch.zeros(400), None, _argmax=11, level_logits=levels), budget=64
    )
    assert tree.tokens[0] == 11 and len(tree) == 11
    assert all(p < i for i, p in enumerate(tree.parents) if i)

    def score(node: int) -> float:
        path = [tree.tokens[i] for i in tree.path_to(node)]
        return sum(float(levels(torch.tensor([path[:j]])).float().log_softmax(-1)[0, path[j]])
                   for j in range(1, len(path)))

    kept = [score(n) for n in range(1, len(tree))]
    # brute force: every depth-1 child of the root that is not kept scores below every kept node
    lp = levels(torch.tensor([[11]])).float().log_softmax(-1)[0]
    first = {tree.tokens[n] for n in range(1, len(tree)) if tree.parents[n] == 0}
    for token in lp.topk(3).indices.tolist():
        if token not in first:
            assert float(lp[token]) <= min(kept) + 1e-6
    assert max(len(tree.path_to(n)) for n in range(len(tree))) <= 4  # root + 3 levels


def test_budget_limits_the_depth():
    model = with_heads("llama", 2, num_heads=4, noise=0.3)
    ref = generate(model, make_strategy("single-head"), [5, 6, 7], 3, set())
    got = generate(
        model, make_strategy(DecodeSettings("tree", 4, dynamic_tree=20)), [5, 6, 7], 3, set()
    )
    assert got.tokens == ref.tokens and len(got.tokens) == 3


def test_bad_settings():
    with pytest.raises(MedusaError, match="at least 1"):
        DynamicTree(0, 3, make_strategy(DecodeSettings("tree", 4)).acceptance)
