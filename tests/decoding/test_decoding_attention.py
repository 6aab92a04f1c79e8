"""The fast engine's grouped attention: equal to transformers' sdpa, switched on only inside the
engine."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from conftest import make_model
from test_decoding_multi_head import with_heads

from medusa.decoding import DecodeSettings, make_strategy
from medusa.decoding.attention import NAME, grouped_attention, use_attention
from medusa.decoding.engine import EagerEngine, StaticEngine
from medusa.errors import MedusaError
from medusa.model import MedusaModel


class _Module(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = False


@pytest.mark.parametrize(
    "heads,kv_heads,queries,slots,mask_width",
    [(9, 3, 1, 37, 37), (4, 2, 7, 20, 24), (4, 4, 16, 64, 64), (6, 1, 3, 9, 9)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_attention_equals_sdpa(heads, kv_heads, queries, slots, mask_width, dtype):
    torch.manual_seed(heads * 100 + queries)
    q = torch.randn(2, heads, queries, 16, dtype=dtype)
    k = torch.randn(2, kv_heads, slots, 16, dtype=dtype)
    v = torch.randn(2, kv_heads, slots, 16, dtype=dtype)
    allowed = torch.rand(2, 1, queries, mask_width) < 0.6
    allowed[..., 0] = True  # every query sees at least one slot (as every real row sees itself)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    ours, weights = grouped_attention(_Module(heads // kv_heads), q, k, v, mask, scaling=0.3)
    theirs, _ = sdpa_attention_forward(
        _Module(heads // kv_heads), q, k, v, mask[..., :slots], scaling=0.3
    )
    assert weights is None and ours.shape == theirs.shape == (2, queries, heads, 16)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(ours.float(), theirs.float(), atol=tol, rtol=tol)


def test_masked_slots_do_not_leak():
    """Changing what sits in a masked slot changes nothing (stale cache rows past the committed
    length)."""
    q, k, v = torch.randn(1, 4, 2, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    mask = torch.zeros(1, 1, 2, 10)
    mask[..., 6:] = torch.finfo(torch.float32).min
    first, _ = grouped_attention(_Module(2), q, k, v, mask)
    k[:, :, 6:], v[:, :, 6:] = 1e3, -1e3
    second, _ = grouped_attention(_Module(2), q, k, v, mask)
    assert torch.equal(first, second)


def test_what_it_does_not_implement_is_refused():
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="needs the 4D mask"):
        grouped_attention(_Module(1), q, k, v, None)
    with pytest.raises(ValueError, match="softcap"):
        grouped_attention(_Module(1), q, k, v, torch.zeros(1, 1, 3, 5), softcap=30.0)


def test_half_precision_scores_do_not_overflow():
    """Scores are float32 whatever the inputs: fp16 keys and queries whose products pass fp16's
    range."""
    q, k, v = (torch.full((1, 1, 2, 64), 40.0, dtype=torch.float16) for _ in range(3))
    out, _ = grouped_attention(
        _Module(1),
        q,
        k[:, :, :2].clone(),
        v[:, :, :2].clone(),
        torch.zeros(1, 1, 2, 2, dtype=torch.float16),
    )
    assert torch.isfinite(out).all()


def test_dropout_is_refused():
    with pytest.raises(ValueError, match="inference only"):
        grouped_attention(
            _Module(1),
            torch.randn(1, 1, 1, 4),
            torch.randn(1, 1, 2, 4),
            torch.randn(1, 1, 2, 4),
            None,
            dropout=0.1,
        )


def test_the_switch_is_scoped_and_restored_on_error():
    model = MedusaModel(make_model(), tokenizer=None)
    before = model.base_model.config._attn_implementation
    with use_attention(model, "grouped"):
        assert model.base_model.config._attn_implementation == NAME
    assert model.base_model.config._attn_implementation == before
    with pytest.raises(RuntimeError), use_attention(model, "grouped"):
        raise RuntimeError("boom")
    assert model.base_model.config._attn_implementation == before
    with use_attention(model, "model"):
        assert model.base_model.config._attn_implementation == before


def test_engine_runs_grouped_and_leaves_the_reference_loop_alone(monkeypatch):
    """The static engine's forwards go through the grouped attention; the eager loop never does;
    both agree."""
    import medusa.decoding.attention as attention

    model = with_heads("llama", 3, noise=0.05)
    calls = {"grouped": 0}
    real = attention.grouped_attention

    def counting(*args, **kwargs):
        calls["grouped"] += 1
        return real(*args, **kwargs)

    monkeypatch.setitem(attention.AttentionInterface._global_mapping, NAME, counting)
    prompt = list(range(5, 25))
    # steps of several queries (the draft tree) as well as one (the prefill's last)
    tree = DecodeSettings("tree", 4)
    reference = EagerEngine(model).generate(
        make_strategy(DecodeSettings("single-head")), prompt, 16, set()
    )
    assert calls["grouped"] == 0
    grouped = StaticEngine(model, capture=False).generate(make_strategy(tree), prompt, 16, set())
    assert calls["grouped"] > 0
    before = calls["grouped"]
    theirs = StaticEngine(model, capture=False, attention="model").generate(
        make_strategy(tree), prompt, 16, set()
    )
    assert calls["grouped"] == before
    assert grouped.tokens == reference.tokens == theirs.tokens
    assert grouped.accepted_per_step == theirs.accepted_per_step


def test_auto_is_grouped_in_float32_only():
    model = MedusaModel(make_model(), tokenizer=None)
    assert StaticEngine(model, capture=False).attention == "grouped"
    assert StaticEngine(model, capture=False).describe()["attention"] == "grouped"
    assert StaticEngine(model.to(torch.bfloat16), capture=False).attention == "model"
    assert StaticEngine(model, capture=False, attention="grouped").attention == "grouped"


def test_unknown_attention_is_one_line():
    with pytest.raises(MedusaError, match="unknown attention 'flash'"):
        StaticEngine(MedusaModel(make_model(), tokenizer=None), capture=False, attention="flash")
