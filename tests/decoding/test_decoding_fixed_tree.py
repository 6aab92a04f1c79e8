"""Fixed-shape trees: index tensors, masks, and on-device acceptance equal to the host rules on
random trees."""

from __future__ import annotations

import random

import pytest
import torch

from medusa.decoding.accept import Greedy, Rescore, SpeculativeSampling, Typical
from medusa.decoding.base import DecodeState, Tree, Verified
from medusa.decoding.fixed_tree import FixedTree, causal_prefill_mask
from medusa.decoding.sampling import Sampler, Sampling
from medusa.decoding.verify import tree_attention_mask


def random_parents(rng: random.Random, n: int, roots: int = 1) -> list[int]:
    parents = [-1] * roots
    for i in range(roots, n):
        parents.append(rng.randrange(-1 if rng.random() < 0.1 else 0, i))
    return parents


def test_index_tensors_of_a_small_tree():
    #      0         5
    #    1   2       6
    #    3           (node 4 under 2)
    parents = [-1, 0, 0, 1, 2, -1, 5]
    tree = FixedTree(parents, "cpu")
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 0, 1]
    assert tree.max_depth == 2
    # padded with the node
    assert tree.path[3].tolist() == [0, 1, 3] and tree.path[6].tolist() == [5, 6, 6]
    assert tree.leaf.tolist() == [False, False, False, True, True, False, True]
    assert tree.first_level.tolist() == [True, False, False, False, False, True, False]
    assert tree.ancestors[4].nonzero().flatten().tolist() == [0, 2, 4]
    assert tree.parent_row.tolist() == [0, 1, 1, 2, 3, 0, 6]
    with pytest.raises(ValueError):
        FixedTree([-1, 2, 0], "cpu")


@pytest.mark.parametrize("committed,capacity", [(0, 16), (5, 16), (9, 24)])
def test_mask_is_the_tree_mask_placed_after_the_committed_prefix(committed, capacity):
    parents = [-1, 0, 0, 1, 2, -1, 5]
    tree = FixedTree(parents, "cpu")
    got = tree.mask(torch.tensor(committed), torch.arange(capacity), torch.float32)
    want = torch.full((1, 1, len(parents), capacity), torch.finfo(torch.float32).min)
    want[..., : committed + len(parents)] = tree_attention_mask(
        Tree([0] * len(parents), parents), committed, torch.float32, torch.device("cpu")
    )
    assert torch.equal(got, want)


def test_causal_prefill_mask():
    mask = causal_prefill_mask(3, torch.arange(5), torch.float32)[0, 0]
    allowed = mask == 0
    assert allowed.tolist() == [
        [True, False, False, False, False],
        [True, True, False, False, False],
        [True, True, True, False, False],
    ]


def _case(seed: int, vocab: int = 12):
    """A random tree, logits and tokens; about 60% of tokens are their parent's argmax, so paths of
    every length pass greedy."""
    rng = random.Random(seed)
    n = rng.randrange(1, 24)
    parents = random_parents(rng, n, roots=rng.choice([1, 1, 2]))
    gen = torch.Generator().manual_seed(seed)
    last = torch.randn(vocab, generator=gen) * 3
    logits = torch.randn(n, vocab, generator=gen) * 3
    rows = torch.cat([last[None], logits])
    tokens = []
    for i, p in enumerate(parents):
        arg = int(rows[p + 1].argmax())
        tokens.append(arg if rng.random() < 0.6 else rng.randrange(vocab))
    return parents, last, logits, torch.tensor(tokens)


def _host_path(rule, parents, last, logits, tokens, limit):
    """The host rule on the tree cut at depth ``limit`` (what the reference loop verifies near the
    length limit), mapped back to the full tree's node indices."""
    depths = FixedTree(parents, "cpu").depth.tolist()
    keep = [i for i in range(len(parents)) if depths[i] <= limit]
    index = {old: new for new, old in enumerate(keep)}
    tree = Tree(
        [int(tokens[i]) for i in keep], [index[parents[i]] if parents[i] >= 0 else -1 for i in keep]
    )
    state = DecodeState(last, None)
    verified = Verified(logits[keep], torch.zeros(len(keep), 1), tokens[keep])
    return [keep[i] for i in rule.accept(state, tree, verified)]


def _device_path(rule, parents, last, logits, tokens, limit):
    tree = FixedTree(parents, "cpu")
    best = int(rule.select_on_device(tree, last, logits, tokens, torch.tensor(limit),
                                     last.argmax(), None))
    return tree.path[best][: int(tree.depth[best]) + 1].tolist()


@pytest.mark.parametrize("seed", range(60))
def test_on_device_acceptance_equals_the_host_rules(seed):
    parents, last, logits, tokens = _case(seed)
    tree_depth = FixedTree(parents, "cpu").max_depth
    rules = [Typical(0.09, 0.3), Typical(0.3, 0.5), Rescore()]
    roots = [i for i, p in enumerate(parents) if p < 0]
    # greedy needs the argmax among the first nodes
    if any(int(tokens[i]) == int(last.argmax()) for i in roots):
        rules.append(Greedy())
    for rule in rules:
        for limit in sorted({tree_depth, max(tree_depth - 1, 0), 0}):
            host = _host_path(rule, parents, last, logits, tokens, limit)
            assert _device_path(rule, parents, last, logits, tokens, limit) == host, (
                rule.name,
                limit,
            )


@pytest.mark.parametrize("seed", range(40))
def test_sampled_acceptance_on_device_equals_the_host_rules(seed):
    """Speculative sampling and sampled typical acceptance: the host rule (drawing its own uniforms)
    and the device rule (given the same uniforms) accept the same path and the same bonus token."""
    parents, last, logits, tokens = _case(seed)
    fixed = FixedTree(parents, "cpu")
    root = tokens[0]  # the drawn first token sits at the first node
    sampling = Sampling(temperature=0.8, top_k=6, seed=seed)
    for make in (lambda: SpeculativeSampling(sampling),
                 lambda: Typical(0.09, 0.3, sampling)):
        for limit in sorted({fixed.max_depth, max(fixed.max_depth - 1, 0), 0}):
            rule = make()
            rule.sampler.for_depth(fixed.max_depth)
            noise = Sampler(sampling, fixed.max_depth).step_block(logits)
            depths = fixed.depth.tolist()
            keep = [i for i in range(len(parents)) if depths[i] <= limit]
            index = {old: new for new, old in enumerate(keep)}
            tree = Tree([int(tokens[i]) for i in keep],
                        [index[parents[i]] if parents[i] >= 0 else -1 for i in keep])
            state = DecodeState(last, None, drawn=int(root))
            verified = Verified(logits[keep], torch.zeros(len(keep), 1), tokens[keep])
            host = [keep[i] for i in rule.accept(state, tree, verified)]
            best = int(rule.select_on_device(fixed, last, logits, tokens, torch.tensor(limit),
                                             root, noise))
            assert fixed.path[best][: depths[best] + 1].tolist() == host, (rule.name, limit)
            bonus = rule.sampler.draw(logits[best], noise[depths[best] + 1])
            assert int(bonus) == verified.bonus, (rule.name, limit)


def test_greedy_accepts_the_longest_matching_chain():
    vocab = 6
    parents = [-1, 0, 0, 1, 3]
    last = torch.zeros(vocab)
    last[2] = 5
    logits = torch.zeros(5, vocab)
    # after node 0 the model says 4: node 1 (token 4) matches, node 2 (token 1) does not
    logits[0, 4] = 5
    logits[1, 3] = 5  # after node 1: 3, node 3 holds 3
    logits[3, 0] = 5  # after node 3: 0, node 4 holds 5: rejected
    tokens = torch.tensor([2, 4, 1, 3, 5])
    tree = FixedTree(parents, "cpu")
    root = last.argmax()
    best = Greedy().select_on_device(tree, last, logits, tokens, torch.tensor(tree.max_depth), root,
                                     None)
    assert int(best) == 3 and tree.path[3].tolist()[:3] == [0, 1, 3]
    # a depth limit
    best = Greedy().select_on_device(tree, last, logits, tokens, torch.tensor(1), root, None)
    assert int(best) == 1
