"""Sequential (Hydra-style) heads: head k sees the draft tokens above it, so trees and beams are
drafted depth by depth. Greedy decoding with them must still give exactly the single-head tokens."""

from __future__ import annotations

import pytest
import torch

from test_replay import _medusa
from medusa.model.checkpoints import build_heads, read_head_checkpoint, save_heads, save_medusa1
from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.base import DecodeState
from medusa.decoding.draft import beam_candidates, beam_search_by_level
from medusa.decoding.engine import StaticEngine
from medusa.decoding.static_tree import StaticTree
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads, infer_head_config
from medusa.model import MedusaModel
from medusa.training.train_heads import TrainSettings, resolve_drafter
from medusa.decoding.trees import builtin_tree


def _model(seed: int, noise: float, num_heads: int = 4) -> MedusaModel:
    return _medusa(seed, noise, sequential=True, num_heads=num_heads)


def test_fresh_sequential_heads_are_plain_heads():
    lm, emb = torch.nn.Linear(8, 20, bias=False), torch.nn.Embedding(20, 8)
    heads = MedusaHeads(HeadConfig(3, 1, 8, 20, shared_lm_head=True, drafter="sequential"), lm, emb)
    hidden = torch.randn(5, 8)
    paths = torch.randint(0, 20, (5, 3))
    torch.testing.assert_close(heads.teacher_forced(hidden, paths), torch.stack([lm(hidden)] * 3))
    for d in range(3):
        torch.testing.assert_close(heads.level_logits(hidden, paths[:, : d + 1]), lm(hidden))


def test_the_tree_is_drafted_below_each_nodes_own_path():
    model = _model(2, 0.3)
    strategy = make_strategy(DecodeSettings("tree", 4))
    hidden = torch.randn(model.hidden_size)
    root = 17
    levels = lambda paths: model.level_logits(hidden, paths)  # noqa: E731
    tree = strategy.draft(
        DecodeState(torch.zeros(400), None, _argmax=root, level_logits=levels), budget=64
    )
    assert tree.tokens[0] == root and len(tree) == len(strategy.paths) + 1
    for node in range(1, len(tree)):
        path = [tree.tokens[i] for i in tree.path_to(node)]
        rank = strategy._ranks[node - 1]
        expected = (
            levels(torch.tensor([path[:-1]])).topk(strategy.max_rank, dim=-1).indices[0, rank]
        )
        assert path[-1] == int(expected)


def test_drafts_equal_plain_heads_when_the_path_is_ignored():
    plain = StaticTree(builtin_tree(4), make_strategy(DecodeSettings("tree", 4)).acceptance)
    g = torch.Generator().manual_seed(0)
    head_logits = torch.randn(4, 50, generator=g)
    state = DecodeState(torch.randn(50, generator=g), head_logits)
    ignore = lambda paths: head_logits[paths.shape[1] - 1].expand(paths.shape[0], 50)  # noqa: E731
    a = plain.draft(state, 64)
    b = plain.draft(DecodeState(state.logits, None, level_logits=ignore), 64)
    assert (a.tokens, a.parents) == (b.tokens, b.parents)
    levels = [state.logits.log_softmax(-1)] + [lv.log_softmax(-1) for lv in head_logits[:3]]
    assert beam_search_by_level(levels[0], ignore, 3, 4)[0] == beam_candidates(levels, 4)[0]


@pytest.mark.parametrize("seed,noise", [(0, 0.1), (3, 0.3)])
def test_greedy_decoding_with_sequential_heads_equals_single_head(seed, noise):
    model = _model(seed, noise)
    multi_token_steps = 0
    for settings in (
        DecodeSettings("tree", 4),
        DecodeSettings("tree", 2),
        DecodeSettings("multi-head", 3, 3),
        DecodeSettings("multi-head", 2, 4, adaptive=True),
    ):
        for prompt in ([5 + seed, 17, 40, 9], [7] * 12):
            ref = generate(model, make_strategy("single-head"), prompt, 30, {2})
            got = generate(model, make_strategy(settings), prompt, 30, {2})
            assert got.tokens == ref.tokens, settings
            multi_token_steps += sum(a > 1 for a in got.accepted_per_step)
    assert multi_token_steps > 0


@pytest.mark.parametrize("seed", [1, 4])
def test_the_fast_loop_drafts_sequential_heads_on_the_device(seed):
    """The fixed-shape step (uncaptured here; captured on a GPU) gives the eager loop's tokens and
    statistics."""
    model = _model(seed, 0.25)
    engine = StaticEngine(model, capture=False, quiet=True)
    for settings in (
        DecodeSettings("tree", 4),
        DecodeSettings("tree", 3, adaptive=True),
        DecodeSettings("multi-head", 3, 3),
        DecodeSettings("multi-head", 2, 4, adaptive=True),
    ):
        for prompt, max_new in (([5, 17, 40, 9], 30), ([7] * 12, 3)):
            ref = generate(model, make_strategy(settings), prompt, max_new, {2})
            got = engine.generate(make_strategy(settings), prompt, max_new, {2})
            assert (got.tokens, got.accepted_per_step, got.drafted_depth_per_step) == (
                ref.tokens, ref.accepted_per_step, ref.drafted_depth_per_step), settings
    assert engine.fell_back == []


def test_save_and_load_round_trip(tmp_path):
    model = _model(4, 0.2)
    state = model.heads.head_state_dict()
    assert "seq_proj.3.weight" in state and not any(k.startswith("token_proj") for k in state)
    assert infer_head_config(state, model.hidden_size, 400).drafter == "sequential"
    save_heads(model.heads, tmp_path / "heads", "tiny")
    heads = build_heads(read_head_checkpoint(str(tmp_path / "heads")), model.base_model)
    assert heads.name == "sequential" and heads.config.drafter == "sequential"
    h, paths = torch.randn(3, model.hidden_size), torch.randint(3, 400, (3, 4))
    torch.testing.assert_close(heads.teacher_forced(h, paths), model.heads.teacher_forced(h, paths))
    with pytest.raises(MedusaError, match="sequential heads have no FasterDecoding"):
        save_medusa1(model.heads, tmp_path / "m1", "tiny")
    del state["seq_proj.2.weight"]
    with pytest.raises(ValueError, match="seq_proj"):
        infer_head_config(state, model.hidden_size, 400)


def test_faster_decoding_medusa_head_follows_the_greedy_chain():
    model = _model(5, 0.2, num_heads=3)
    h = torch.randn(2, model.hidden_size)
    chain = model.heads.greedy_chain(h, model.lm_head(h).argmax(-1), 3)
    for k in range(3):
        torch.testing.assert_close(model.medusa_head[k](h), chain[k])


def test_train_heads_drafter_choices():
    assert resolve_drafter(TrainSettings(token_input=True)).drafter == "token-input"
    assert resolve_drafter(TrainSettings(drafter="token-input")).token_input
    for bad, needle in ((TrainSettings(drafter="sequential", token_input=True), "contradict"),
                        (TrainSettings(drafter="sequential", joint_lora=True), "frozen base"),
                        (TrainSettings(drafter="hydra"), "use one of")):
        with pytest.raises(MedusaError, match=needle):
            resolve_drafter(bad)


def test_replay_refuses_sequential_heads():
    from medusa.measure.replay import ranked_positions

    with pytest.raises(MedusaError, match="use drafted_replay"):
        ranked_positions(_model(0, 0.1), [([5, 6], [7, 8])], num_heads=2)


def test_calibration_scores_sequential_heads_below_the_true_path():
    from medusa.measure.calibrate import measure_head_accuracy

    model = _model(6, 0.3, num_heads=3)
    seq = [5, 17, 40, 9] + generate(
        model, make_strategy("single-head"), [5, 17, 40, 9], 20, set()
    ).tokens
    acc = measure_head_accuracy(model, [seq], [4], 3, max_rank=5)
    hidden = model.step(torch.tensor([seq]), None).hidden[0]
    hits = [0, 0, 0]
    for i in range(3, len(seq) - 4):
        for k in range(3):
            logits = model.level_logits(hidden[i], torch.tensor([seq[i + 1:i + k + 2]]))
            hits[k] += int(logits.argmax()) == seq[i + k + 2]
    assert [row[0] for row in acc.hits] == hits
