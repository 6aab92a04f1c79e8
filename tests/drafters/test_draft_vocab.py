"""The draft vocabulary (medusa/model/draft_vocab.py, MedusaHeads.set_draft_vocab): path-dependent
drafters draft from a frequent subset of tokens; decoding stays lossless and the subset survives
saving, loading and packing."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_adapter
from test_autoregressive_drafter import _model
from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import StaticEngine
from medusa.model.checkpoints import build_heads, read_head_checkpoint, save_heads
from medusa.model.draft_vocab import coverage, frequent_tokens
from medusa.model.heads import DRAFT_VOCAB, HeadConfig, MedusaHeads

VOCAB = torch.arange(3, 400, 2)  # every other token: about half the text is outside


def test_frequent_tokens_ranks_the_continuations_and_fills_up():
    rows = [{"ids": [7, 7, 5, 5, 5, 9], "prompt_len": 2}, {"ids": [1, 9, 9, 4], "prompt_len": 1}]
    # continuations: 5 5 5 9 | 9 9 4 → 5 and 9 three times each, 4 once; the prompts' 7s and 1 never
    # count
    assert frequent_tokens(rows, 2, 20).tolist() == [5, 9]
    assert frequent_tokens(rows, 3, 20).tolist() == [4, 5, 9]
    # filled with the lowest unseen ids
    assert frequent_tokens(rows, 5, 20).tolist() == [0, 1, 4, 5, 9]
    assert coverage(rows, torch.tensor([5, 9])) == pytest.approx(6 / 7)
    with pytest.raises(ValueError):
        frequent_tokens(rows, 0, 20)


def test_logits_outside_the_vocabulary_are_minus_infinity_and_top_agrees():
    model = _model(1, 0.2)
    heads = model.heads
    h, paths = torch.randn(6, model.hidden_size), torch.randint(3, 400, (6, 3))
    full = heads.level_logits(h, paths)
    heads.set_draft_vocab(VOCAB)
    masked = heads.level_logits(h, paths)
    inside = torch.zeros(400, dtype=torch.bool)
    inside[VOCAB] = True
    assert torch.isinf(masked[:, ~inside]).all()
    torch.testing.assert_close(masked[:, inside], full[:, inside])
    drafter = model.level_drafter(h)
    for depth in range(1, 4):  # level after level, as a tree asks
        top = drafter.top(paths[:, :depth], 5)
        torch.testing.assert_close(
            top, torch.topk(heads.level_logits(h, paths[:, :depth]), 5).indices
        )
        assert inside[top].all()
    assert drafter.fallbacks == 0


def test_only_path_dependent_drafters_take_one():
    base = _model(0, 0.0).base_model
    plain = MedusaHeads(HeadConfig(2, 1, 32, 400, True), base.get_output_embeddings())
    with pytest.raises(ValueError, match="sequential and autoregressive"):
        plain.set_draft_vocab(VOCAB)
    with pytest.raises(ValueError, match="ids must lie"):
        _model(0, 0.0).heads.set_draft_vocab(torch.tensor([3, 400]))


@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_decoding_with_a_vocabulary_is_still_single_head_and_drafts_inside_it(seed):
    model = _model(seed, 0.15)
    ref = {tuple(p): generate(model, make_strategy("single-head"), p, 30, {2}).tokens
           for p in ([5 + seed, 17, 40, 9], [7] * 12)}
    model.heads.set_draft_vocab(VOCAB)
    engine = StaticEngine(model, capture=False, quiet=True)
    for settings in (DecodeSettings("tree", 4), DecodeSettings("multi-head", 3, 3)):
        for prompt, tokens in ref.items():
            got = generate(model, make_strategy(settings), list(prompt), 30, {2})
            fast = engine.generate(make_strategy(settings), list(prompt), 30, {2})
            assert got.tokens == fast.tokens == tokens, settings
            assert fast.accepted_per_step == got.accepted_per_step
    strategy = make_strategy(DecodeSettings("tree", 4))
    prepared = engine._plan(strategy)
    decoder, _ = engine._decoder(strategy, prepared, 40)
    with torch.inference_mode():
        decoder.prefill([5, 17, 40, 9])
        drafted = decoder.draft()
    assert set(drafted[1:].tolist()) <= set(VOCAB.tolist())  # node 0 is the base's own argmax


def test_a_full_vocabulary_drafts_exactly_as_none():
    model = _model(2, 0.2)
    prompt = [9, 17, 40, 9]
    before = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 30, {2})
    model.heads.set_draft_vocab(torch.arange(400))
    after = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 30, {2})
    assert after.accepted_per_step == before.accepted_per_step


def test_save_and_load_keep_the_vocabulary(tmp_path):
    model = _model(2, 0.2)
    model.heads.set_draft_vocab(VOCAB)
    save_heads(model.heads, tmp_path / "heads", "tiny")
    ckpt = read_head_checkpoint(str(tmp_path / "heads"))
    assert ckpt.state[DRAFT_VOCAB].dtype == torch.long
    heads = build_heads(ckpt, model.base_model)
    assert torch.equal(heads.draft_vocab, VOCAB)
    h, paths = torch.randn(2, model.hidden_size), torch.randint(3, 400, (2, 3))
    torch.testing.assert_close(heads.level_logits(h, paths), model.heads.level_logits(h, paths))
    # heads without one load without one
    save_heads(_model(2, 0.2).heads, tmp_path / "plain", "tiny")
    assert (
        build_heads(read_head_checkpoint(str(tmp_path / "plain")), model.base_model).draft_vocab
        is None
    )


def test_train_heads_and_the_packer_store_a_vocabulary(tiny_model_dir, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from medusa.errors import MedusaError
    from medusa.training.train_heads import TrainSettings, train_heads

    root = Path(__file__).resolve().parents[2]
    make_tiny_adapter(tiny_model_dir, tmp_path)
    heads = tmp_path / "heads"
    settings = dict(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=6,
        prompt_style="seed",
        max_new_tokens=8,
        num_heads=2,
        epochs=1,
        device="cpu",
        adapter=str(tmp_path / "adapter"),
        drafter="autoregressive",
    )
    with pytest.raises(MedusaError, match="--draft-vocab"):
        train_heads(TrainSettings(**{**settings, "drafter": "token-input"}, draft_vocab=50,
                                  output_dir=str(tmp_path / "no")))
    train_heads(TrainSettings(**settings, draft_vocab=50, output_dir=str(heads)))
    meta = json.loads((heads / "medusa_heads.json").read_text())["training"]
    assert meta["draft_vocab"] == 50 and 0 <= meta["draft_vocab_heldout_coverage"] <= 1
    saved = load_file(str(heads / "medusa_heads.safetensors"))[DRAFT_VOCAB]
    assert saved.dtype == torch.long and len(saved.unique()) == 50
    tree = tmp_path / "tree.json"
    tree.write_text(json.dumps({"paths": [[0], [1], [0, 0]]}))
    target = tmp_path / "default"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "tools" / "pack_embedded_default.py"),
            str(heads),
            str(tree),
            "--command",
            "a test",
            "--target",
            str(target),
            "--draft-vocab",
            "30",
            "--vocab-text",
            str(heads / "sequences.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    packed = load_file(str(target / "medusa_heads.safetensors"))
    assert packed[DRAFT_VOCAB].dtype == torch.long and len(packed[DRAFT_VOCAB]) == 30
    assert {t.dtype for t in packed.values() if t.is_floating_point()} == {torch.float16}
    assert packed["drafter.depth"].dtype == torch.long  # integers stay integers
    assert json.loads((target / "medusa_heads.json").read_text())["training"]["draft_vocab"] == 30


def test_a_narrow_vocabulary_changes_what_is_accepted_and_small_ones_still_draft():
    model = _model(3, 0.15)
    prompt = [9, 17, 40, 9]
    full = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 30, {2})
    # ten tokens, fewer than some tree levels' ranks
    model.heads.set_draft_vocab(torch.arange(3, 13))
    narrow = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 30, {2})
    assert narrow.tokens == full.tokens and narrow.accepted_per_step != full.accepted_per_step
    h = torch.randn(2, model.hidden_size)
    # k above the vocabulary's 10
    top = model.level_drafter(h).top(torch.randint(3, 400, (2, 1)), 12)
    assert top.shape == (2, 12) and set(top[:, :10].flatten().tolist()) <= set(range(3, 13))


def test_the_measured_logits_are_the_drafted_ones():
    model = _model(1, 0.2)
    model.heads.set_draft_vocab(VOCAB)
    h, paths = torch.randn(3, model.hidden_size), torch.randint(3, 400, (3, 4))
    forced = model.heads.teacher_forced(h, paths)  # what calibration and measure-acceptance rank
    for d in range(4):
        torch.testing.assert_close(forced[d], model.heads.level_logits(h, paths[:, : d + 1]))


def test_heads_that_cannot_take_their_vocabulary_are_one_line_errors(tmp_path):
    from medusa.errors import MedusaError

    model = _model(2, 0.2)
    state = dict(model.heads.head_state_dict())
    state[DRAFT_VOCAB] = torch.tensor([5, 400])  # an id past the base's vocabulary
    from safetensors.torch import save_file

    folder = tmp_path / "bad"
    save_heads(model.heads, folder, "tiny")
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(folder / "medusa_heads.safetensors")
    )
    with pytest.raises(MedusaError, match="do not fit"):
        build_heads(read_head_checkpoint(str(folder)), model.base_model)
    # saved by head_state_dict, not the module's own
    assert "draft_vocab" not in model.heads.state_dict()


def test_a_split_model_drafts_through_the_same_level_drafter():
    """A model split over devices (here: marked split on one CPU) gets a LevelDrafter too, with
    ``top``: the draft vocabulary's fast path, results on the caller's device, the same drafts as
    the unsplit model."""
    from medusa.model.level_drafter import LevelDrafter

    model = _model(2, 0.2)
    model.heads.set_draft_vocab(VOCAB)
    prompt = [9, 17, 40, 9]
    whole = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 30, {2})
    model._split = True
    drafter = model.level_drafter(torch.randn(model.hidden_size))
    assert isinstance(drafter, LevelDrafter) and drafter.out_device == torch.device("cpu")
    split = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 30, {2})
    assert split.tokens == whole.tokens and split.accepted_per_step == whole.accepted_per_step
