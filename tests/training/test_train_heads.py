"""Head training on a tiny model: the loss falls, held-out accuracy rises, checkpoints resume, both
formats reload."""

from __future__ import annotations

import json

import pytest
import torch

from medusa.model.checkpoints import build_heads, read_head_checkpoint
from medusa.cli import main
from conftest import make_model
from medusa.model import MedusaModel
from medusa.training.train_heads import (
    TrainSettings,
    evaluate_heads,
    hidden_and_targets,
    train_heads,
)

def test_targets_are_k_plus_two_positions_ahead():
    model = MedusaModel(make_model(), tokenizer=None)
    # prompt of 3 tokens, generated 10..15; positions from prompt_len - 1 = 2 up to len - 3
    rows = [{"prompt_len": 3, "ids": [1, 2, 3, 10, 11, 12, 13, 14, 15]}]
    hidden, paths, targets = hidden_and_targets(model, rows, num_heads=2)
    assert hidden.shape[0] == 5  # positions 2..6
    # t_0 (next token), t_1
    assert paths.tolist() == [[10, 11], [11, 12], [12, 13], [13, 14], [14, 15]]
    # position 2 (token 3) is followed by 10 (base), 11 (head 1), 12 (head 2)
    assert targets.tolist() == [[11, 12], [12, 13], [13, 14], [14, 15], [15, -100]]


def test_batched_hidden_states_equal_one_sequence_at_a_time():
    model = MedusaModel(make_model(), tokenizer=None)
    rows = [{"prompt_len": 4, "ids": list(range(5, 5 + n))} for n in (9, 14, 7, 12)]
    hidden, next_ids, targets = hidden_and_targets(model, rows, num_heads=3, batch_size=3)
    expect_h, expect_t = [], []
    for row in rows:
        h, _, t = hidden_and_targets(model, [row], num_heads=3, batch_size=1)
        full = model.step(torch.tensor([row["ids"]]), None).hidden[0]
        torch.testing.assert_close(
            h, full[row["prompt_len"] - 1 : len(row["ids"]) - 2], rtol=1e-5, atol=1e-5
        )
        expect_h.append(h)
        expect_t.append(t)
    torch.testing.assert_close(hidden, torch.cat(expect_h), rtol=1e-5, atol=1e-5)
    assert torch.equal(targets, torch.cat(expect_t))


def test_training_lowers_loss_and_raises_heldout_accuracy(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "heads"
    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=24,
        prompt_style="seed",
        max_new_tokens=24,
        num_heads=3,
        epochs=30,
        batch_size=64,
        lr=3e-2,
        eval_every=10,
        heldout_fraction=0.25,
        output_dir=str(out),
        device="cpu",
    )
    result = train_heads(s)
    history = result["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    first, last = history[0]["top1"], result["heldout"]["top1"]
    assert sum(last) > sum(first)
    # both saved formats load back to the same logits
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    project = build_heads(read_head_checkpoint(str(out)), base)
    medusa1 = build_heads(read_head_checkpoint(str(out / "medusa1")), base)
    h = torch.randn(4, base.config.hidden_size)
    torch.testing.assert_close(project(h), medusa1(h))
    meta = json.loads((out / "medusa_heads.json").read_text())
    assert meta["num_heads"] == 3 and meta["training"]["trained_on"] == ["flores200-sample"]
    assert "held-out top-1:" in capsys.readouterr().out


def test_resume_continues_from_the_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "heads"
    common = dict(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=6,
        prompt_style="seed",
        max_new_tokens=10,
        num_heads=2,
        batch_size=16,
        eval_every=1,
        output_dir=str(out),
        device="cpu",
    )
    train_heads(TrainSettings(epochs=1, **common))
    steps_one = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert (out / "sequences.jsonl").read_text().count("\n") == 6
    # no --resume
    assert main(["train-heads", "--model-name", str(tiny_model_dir), "--output-dir", str(out)]) == 2
    import pytest

    from medusa.errors import MedusaError

    with pytest.raises(MedusaError, match="num_layers 1 → 2"):
        train_heads(TrainSettings(epochs=2, resume=True, **{**common, "num_layers": 2}))
    # the cached continuations were 10 tokens long
    with pytest.raises(MedusaError, match="other settings"):
        train_heads(TrainSettings(epochs=2, resume=True, **{**common, "max_new_tokens": 12}))
    result = train_heads(TrainSettings(epochs=2, resume=True, **common))
    assert result["history"][-1]["step"] == 2 * steps_one
    assert result["history"][0]["step"] == 1  # the history before the interruption is kept


def test_evaluate_heads_counts_top1_and_top5():
    from medusa.model.heads import HeadConfig, MedusaHeads

    lm = torch.nn.Linear(4, 10, bias=False)
    with torch.no_grad():
        lm.weight.copy_(torch.eye(10, 4) * 10)
        lm.weight[5, 1] = 5.0  # for hidden e1, token 5 ranks second
    heads = MedusaHeads(HeadConfig(1, 0, 4, 10, True), lm)
    hidden = torch.eye(4)  # position j scores token j highest
    targets = torch.tensor([[0], [5], [2], [-100]])
    acc = evaluate_heads(heads, hidden, torch.zeros(hidden.shape[0], dtype=torch.long), targets)
    assert acc["positions"] == 3
    assert abs(acc["top1"][0] - 2 / 3) < 1e-6  # positions 0 and 2 right, position 1 second-ranked
    assert acc["top5"] == [1.0]


def test_several_datasets_are_pooled_with_unique_keys():
    from medusa.training.train_heads import training_sources

    pooled = training_sources(
        TrainSettings(dataset=["flores200-sample", "in22-gen-sample"], num_examples=3)
    )
    assert len(pooled) == 6 and len({key for key, _ in pooled}) == 6
    assert training_sources(TrainSettings(dataset="flores200-sample", num_examples=2))[0][0] == "0"


def test_token_input_heads_train_save_and_reload(tiny_model_dir, tmp_path):
    out = tmp_path / "heads"
    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=12,
        prompt_style="seed",
        max_new_tokens=16,
        num_heads=2,
        epochs=10,
        batch_size=64,
        lr=3e-2,
        eval_every=5,
        heldout_fraction=0.25,
        output_dir=str(out),
        device="cpu",
        token_input=True,
    )
    result = train_heads(s)
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    # FasterDecoding's format has no place for the token projection
    assert not (out / "medusa1").exists()
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    heads = build_heads(read_head_checkpoint(str(out)), base)
    assert heads.config.drafter == "token-input" and heads.token_proj[0].weight.abs().sum() > 0
    h, tokens = torch.randn(3, base.config.hidden_size), torch.tensor([4, 9, 4])
    a, b = heads(h, None, tokens), heads(h, None, torch.tensor([5, 9, 4]))
    # the token matters
    assert not torch.allclose(a[:, 0], b[:, 0]) and torch.allclose(a[:, 1:], b[:, 1:])


@pytest.mark.parametrize("drafter,lr,trained", [
    ("sequential", 3e-2, lambda heads: heads.config.drafter == "sequential"
     and heads.seq_proj[1].weight.abs().sum() > 0),
    ("autoregressive", 3e-3, lambda heads: heads.config.attention_heads
     and heads.drafter.out.weight.abs().sum() > 0),
])
def test_path_dependent_drafters_train_save_and_reload(
    tiny_model_dir, tmp_path, drafter, lr, trained
):
    """Trained teacher-forced, saved in the project format only, and reloaded reading the draft
    token above."""
    out = tmp_path / drafter
    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=12,
        prompt_style="seed",
        max_new_tokens=16,
        num_heads=3,
        epochs=10,
        batch_size=64,
        lr=lr,
        eval_every=5,
        heldout_fraction=0.25,
        output_dir=str(out),
        device="cpu",
        drafter=drafter,
    )
    result = train_heads(s)
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert not (out / "medusa1").exists()
    from transformers import AutoModelForCausalLM

    from medusa.model.checkpoints import build_heads, read_head_checkpoint

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    heads = build_heads(read_head_checkpoint(str(out)), base)
    assert trained(heads)
    h = torch.randn(2, base.config.hidden_size)
    assert not torch.allclose(heads.level_logits(h, torch.tensor([[4, 9], [4, 9]])),
                              # head 1 reads its path
                              heads.level_logits(h, torch.tensor([[4, 10], [4, 10]])))


def test_sampled_self_distillation_adds_rows_and_holds_out_whole_sources(tiny_model_dir, tmp_path):
    """--samples-per-source: each source gains sampled continuations beside its greedy one; a
    held-out source is held out with all its samples, and only its greedy row is scored; a rerun
    reuses the cache; bad values refused."""
    from medusa.errors import MedusaError
    from medusa.training.train_heads import self_distilled_sequences, split_by_source
    from medusa.model.loader import LoadSettings, load_model

    out = tmp_path / "heads"
    out.mkdir()
    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=8,
        prompt_style="seed",
        max_new_tokens=8,
        samples_per_source=2,
        sample_temperature=1.0,
        heldout_fraction=0.25,
        device="cpu",
    )
    model = load_model(LoadSettings(s.model_name, None, None, "cpu", "auto", embedded_extras=False))
    rows = self_distilled_sequences(model, s, out / "sequences.jsonl")
    assert len(rows) == 24 and [r["index"] for r in rows[:3]] == ["0", "0~1", "0~2"]
    assert all(r["source"] == rows[3 * (i // 3)]["index"] for i, r in enumerate(rows))
    assert all(
        r["ids"][: r["prompt_len"]] == rows[3 * (i // 3)]["ids"][: r["prompt_len"]]
        for i, r in enumerate(rows)
    )
    # samples leave the greedy path
    assert any(r["ids"] != rows[3 * (i // 3)]["ids"] for i, r in enumerate(rows))
    train, held = split_by_source(rows, s)
    assert len(held) == 2 and all("~" not in r["index"] for r in held)
    assert not {r["index"] for r in held} & {r["source"] for r in train} and len(train) == 18
    # from the cache, the same rows
    again = self_distilled_sequences(model, s, out / "sequences.jsonl")
    assert again == rows and (out / "sequences.jsonl").read_text().count("\n") == 24
    greedy_only = split_by_source([r for r in rows if "~" not in r["index"]], s)
    assert greedy_only[1] == held  # the same sources held out as without samples
    with pytest.raises(MedusaError, match="other settings"):
        self_distilled_sequences(model, TrainSettings(**{**s.__dict__, "sample_temperature": 0.5}),
                                 out / "sequences.jsonl")
    with pytest.raises(MedusaError, match="samples-per-source"):
        train_heads(
            TrainSettings(
                **{**s.__dict__, "samples_per_source": -1, "output_dir": str(tmp_path / "x")}
            )
        )


def test_train_heads_command_trains_on_sampled_text(tiny_model_dir, tmp_path):
    out = tmp_path / "sampled"
    assert (
        main(
            [
                "train-heads",
                "--model-name",
                str(tiny_model_dir),
                "--dataset",
                "flores200-sample",
                "--num-examples",
                "6",
                "--prompt-style",
                "seed",
                "--max-new-tokens",
                "8",
                "--num-heads",
                "2",
                "--epochs",
                "1",
                "--drafter",
                "autoregressive",
                "--samples-per-source",
                "1",
                "--sample-temperature",
                "0.9",
                "--relabel-greedy",
                "--device",
                "cpu",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    meta = json.loads((out / "medusa_heads.json").read_text())["training"]
    assert meta["examples"] == 12 and meta["sources"] == 6 and meta["samples_per_source"] == 1
    assert meta["relabel_greedy"] is True
    assert meta["heldout"]["positions"] > 0


def test_future_rows_point_at_the_hidden_state_after_each_path_token():
    from medusa.training.train_heads import future_rows

    model = MedusaModel(make_model(), tokenizer=None)
    rows = [{"prompt_len": 3, "ids": [1, 2, 3, 10, 11, 12, 13, 14, 15]},  # positions 2..6
            {"prompt_len": 1, "ids": [1]},  # too short: no positions, as in hidden_and_targets
            {"prompt_len": 2, "ids": [4, 5, 20, 21, 22]}]  # positions 1..2
    hidden, paths, _ = hidden_and_targets(model, rows, num_heads=2)
    ahead = future_rows(rows, num_heads=2)
    assert ahead.tolist() == [[1, 2], [2, 3], [3, 4], [4, -1], [-1, -1], [6, -1], [-1, -1]]
    full = model.step(torch.tensor([rows[0]["ids"]]), None).hidden[0]
    # position 2's path is t_0 = 10, t_1 = 11: the hidden states after them are those at positions 3
    # and 4
    torch.testing.assert_close(hidden[ahead[0]], full[[3, 4]], rtol=1e-5, atol=1e-5)
    assert paths[0].tolist() == [10, 11] and hidden.shape[0] == ahead.shape[0]


def test_feature_loss_trains_the_drafter_toward_the_base_hidden_states(tiny_model_dir, tmp_path):
    """--feature-loss-weight: the autoregressive drafter also fits the base model's hidden states
    (EAGLE's loss), which its predictions then approach; other drafters and negative weights are
    refused."""
    from medusa.errors import MedusaError
    from medusa.training.train_heads import feature_loss, future_rows

    common = dict(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=8,
        prompt_style="seed",
        max_new_tokens=12,
        num_heads=3,
        epochs=15,
        batch_size=64,
        lr=1e-2,
        heldout_fraction=0.0,
        device="cpu",
        drafter="autoregressive",
    )
    out = tmp_path / "feat"
    train_heads(TrainSettings(**common, feature_loss_weight=1.0, output_dir=str(out)))
    plain = tmp_path / "plain"
    train_heads(TrainSettings(**common, output_dir=str(plain)))
    assert (
        json.loads((out / "medusa_heads.json").read_text())["training"]["feature_loss_weight"]
        == 1.0
    )

    from medusa.model.loader import LoadSettings, load_model

    rows = [json.loads(line) for line in (out / "sequences.jsonl").read_text().splitlines()]
    losses = {}
    for name, folder in (("feature", out), ("plain", plain)):
        model = load_model(LoadSettings(str(folder), None, None, "cpu", "auto"))
        hidden, paths, _ = hidden_and_targets(model, rows, num_heads=3)
        ahead = future_rows(rows, num_heads=3)
        with torch.inference_mode():
            _, states = model.heads.teacher_forced_states(hidden, paths)
            losses[name] = feature_loss(
                states, hidden[ahead.clamp(min=0)], ahead >= 0, torch.ones(3)
            ).item()
    assert losses["feature"] < losses["plain"]
    with pytest.raises(MedusaError, match="feature-loss-weight"):
        train_heads(TrainSettings(**{**common, "drafter": "sequential"}, feature_loss_weight=1.0,
                                  output_dir=str(tmp_path / "x")))


def test_teacher_forced_states_are_the_path_states_the_heads_project():
    from conftest import make_model as _make
    from medusa.model.heads import HeadConfig, MedusaHeads

    base = _make()
    config = HeadConfig(3, 0, base.config.hidden_size, base.config.vocab_size, True,
                        drafter="autoregressive", attention_heads=2)
    heads = MedusaHeads(config, base.get_output_embeddings(), base.get_input_embeddings())
    with torch.no_grad():
        for p in heads.drafter.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hidden = torch.randn(4, base.config.hidden_size)
    paths = torch.randint(0, base.config.vocab_size, (4, 3))
    with torch.no_grad():
        logits, states = heads.teacher_forced_states(hidden, paths)
        expected = heads._path_states(hidden, paths)
        assert states.shape == (3, 4, base.config.hidden_size) and not torch.allclose(
            states[0], states[1]
        )
        for j in range(3):
            torch.testing.assert_close(states[j], expected[j])
            torch.testing.assert_close(logits[j], base.get_output_embeddings()(states[j]))
        torch.testing.assert_close(heads.teacher_forced(hidden, paths), logits)


def test_the_feature_loss_targets_the_hidden_state_after_each_path_token(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Inside the training loop: the target of row b at depth j is the cached hidden state j + 1
    tokens after row b's position in the same sequence, and rows without one are masked out."""
    import medusa.training.train_heads as th
    from medusa.drafters import PathDrafter
    from medusa.model.loader import LoadSettings, load_model

    seen = {}
    states_of = PathDrafter.teacher_forced_states
    monkeypatch.setattr(
        PathDrafter,
        "teacher_forced_states",
        lambda self, h, p, k=None: seen.setdefault("hidden", h.detach().clone()) is None
        or states_of(self, h, p, k),
    )
    loss_of = th.feature_loss
    monkeypatch.setattr(
        th,
        "feature_loss",
        lambda s_, t, v, w: seen.setdefault("targets", (t.clone(), v.clone())) is None
        or loss_of(s_, t, v, w),
    )
    out = tmp_path / "feat"
    train_heads(
        TrainSettings(
            model_name=str(tiny_model_dir),
            dataset="flores200-sample",
            num_examples=3,
            prompt_style="seed",
            max_new_tokens=8,
            num_heads=3,
            epochs=1,
            batch_size=4096,
            heldout_fraction=0.0,
            device="cpu",
            drafter="autoregressive",
            feature_loss_weight=1.0,
            output_dir=str(out),
        )
    )
    rows = [json.loads(line) for line in (out / "sequences.jsonl").read_text().splitlines()]
    model = load_model(
        LoadSettings(str(tiny_model_dir), None, None, "cpu", "auto", embedded_extras=False)
    )
    hidden, _, _ = hidden_and_targets(model, rows, num_heads=3)
    ahead = th.future_rows(rows, num_heads=3)
    targets, valid = seen["targets"]
    assert targets.shape == (hidden.shape[0], 3, hidden.shape[1])  # one batch holds every position
    for b, h in enumerate(seen["hidden"]):
        i = int((hidden - h).abs().sum(-1).argmin())
        torch.testing.assert_close(hidden[i], h)
        for j in range(3):
            assert bool(valid[b, j]) == (ahead[i, j] >= 0)
            if ahead[i, j] >= 0:
                torch.testing.assert_close(targets[b, j], hidden[ahead[i, j]])


def test_sampling_leaves_the_heads_initialisation_alone(tiny_model_dir, tmp_path):
    """A run that samples its text and one that reuses the cached text train the same heads
    (sampling uses a forked random generator), so drafters trained side by side on one cache compare
    like for like."""
    import shutil

    from safetensors.torch import load_file

    common = dict(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=4,
        prompt_style="seed",
        max_new_tokens=8,
        num_heads=2,
        epochs=2,
        batch_size=16,
        samples_per_source=1,
        heldout_fraction=0.25,
        device="cpu",
        drafter="autoregressive",
    )
    train_heads(TrainSettings(**common, output_dir=str(tmp_path / "fresh")))
    (tmp_path / "cached").mkdir()
    for f in ("sequences.jsonl", "sequences.settings.json"):
        shutil.copy(tmp_path / "fresh" / f, tmp_path / "cached" / f)
    train_heads(TrainSettings(**common, output_dir=str(tmp_path / "cached")))
    a, b = (load_file(str(tmp_path / d / "medusa_heads.safetensors")) for d in ("fresh", "cached"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_sampled_cache_resumes_and_the_temperature_is_checked_only_for_samples(
    tiny_model_dir, tmp_path, monkeypatch
):
    from medusa.errors import MedusaError
    from medusa.model.loader import LoadSettings, load_model
    from medusa.training.train_heads import self_distilled_sequences

    s = TrainSettings(
        model_name=str(tiny_model_dir),
        dataset="flores200-sample",
        num_examples=6,
        prompt_style="seed",
        max_new_tokens=6,
        samples_per_source=2,
        sample_temperature=1.0,
        device="cpu",
    )
    model = load_model(LoadSettings(s.model_name, None, None, "cpu", "auto", embedded_extras=False))
    kwargs = []
    generate = model.base_model.generate
    monkeypatch.setattr(model.base_model, "generate", lambda **k: kwargs.append(k) or generate(**k))
    cache = tmp_path / "sequences.jsonl"
    rows = self_distilled_sequences(model, s, cache)
    sampled_calls = [k for k in kwargs if k.get("do_sample")]
    assert sampled_calls and all(
        k["top_k"] == 0
        and k["top_p"] == 1.0
        and k["num_return_sequences"] == 2
        and k["temperature"] == 1.0
        for k in sampled_calls
    )
    lines = cache.read_text().splitlines()
    # cut mid-row, as an interruption would
    cache.write_text("\n".join(lines[:13]) + "\n" + lines[13][:20])
    again = self_distilled_sequences(model, s, cache)
    assert [r["index"] for r in again] == [r["index"] for r in rows] and cache.read_text().count(
        "\n"
    ) == 18
    kept = {json.loads(line)["index"] for line in lines[:13]}
    assert len(kept) == 13 and [r for r in again if r["index"] in kept] == [
        r for r in rows if r["index"] in kept
    ]
    # a greedy-only rerun at another temperature neither refuses nor overwrites the samples'
    # temperature
    self_distilled_sequences(model, TrainSettings(**{**s.__dict__, "samples_per_source": 0,
                                                     "sample_temperature": 0.3}), cache)
    with pytest.raises(MedusaError, match="sample_temperature 1.0 → 0.3"):
        self_distilled_sequences(
            model, TrainSettings(**{**s.__dict__, "sample_temperature": 0.3}), cache
        )
    greedy_cache = tmp_path / "greedy" / "sequences.jsonl"
    greedy_cache.parent.mkdir()
    self_distilled_sequences(
        model, TrainSettings(**{**s.__dict__, "samples_per_source": 0}), greedy_cache
    )
    more = self_distilled_sequences(
        model, TrainSettings(**{**s.__dict__, "sample_temperature": 0.3}), greedy_cache
    )
    assert len(more) == 18  # samples added to a greedy-only cache at any temperature


def test_relabelled_targets_are_the_base_models_greedy_choice_after_each_path():
    """--relabel-greedy: on any text the target at depth k is the base's argmax after t_0..t_k; on
    the base's own greedy text that is the text itself."""
    from medusa.decoding import generate, make_strategy

    model = MedusaModel(make_model(), tokenizer=None)
    torch.manual_seed(0)
    # not the model's own continuation
    text = {"prompt_len": 4, "ids": torch.randint(5, 300, (14,)).tolist()}
    _, paths, plain = hidden_and_targets(model, [text], num_heads=3)
    _, paths_r, relabelled = hidden_and_targets(model, [text], num_heads=3, relabel=True)
    assert torch.equal(paths, paths_r) and not torch.equal(plain, relabelled)
    logits = model.step(torch.tensor([text["ids"]]), None).logits[0]
    start = text["prompt_len"] - 1
    for q in range(relabelled.shape[0]):
        for k in range(3):
            if plain[q, k] == -100:
                assert relabelled[q, k] == -100
            else:
                assert relabelled[q, k] == logits[start + q + k + 1].argmax()
    prompt = [7, 8, 9, 10]
    own = prompt + generate(model, make_strategy("single-head"), prompt, 10, set()).tokens
    greedy_rows = [{"prompt_len": 4, "ids": own}]
    assert torch.equal(
        hidden_and_targets(model, greedy_rows, 3)[2],
        hidden_and_targets(model, greedy_rows, 3, relabel=True)[2],
    )
