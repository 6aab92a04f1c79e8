"""Single-head decoding must reproduce transformers' own greedy ``generate`` token for token."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model

from medusa.decoding import generate, make_strategy
from medusa.decoding.base import Tree
from medusa.errors import MedusaError
from medusa.model import MedusaModel


def hf_greedy(model, prompt: list[int], max_new: int, eos: list[int]) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=0,
    )[0, len(prompt) :].tolist()
    while out and out[-1] in eos:  # generate keeps the EOS; ours returns generated text ids only
        out.pop()
    return out


CASES = [
    ("llama", 0, {}),
    ("llama", 1, {"tie_word_embeddings": True}),
    ("llama", 2, {"num_key_value_heads": 1}),
    ("mistral", 3, {}),
    ("qwen2", 4, {}),
]


@pytest.mark.parametrize("kind,seed,overrides", CASES)
def test_greedy_equals_transformers_generate(kind, seed, overrides):
    model = make_model(kind, seed=seed, **overrides)
    wrapped = MedusaModel(model, tokenizer=None)
    gen = torch.Generator().manual_seed(seed)
    for trial in range(3):
        prompt = torch.randint(
            3, 400, (int(torch.randint(1, 40, (1,), generator=gen)),), generator=gen
        ).tolist()
        ours = generate(wrapped, make_strategy("single-head"), prompt, 40, stop_ids=set())
        assert ours.tokens == hf_greedy(model, prompt, 40, [])
        assert len(ours.tokens) == 40 and ours.stop_reason == "length"
        assert ours.steps == 40 and all(a == 1 for a in ours.accepted_per_step)


def test_stops_at_eos_and_leaves_it_out():
    model = make_model("llama", seed=5)
    wrapped = MedusaModel(model, tokenizer=None)
    prompt = [5, 6, 7, 8]
    free = generate(wrapped, make_strategy("single-head"), prompt, 30, stop_ids=set()).tokens
    eos = free[7]  # make the 8th generated token a stop token
    first = free.index(eos)
    result = generate(wrapped, make_strategy("single-head"), prompt, 30, stop_ids={eos})
    assert result.tokens == free[:first]
    assert result.stop_reason == "eos"
    assert result.tokens == hf_greedy(model, prompt, 30, [eos])


def test_max_new_tokens_respected_exactly():
    wrapped = MedusaModel(make_model("llama", seed=6), tokenizer=None)
    for n in (1, 2, 7):
        result = generate(wrapped, make_strategy("single-head"), [9, 10, 11], n, stop_ids=set())
        assert len(result.tokens) == n


def test_unknown_strategy():
    with pytest.raises(MedusaError, match="unknown decoding strategy"):
        make_strategy("sideways")


def test_tree_validation_and_shape():
    tree = Tree([5, 6, 7, 8], [-1, 0, 0, 1])
    assert tree.depths == [0, 1, 1, 2]
    assert tree.path_to(3) == [0, 1, 3]
    assert not tree.is_chain and Tree([1, 2, 3], [-1, 0, 1]).is_chain
    with pytest.raises(ValueError):
        Tree([1, 2], [-1, 1])
    with pytest.raises(ValueError):
        Tree([], [])
