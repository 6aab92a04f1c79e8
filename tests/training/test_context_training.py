"""Training the context drafter over whole sequences: the rollout is what decoding drafts, batches
stay bounded, and ``train-heads --drafter context`` trains, saves and reloads a drafter that decodes
losslessly."""

from __future__ import annotations

import json

import pytest
import torch

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.model.drafter_context import DrafterContext
from medusa.training.context_training import ContextTrainer, sequence_batches
from medusa.training.train_heads import TrainSettings, train_heads


def _rows():
    return [{"ids": [5, 17, 40, 9, 33, 8, 21, 7, 60, 12], "prompt_len": 4},
            {"ids": [11, 3, 90, 44, 5, 6, 70], "prompt_len": 3}]


def _trainer(model, rows, relabel=False):
    trainer = ContextTrainer(
        model, rows, [], model.num_heads, 10**6, torch.ones(model.num_heads), relabel
    )
    trainer.heads = model.heads
    return trainer


def test_the_rollout_is_what_a_draft_computes_at_every_reply_position():
    import test_context_drafter

    model = test_context_drafter._model(1, 0.2, depth=3)
    rows = _rows()
    with torch.no_grad():
        logits, targets, states, features = _trainer(model, rows).rollout(rows, relabel=False)
        for j in range(3):
            expected_logits, expected_targets, expected_features = [], [], []
            for row in rows:
                ids = row["ids"]
                hidden = model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
                context = DrafterContext.of_sequence(model.heads, hidden, ids)
                for i in range(row["prompt_len"] - 1, len(ids) - j - 2):
                    drafter = model.level_drafter(hidden[i], context.view(i))
                    path = torch.tensor([ids[i + 1:i + j + 2]])
                    for d in range(j + 1):
                        out = drafter(path[:, :d + 1])
                    expected_logits.append(out[0])
                    expected_targets.append(ids[i + j + 2])
                    expected_features.append(hidden[i + j + 1])
            torch.testing.assert_close(
                logits[j], torch.stack(expected_logits), atol=1e-4, rtol=1e-4
            )
            assert targets[j].tolist() == expected_targets
            torch.testing.assert_close(features[j], torch.stack(expected_features))
            assert states[j].shape == features[j].shape


def test_relabelled_targets_are_the_base_models_argmax_after_each_path():
    import test_context_drafter

    model = test_context_drafter._model(2, 0.2, depth=3)
    rows = _rows()
    with torch.no_grad():
        _, targets, _, _ = _trainer(model, rows, relabel=True).rollout(rows, relabel=True)
        for j in range(3):
            expected = []
            for row in rows:
                ids = row["ids"]
                greedy = model.lm_head(
                    model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
                ).argmax(-1)
                expected += [
                    int(greedy[i + j + 1]) for i in range(row["prompt_len"] - 1, len(ids) - j - 2)
                ]
            assert targets[j].tolist() == expected


def test_sequence_batches_hold_about_the_asked_positions_and_cap_padding():
    rows = [{"ids": list(range(n)), "prompt_len": n - 5} for n in (10, 12, 30, 31, 32, 100)]
    batches = sequence_batches(rows, positions=10)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(
        sum(len(rows[i]["ids"]) - rows[i]["prompt_len"] for i in b[:-1]) < 10 for b in batches
    )
    capped = sequence_batches(rows, positions=1000, max_tokens=64)
    assert all(len(b) * max(len(rows[i]["ids"]) for i in b) <= 64 or len(b) == 1 for b in capped)
    assert len(capped) > 1


def test_train_heads_trains_saves_and_reloads_a_lossless_context_drafter(tiny_model_dir, tmp_path):
    out = tmp_path / "ctx"
    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=12,
        prompt_style="seed",
        max_new_tokens=16,
        num_heads=3,
        epochs=10,
        batch_size=48,
        lr=3e-3,
        eval_every=5,
        heldout_fraction=0.25,
        output_dir=str(out),
        device="cpu",
        drafter="context",
        relabel_greedy=True,
        feature_loss_weight=0.5,
    )
    result = train_heads(s)
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert len(result["heldout"]["top1"]) == 3
    meta = json.loads((out / "medusa_heads.json").read_text())
    assert meta["context"] is True and meta["training"]["drafter"] == "context"
    from medusa.model.loader import LoadSettings, load_model

    model = load_model(LoadSettings(str(out), None, None, "cpu", "auto"))
    assert model.context_drafter and model.heads.drafter.out.weight.abs().sum() > 0
    for prompt in ([5, 17, 40, 9], [7] * 9):
        ref = generate(model, make_strategy("single-head"), prompt, 20, {2})
        got = generate(model, make_strategy(DecodeSettings("tree", 3)), prompt, 20, {2})
        assert got.tokens == ref.tokens


def test_the_context_drafter_is_refused_with_joint_lora():
    from medusa.errors import MedusaError
    from medusa.training.train_heads import resolve_drafter

    with pytest.raises(MedusaError, match="frozen base"):
        resolve_drafter(TrainSettings(drafter="context", joint_lora=True))


def test_calibration_measures_each_head_below_the_true_tokens_with_the_context():
    """calibrate-tree's per-head accuracy for the context drafter: each position drafted as decoding
    would."""
    import test_context_drafter

    from medusa.measure.calibrate import measure_head_accuracy

    model = test_context_drafter._model(3, 0.2, depth=2)
    row = _rows()[0]
    ids, k = row["ids"], 2
    acc = measure_head_accuracy(model, [ids], [row["prompt_len"]], k, max_rank=400)
    with torch.no_grad():
        hidden = model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
        context = DrafterContext.of_sequence(model.heads, hidden, ids)
        ranks = torch.zeros(k, 400, dtype=torch.long)
        positions = range(row["prompt_len"] - 1, len(ids) - k - 1)
        for i in positions:
            drafter = model.level_drafter(hidden[i], context.view(i))
            for j in range(k):
                order = drafter(torch.tensor([ids[i + 1:i + j + 2]]))[0].argsort(descending=True)
                ranks[j, int((order == ids[i + j + 2]).nonzero())] += 1
    assert acc.total == len(positions)
    assert acc.hits == ranks.tolist()


def test_a_half_precision_base_trains_the_drafter_in_float32(tiny_model_dir, tmp_path):
    """Training turns the shared projection (tied to the input embedding) to float32; the base, run
    at every step, still gets embeddings in its own dtype."""
    out = tmp_path / "bf16"
    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=6,
        prompt_style="seed",
        max_new_tokens=10,
        num_heads=2,
        epochs=2,
        batch_size=32,
        lr=3e-3,
        heldout_fraction=0.2,
        output_dir=str(out),
        device="cpu",
        dtype="bfloat16",
        drafter="context",
        relabel_greedy=True,
    )
    result = train_heads(s)
    assert len(result["heldout"]["top1"]) == 2 and result["history"]


def test_init_from_warm_starts_a_context_drafter_from_a_trained_autoregressive_one(
    tiny_model_dir, tmp_path, capsys
):
    """--init-from copies the tensors of the same names and shapes (the drafter layer; not the
    learned position table the context layer does not have) and training goes on from them; a wrong
    path or heads that share nothing are one-line errors."""
    from safetensors.torch import load_file

    from medusa.errors import MedusaError

    common = dict(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=6,
        prompt_style="seed",
        max_new_tokens=10,
        num_heads=2,
        batch_size=32,
        heldout_fraction=0.2,
        device="cpu",
    )
    ar = tmp_path / "ar"
    train_heads(
        TrainSettings(**common, epochs=3, lr=3e-3, drafter="autoregressive", output_dir=str(ar))
    )
    trained = load_file(str(ar / "medusa_heads.safetensors"))
    ctx = tmp_path / "ctx"
    train_heads(TrainSettings(**common, epochs=1, lr=1e-12, drafter="context", init_from=str(ar),
                              output_dir=str(ctx)))
    assert "started from" in capsys.readouterr().err
    warm = load_file(str(ctx / "medusa_heads.safetensors"))
    for name in ("drafter.qkv.weight", "drafter.fc.weight", "drafter.down.weight"):
        # (lr ≈ 0: still the start)
        torch.testing.assert_close(warm[name], trained[name], atol=1e-6, rtol=1e-5)
    assert "drafter.position.weight" in trained and "drafter.position.weight" not in warm
    with pytest.raises(MedusaError, match="does not exist"):
        train_heads(
            TrainSettings(
                **common,
                epochs=1,
                drafter="context",
                init_from=str(tmp_path / "none"),
                output_dir=str(tmp_path / "x"),
            )
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedusaError, match="no heads there|has no"):
        train_heads(
            TrainSettings(
                **common,
                epochs=1,
                drafter="context",
                init_from=str(tmp_path / "empty"),
                output_dir=str(tmp_path / "x2"),
            )
        )
    with pytest.raises(MedusaError, match="none of its tensors fits"):
        train_heads(TrainSettings(**common, epochs=1, drafter="token-input", init_from=str(ar),
                                  output_dir=str(tmp_path / "y")))
