"""Level-by-level drafting with path-dependent drafters: each level from the last one's state, the
same logits as computing every path afresh, and every strategy asking level after level (no call
starts over)."""

from __future__ import annotations

import pytest
import torch
import test_autoregressive_drafter
import test_sequential_heads

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import StaticEngine
from medusa.drafters.autoregressive import DraftLayer
from medusa.model.level_drafter import LevelDrafter

MAKERS = {"sequential": lambda: test_sequential_heads._model(3, 0.25),
          "autoregressive": lambda: test_autoregressive_drafter._model(3, 0.2)}


@pytest.mark.parametrize("drafter,noise", [("sequential", 0.3), ("autoregressive", 0.2)])
def test_level_logits_follow_the_path_and_match_teacher_forcing(drafter, noise):
    make = (
        test_sequential_heads._model
        if drafter == "sequential"
        else test_autoregressive_drafter._model
    )
    model = make(1, noise)
    heads, h = model.heads, torch.randn(4, model.hidden_size)
    paths = torch.randint(3, 400, (4, 4))
    forced = heads.teacher_forced(h, paths)
    for d in range(4):
        torch.testing.assert_close(heads.level_logits(h, paths[:, : d + 1]), forced[d])
    other = paths.clone()
    other[:, 1] = (other[:, 1] + 1) % 400
    # head 0 sees t_0 only
    torch.testing.assert_close(heads.level_logits(h, other[:, :1]), forced[0])
    assert not torch.allclose(heads.level_logits(h, other[:, :2]), forced[1])  # head 1 sees t_1 too
    chain = heads.greedy_chain(h, paths[:, 0], 4)  # its own argmax path
    greedy = paths[:, :1]
    for d in range(4):
        torch.testing.assert_close(chain[d], heads.level_logits(h, greedy))
        greedy = torch.cat([greedy, chain[d].argmax(-1, keepdim=True)], dim=1)


def test_extend_gives_the_forward_pass_position_by_position():
    torch.manual_seed(0)
    layer = DraftLayer(16, 4)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(3, 6, 16)
    full = layer(x)
    keys = values = None
    for j in range(6):
        out, keys, values = layer.extend(x[:, j], keys, values)
        torch.testing.assert_close(out, full[:, j], atol=1e-5, rtol=1e-5)
    assert keys.shape == (3, 4, 6, 4)


@pytest.mark.parametrize("drafter", list(MAKERS))
def test_path_states_are_the_drafters_definition(drafter):
    """Against the definitions written out here: sequential heads read h + Σ_{i≤j} V_i·embed(t_i);
    the drafter's state after t_j is its layer's full causal pass over the inputs (h, t_0), (ĥ_1,
    t_1), …, last position."""
    heads = MAKERS[drafter]().heads
    h = torch.randn(5, heads.config.hidden_size)
    paths = torch.randint(3, 400, (5, 3))
    with torch.no_grad():
        _, states = heads.teacher_forced_states(h, paths, 3)
        emb = heads._embedding[0]
        if drafter == "sequential":
            total = h.clone()
            for j in range(3):
                total = total + heads.seq_proj[j](emb(paths[:, j]))
                torch.testing.assert_close(states[j], total)
        else:
            feature, inputs = h, []
            for j in range(3):
                inputs.append(heads.drafter.inputs(feature, emb(paths[:, j])))
                feature = heads.drafter(torch.stack(inputs, dim=1))[:, -1]
                torch.testing.assert_close(states[j], feature, atol=1e-5, rtol=1e-5)


def _levels(root: int, width: int, depth: int, seed: int) -> list[torch.Tensor]:
    """Paths level by level, each level's rows extending rows of the one before (in shuffled order).
    """
    g = torch.Generator().manual_seed(seed)
    levels = [torch.tensor([[root]])]
    for _ in range(depth):
        last = levels[-1]
        parents = torch.randint(0, last.shape[0], (width,), generator=g)
        tokens = torch.randint(3, 400, (width, 1), generator=g)
        levels.append(torch.cat([last[parents], tokens], dim=1))
    return levels


@pytest.mark.parametrize("drafter", list(MAKERS))
def test_each_level_from_the_last_equals_the_full_paths(drafter):
    model = MAKERS[drafter]()
    hidden = torch.randn(model.hidden_size)
    levels = LevelDrafter(model.heads, hidden)
    for paths in _levels(9, 5, 3, seed=1):
        torch.testing.assert_close(
            levels(paths), model.level_logits(hidden, paths), atol=1e-5, rtol=1e-5
        )
    assert levels.fallbacks == 0


@pytest.mark.parametrize("drafter", list(MAKERS))
def test_a_call_that_does_not_extend_the_last_starts_over(drafter):
    model = MAKERS[drafter]()
    hidden = torch.randn(model.hidden_size)
    levels = LevelDrafter(model.heads, hidden)
    first = _levels(9, 4, 2, seed=2)
    for paths in first:
        levels(paths)
    unrelated = torch.randint(3, 400, (4, 4))  # depth 3, but no prefix among the last level's paths
    torch.testing.assert_close(
        levels(unrelated), model.level_logits(hidden, unrelated), atol=1e-5, rtol=1e-5
    )
    skipped = _levels(11, 3, 3, seed=3)[2]  # depth 2 after depth 3: starts over too
    torch.testing.assert_close(
        levels(skipped), model.level_logits(hidden, skipped), atol=1e-5, rtol=1e-5
    )
    assert levels.fallbacks == 2


def test_independent_heads_are_asked_directly():
    from test_decoding_multi_head import with_heads

    model = with_heads("llama", 0, noise=0.2)
    hidden = torch.randn(model.hidden_size)
    paths = torch.randint(3, 400, (3, 3))
    # head 2 at the hidden state: paths unused
    expected = model.heads(hidden.expand(3, -1), 3, paths[:, 0])[2]
    torch.testing.assert_close(LevelDrafter(model.heads, hidden)(paths), expected)


@pytest.mark.parametrize("drafter", list(MAKERS))
def test_every_strategy_drafts_level_after_level(drafter, monkeypatch):
    """Static and dynamic trees and beam searches, in the eager loop and the fast engine's step: no
    call starts over, greedy decoding still gives the single-head tokens, and typical acceptance the
    same tokens in both loops."""
    model = MAKERS[drafter]()
    made: list[LevelDrafter] = []
    real = type(model).level_drafter

    def recording(self, hidden, context=None):
        levels = real(self, hidden, context)
        made.append(levels)
        return levels

    monkeypatch.setattr(type(model), "level_drafter", recording)
    engine = StaticEngine(model, capture=False, quiet=True)
    prompt = [5, 17, 40, 9, 33]
    ref = generate(model, make_strategy("single-head"), prompt, 24, {2}).tokens
    for settings in (
        DecodeSettings("tree", 4),
        DecodeSettings("multi-head", 3, 3),
        DecodeSettings("multi-head", 2, 3, "typical"),
        DecodeSettings("tree", 4, dynamic_tree=12),
    ):
        made.clear()
        eager = generate(model, make_strategy(settings), prompt, 24, {2}).tokens
        if settings.acceptance == "greedy":
            assert eager == ref, settings
        if settings.dynamic_tree is None:  # dynamic trees run in the eager loop under every engine
            assert (
                engine.generate(make_strategy(settings), prompt, 24, {2}).tokens == eager
            ), settings
        assert made and all(levels.fallbacks == 0 for levels in made), settings
