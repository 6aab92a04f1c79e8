"""The autoregressive (EAGLE-style) drafter: one decoder layer predicting the next hidden state
along the draft path, projected by the base lm_head, behind the same head interface as Medusa and
sequential heads."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_model
from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import StaticEngine
from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.model.checkpoint_facts import inspect_checkpoint
from medusa.model.checkpoints import build_heads, read_head_checkpoint, save_heads, save_medusa1
from medusa.drafters.autoregressive import DraftLayer
from medusa.model.heads import HeadConfig, MedusaHeads, infer_head_config
from medusa.training.train_heads import TrainSettings, resolve_drafter


def _model(seed: int, noise: float, depth: int = 4, context: bool = False) -> MedusaModel:
    """A tiny base with a drafter whose weights are moved by ``noise`` (``context``: the context
    drafter)."""
    base = make_model("llama", seed=seed)
    config = HeadConfig(depth, 0, base.config.hidden_size, base.config.vocab_size, True,
                        drafter="context" if context else "autoregressive", attention_heads=4)
    heads = MedusaHeads(config, base.get_output_embeddings(), base.get_input_embeddings())
    gen = torch.Generator().manual_seed(seed + (29 if context else 23))
    with torch.no_grad():
        for p in heads.drafter.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise)
    return MedusaModel(base, tokenizer=None, heads=heads).eval()


def test_the_layer_is_causal_and_starts_as_the_identity():
    layer = DraftLayer(16, 4)
    h, e = torch.randn(3, 16), torch.randn(3, 16)
    torch.testing.assert_close(layer.inputs(h, e), h)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(x), x)  # zero residual branches
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    y = x.clone()
    y[:, 3:] = torch.randn(2, 2, 16)
    # position j never sees inputs after j
    torch.testing.assert_close(layer(x)[:, :3], layer(y)[:, :3])
    assert not torch.allclose(layer(x)[:, 3:], layer(y)[:, 3:])


def test_a_fresh_drafter_repeats_the_base_prediction():
    model = _model(0, 0.0)
    h = torch.randn(3, model.hidden_size)
    paths = torch.randint(3, 400, (3, 4))
    expected = model.lm_head(h)
    torch.testing.assert_close(model.heads.teacher_forced(h, paths), torch.stack([expected] * 4))
    for d in range(4):
        torch.testing.assert_close(model.level_logits(h, paths[:, : d + 1]), expected)


@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_decoding_equals_single_head_in_both_loops(seed):
    model = _model(seed, 0.15)
    engine = StaticEngine(model, capture=False, quiet=True)
    multi_token_steps = 0
    for settings in (DecodeSettings("tree", 4), DecodeSettings("multi-head", 3, 3),
                     DecodeSettings("tree", 3, adaptive=True)):
        for prompt in ([5 + seed, 17, 40, 9], [7] * 12):
            ref = generate(model, make_strategy("single-head"), prompt, 30, {2})
            got = generate(model, make_strategy(settings), prompt, 30, {2})
            fast = engine.generate(make_strategy(settings), prompt, 30, {2})
            assert got.tokens == ref.tokens == fast.tokens, settings
            assert (fast.accepted_per_step, fast.drafted_depth_per_step) == (
                got.accepted_per_step,
                got.drafted_depth_per_step,
            )
            multi_token_steps += sum(a > 1 for a in got.accepted_per_step)
    assert multi_token_steps > 0


def test_save_load_and_the_facts_read_before_loading(tmp_path):
    model = _model(2, 0.2)
    state = model.heads.head_state_dict()
    assert state["drafter.depth"].tolist() == [4, 4] and "drafter.qkv.weight" in state
    config = infer_head_config(state, model.hidden_size, 400)
    assert config.drafter == "autoregressive" and config.num_heads == 4
    save_heads(model.heads, tmp_path / "heads", "tiny")
    assert json.loads((tmp_path / "heads" / "medusa_heads.json").read_text())["autoregressive"] == 4
    heads = build_heads(read_head_checkpoint(str(tmp_path / "heads")), model.base_model)
    h, paths = torch.randn(2, model.hidden_size), torch.randint(3, 400, (2, 4))
    torch.testing.assert_close(heads.teacher_forced(h, paths), model.heads.teacher_forced(h, paths))
    assert inspect_checkpoint(str(tmp_path / "heads"), None, None, False).num_heads == 4
    with pytest.raises(MedusaError, match="autoregressive heads have no FasterDecoding"):
        save_medusa1(model.heads, tmp_path / "m1", "tiny")


def test_drafter_settings():
    assert resolve_drafter(TrainSettings(drafter="autoregressive")).drafter == "autoregressive"
    with pytest.raises(MedusaError, match="frozen base"):
        resolve_drafter(TrainSettings(drafter="autoregressive", joint_lora=True))


def test_faster_decoding_medusa_head_follows_the_drafters_greedy_chain():
    """Code written against FasterDecoding (course submissions) calls
    ``model.medusa_head[k](hidden)``; the shipped default is this drafter, so head k must give its
    depth-k logits along its own greedy path."""
    model = _model(6, 0.3, depth=3)
    h = torch.randn(2, model.hidden_size)
    chain = model.heads.greedy_chain(h, model.lm_head(h).argmax(-1), 3)
    assert not torch.allclose(chain[1], chain[0])
    for k in range(3):
        torch.testing.assert_close(model.medusa_head[k](h), chain[k])
