"""Medusa heads: identity start, projection sharing, key layout and shape inference from bare
tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medusa.model.heads import HeadConfig, MedusaHeads, ResBlock, infer_head_config

HIDDEN, VOCAB = 16, 50


def _lm_head(seed: int = 0, hidden: int = HIDDEN, vocab: int = VOCAB) -> nn.Linear:
    torch.manual_seed(seed)
    lm = nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        lm.weight.normal_()
    return lm


def _heads(num_heads=3, num_layers=1, shared=False, lm_head=None) -> MedusaHeads:
    lm_head = lm_head if lm_head is not None else _lm_head()
    return MedusaHeads(
        HeadConfig(num_heads, num_layers, HIDDEN, VOCAB, shared_lm_head=shared), lm_head
    )


def _randomise(heads: MedusaHeads, seed: int = 1) -> None:
    """Give every owned head tensor random values (never the shared base projection)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(heads.heads.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name in heads.head_state_dict():
            params[name].copy_(torch.randn(params[name].shape, generator=gen) * 0.3)


# ---------------------------------------------------------------- identity start


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_fresh_heads_reproduce_base_logits_exactly(shared, num_layers):
    lm = _lm_head()
    heads = _heads(num_heads=3, num_layers=num_layers, shared=shared, lm_head=lm)
    hidden = torch.randn(2, 5, HIDDEN)
    out = heads(hidden)
    base = lm(hidden)
    assert out.shape == (3, 2, 5, VOCAB)
    for k in range(3):
        # zero W, bias b: SiLU(b) would break the identity unless the bias is zero too -- it must be
        # exact
        assert torch.equal(out[k], base), f"head {k} does not start as the base lm_head"


def test_resblock_starts_as_identity_and_is_residual():
    block = ResBlock(HIDDEN)
    x = torch.randn(3, HIDDEN)
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.linear.weight.fill_(0.1)
        block.linear.bias.fill_(0.2)
    expected = x + torch.nn.functional.silu(x @ block.linear.weight.T + block.linear.bias)
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_trained_heads_differ_from_base():
    lm = _lm_head()
    heads = _heads(num_heads=2, shared=True, lm_head=lm)
    before = lm.weight.clone()
    _randomise(heads)
    assert torch.equal(lm.weight, before)
    hidden = torch.randn(1, 4, HIDDEN)
    out = heads(hidden)
    assert not torch.allclose(out[0], lm(hidden))
    assert not torch.allclose(out[0], out[1])


# ---------------------------------------------------------------- projection sharing and key layout


@pytest.mark.parametrize("num_layers", [1, 2])
def test_shared_projection_is_the_base_lm_head_and_not_in_state_dict(num_layers):
    lm = _lm_head()
    heads = _heads(num_heads=3, num_layers=num_layers, shared=True, lm_head=lm)
    for k in range(3):
        assert heads.heads[k][num_layers] is lm
    state = heads.head_state_dict()
    assert not any(key.endswith(f".{num_layers}.weight") for key in state)
    expected = {
        f"{k}.{j}.linear.{p}"
        for k in range(3)
        for j in range(num_layers)
        for p in ("weight", "bias")
    }
    assert set(state) == expected
    # no copies of the projection were made: the only vocab-sized parameter is the base's own
    vocab_params = [p for p in heads.parameters() if p.shape == (VOCAB, HIDDEN)]
    assert len(vocab_params) == 1 and vocab_params[0] is lm.weight


@pytest.mark.parametrize("num_layers", [1, 2])
def test_own_projection_is_a_copy_of_lm_head(num_layers):
    lm = _lm_head()
    heads = _heads(num_heads=3, num_layers=num_layers, shared=False, lm_head=lm)
    state = heads.head_state_dict()
    for k in range(3):
        key = f"{k}.{num_layers}.weight"
        assert key in state
        assert torch.equal(state[key], lm.weight)
        proj = heads.heads[k][num_layers]
        assert proj is not lm
        assert proj.weight.data_ptr() != lm.weight.data_ptr()
        assert proj.bias is None  # FasterDecoding's projection has no bias
    assert f"0.{num_layers}.bias" not in state
    # distinct storage: changing the head's copy leaves the base untouched
    before = lm.weight.clone()
    with torch.no_grad():
        heads.heads[0][num_layers].weight.add_(1.0)
    assert torch.equal(lm.weight, before)
    # and the heads do not share storage with each other either
    assert not torch.equal(heads.heads[0][num_layers].weight, heads.heads[1][num_layers].weight)


def test_key_layout_matches_fasterdecoding():
    heads = _heads(num_heads=2, num_layers=2, shared=False)
    assert set(heads.head_state_dict()) == {
        "0.0.linear.weight",
        "0.0.linear.bias",
        "0.1.linear.weight",
        "0.1.linear.bias",
        "0.2.weight",
        "1.0.linear.weight",
        "1.0.linear.bias",
        "1.1.linear.weight",
        "1.1.linear.bias",
        "1.2.weight",
    }


def test_load_head_state_dict_round_trip_and_errors():
    src = _heads(num_heads=2, num_layers=2, shared=False)
    _randomise(src)
    dst = _heads(num_heads=2, num_layers=2, shared=False)
    dst.load_head_state_dict(src.head_state_dict())
    for key, value in src.head_state_dict().items():
        assert torch.equal(dst.head_state_dict()[key], value)
    hidden = torch.randn(1, 3, HIDDEN)
    assert torch.equal(dst(hidden), src(hidden))

    partial = dict(src.head_state_dict())
    del partial["1.2.weight"]
    with pytest.raises(KeyError, match="missing"):
        dst.load_head_state_dict(partial)
    bad = dict(src.head_state_dict())
    bad["0.0.linear.weight"] = torch.zeros(HIDDEN, HIDDEN + 1)
    with pytest.raises(ValueError, match="shape"):
        dst.load_head_state_dict(bad)


def test_len_and_forward_subset_of_heads():
    heads = _heads(num_heads=4, num_layers=1, shared=False)
    _randomise(heads)
    assert len(heads) == 4
    hidden = torch.randn(3, 7, HIDDEN)
    two = heads(hidden, num_heads=2)
    assert two.shape == (2, 3, 7, VOCAB)
    full = heads(hidden)
    assert full.shape == (4, 3, 7, VOCAB)
    assert torch.equal(two, full[:2])
    assert torch.equal(full[3], heads.heads[3](hidden))


def test_head_config_to_dict():
    cfg = HeadConfig(3, 2, 32, 400, shared_lm_head=True)
    assert cfg.to_dict() == {
        "num_heads": 3,
        "num_layers": 2,
        "hidden_size": 32,
        "vocab_size": 400,
        "shared_lm_head": True,
        "token_input": False,
        "sequential": False,
        "autoregressive": 0,
        "context": False,
    }


def test_token_input_heads_start_as_the_base_and_are_inferred_from_their_tensors():
    lm = torch.nn.Linear(8, 20, bias=False)
    emb = torch.nn.Embedding(20, 8)
    config = HeadConfig(2, 1, 8, 20, shared_lm_head=True, drafter="token-input")
    heads = MedusaHeads(config, lm, emb)
    hidden = torch.randn(5, 8)
    torch.testing.assert_close(heads(hidden, None, torch.arange(5)), torch.stack([lm(hidden)] * 2))
    with pytest.raises(ValueError):
        heads(hidden)  # the next token is required
    state = heads.head_state_dict()
    assert "token_proj.1.weight" in state
    assert infer_head_config(state, 8, 20).drafter == "token-input"
    del state["token_proj.1.weight"]
    with pytest.raises(ValueError):
        infer_head_config(state, 8, 20)


# ---------------------------------------------------------------- infer_head_config


def _state(
    num_heads: int, num_layers: int, own: bool, hidden: int = HIDDEN, vocab: int = VOCAB
) -> dict:
    """A hand-made state dict in FasterDecoding's layout (not produced by MedusaHeads)."""
    state = {}
    for k in range(num_heads):
        for j in range(num_layers):
            state[f"{k}.{j}.linear.weight"] = torch.zeros(hidden, hidden)
            state[f"{k}.{j}.linear.bias"] = torch.zeros(hidden)
        if own:
            state[f"{k}.{num_layers}.weight"] = torch.zeros(vocab, hidden)
    return state


@pytest.mark.parametrize("num_heads", [1, 3, 5])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("own", [True, False])
def test_infer_head_config_reads_shape_from_tensors(num_heads, num_layers, own):
    cfg = infer_head_config(_state(num_heads, num_layers, own), HIDDEN, VOCAB)
    assert cfg == HeadConfig(num_heads, num_layers, HIDDEN, VOCAB, shared_lm_head=not own)


def test_infer_head_config_matches_what_medusa_heads_writes():
    for shared in (True, False):
        heads = _heads(num_heads=4, num_layers=2, shared=shared)
        assert infer_head_config(heads.head_state_dict(), HIDDEN, VOCAB) == heads.config


def test_infer_rejects_non_contiguous_head_indices():
    state = _state(3, 1, own=True)
    state = {k: v for k, v in state.items() if not k.startswith("1.")}
    with pytest.raises(ValueError, match="contiguous"):
        infer_head_config(state, HIDDEN, VOCAB)


def test_infer_rejects_heads_not_starting_at_zero():
    state = {
        k.replace("0.", "2.", 1) if k.startswith("0.") else k: v
        for k, v in _state(2, 1, own=False).items()
    }
    # heads 1 and 2 only
    with pytest.raises(ValueError, match="contiguous"):
        infer_head_config(state, HIDDEN, VOCAB)


@pytest.mark.parametrize("own", [True, False])
def test_infer_rejects_wrong_hidden_size(own):
    with pytest.raises(ValueError, match="hidden size"):
        infer_head_config(_state(2, 1, own, hidden=HIDDEN), HIDDEN * 2, VOCAB)


def test_infer_rejects_wrong_vocab_size():
    with pytest.raises(ValueError, match=str(VOCAB)):
        infer_head_config(_state(2, 1, own=True, vocab=VOCAB), HIDDEN, VOCAB + 10)


def test_infer_ignores_vocab_when_projection_is_shared():
    cfg = infer_head_config(_state(2, 1, own=False), HIDDEN, VOCAB + 10)
    assert cfg.shared_lm_head and cfg.vocab_size == VOCAB + 10


@pytest.mark.parametrize("drop", ["0.1.weight", "1.1.weight"])
def test_infer_rejects_mixed_owned_and_shared_projections(drop):
    state = _state(2, 1, own=True)
    del state[drop]
    with pytest.raises(ValueError, match="some heads own"):
        infer_head_config(state, HIDDEN, VOCAB)


def test_infer_rejects_different_block_counts():
    state = _state(2, 2, own=False)
    del state["1.1.linear.weight"], state["1.1.linear.bias"]
    with pytest.raises(ValueError, match="residual blocks"):
        infer_head_config(state, HIDDEN, VOCAB)


@pytest.mark.parametrize("key", ["medusa_head.0.0.linear.weight", "0.weight", "a.0.linear.weight"])
def test_infer_rejects_foreign_key_names(key):
    state = _state(1, 1, own=False)
    state[key] = torch.zeros(HIDDEN, HIDDEN)
    with pytest.raises(ValueError, match="unexpected head weight name"):
        infer_head_config(state, HIDDEN, VOCAB)


def test_infer_rejects_empty_state():
    with pytest.raises(ValueError, match="no head weights"):
        infer_head_config({}, HIDDEN, VOCAB)


def test_faster_decoding_medusa_head_applies_the_token_input():
    from conftest import make_model
    from medusa.model import MedusaModel

    base = make_model()
    config = HeadConfig(2, 1, base.config.hidden_size, base.config.vocab_size, True,
                        drafter="token-input")
    heads = MedusaHeads(config, base.get_output_embeddings(), base.get_input_embeddings())
    with torch.no_grad():
        for proj in heads.token_proj:
            proj.weight.normal_(0, 0.3)
    model = MedusaModel(base, tokenizer=None, heads=heads)
    hidden = torch.randn(3, base.config.hidden_size)
    expected = model.project_heads(hidden, model.lm_head(hidden))
    for k in range(2):
        torch.testing.assert_close(model.medusa_head[k](hidden), expected[k])
