"""The context drafter: the autoregressive drafter's layer attending over the whole context through
its own cache (EAGLE's design), behind the same head interface, decoded by the eager loop."""

from __future__ import annotations

import json

import pytest
import torch

from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import StaticEngine
from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.model.checkpoints import build_heads, read_head_checkpoint, save_heads
from medusa.drafters import DRAFTERS
from medusa.drafters.context import ContextDraftLayer
from medusa.model.drafter_context import DrafterContext
from medusa.model.heads import infer_head_config


def _model(seed: int, noise: float, depth: int = 4) -> MedusaModel:
    import test_autoregressive_drafter

    return test_autoregressive_drafter._model(seed, noise, depth, context=True)


def _noisy_layer(seed: int = 0) -> ContextDraftLayer:
    torch.manual_seed(seed)
    layer = ContextDraftLayer(16, 4)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


def test_a_fresh_layer_is_the_identity_on_the_hidden_state():
    layer = ContextDraftLayer(16, 4)
    assert layer.position is None  # positions are rotary
    h, e = torch.randn(5, 16), torch.randn(5, 16)
    x = layer.inputs(h, e)
    torch.testing.assert_close(x, h)
    k, v = layer.keys_values(x[:3], torch.arange(3))
    prediction, _ = layer.step(x[3:], 3, 0, (k, v), None)
    torch.testing.assert_close(prediction, h[3:])


def test_training_rollout_equals_drafting_level_by_level():
    """Row i of depth j in the whole-sequence rollout is what a draft starting at position i
    computes at level j: context 0..i-1 from the cache, then its own path."""
    layer = _noisy_layer()
    length, depth = 7, 4
    first = torch.randn(2, length, 16)
    # depth j's extra input, mixed with the prediction below it
    later = torch.randn(depth, 2, length, 16)

    def next_input(j, predictions):
        return predictions * 0.5 + later[j]

    rolled = layer.rollout(first, next_input, depth)
    for b in range(2):
        k, v = layer.keys_values(first[b], torch.arange(length))
        for i in range(length):
            x = first[b, i:i + 1]
            prediction, path = layer.step(x, i, 0, (k[:, :i], v[:, :i]), None)
            torch.testing.assert_close(prediction, rolled[0][b, i:i + 1], atol=1e-5, rtol=1e-5)
            for j in range(1, depth):
                x = prediction * 0.5 + later[j, b, i:i + 1]  # next_input for this one row
                prediction, path = layer.step(x, i, j, (k, v), path)  # (a longer buffer: masked)
                torch.testing.assert_close(prediction, rolled[j][b, i:i + 1], atol=1e-5, rtol=1e-5)


def test_the_context_changes_the_draft_and_the_path_start_is_its_last_position():
    model = _model(1, 0.3)
    ids = [5, 17, 40, 9, 33, 8]
    hidden = model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
    context = DrafterContext.of_sequence(model.heads, hidden, ids)
    assert context.length == len(ids) - 1
    root = torch.tensor([[int(model.lm_head(hidden[-1]).argmax())]])
    logits = model.level_drafter(hidden[-1], context.view())(root)
    other = list(ids)
    # an earlier token: the base's hidden states and the drafter's context both change
    other[1] = 100
    hidden2 = model.decoder()(input_ids=torch.tensor([other])).last_hidden_state[0]
    context2 = DrafterContext.of_sequence(model.heads, hidden2, other)
    # the same start (hidden state and root) under another context drafts differently
    assert not torch.allclose(logits, model.level_drafter(hidden[-1], context2.view())(root))
    with pytest.raises(MedusaError, match="drafts below a context"):
        model.level_drafter(hidden[-1])(root)
    with pytest.raises(ValueError, match="cannot append at 3"):
        context.append(hidden[:1], ids[:1], 3)


def test_a_fresh_drafter_repeats_the_base_prediction():
    model = _model(0, 0.0)
    ids = [5, 17, 40, 9]
    hidden = model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
    context = DrafterContext.of_sequence(model.heads, hidden, ids)
    paths = torch.randint(3, 400, (3, 4))
    drafter = model.level_drafter(hidden[-1], context.view())
    for d in range(4):
        torch.testing.assert_close(
            drafter(paths[:, : d + 1]), model.lm_head(hidden[-1]).expand(3, -1)
        )


@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_decoding_equals_single_head(seed):
    model = _model(seed, 0.15)
    multi_token_steps = 0
    for settings in (DecodeSettings("tree", 4), DecodeSettings("multi-head", 3, 3),
                     DecodeSettings("tree", 3, adaptive=True)):
        for prompt in ([5 + seed, 17, 40, 9], [7] * 12, [11]):
            ref = generate(model, make_strategy("single-head"), prompt, 30, {2})
            got = generate(model, make_strategy(settings), prompt, 30, {2})
            assert got.tokens == ref.tokens, settings
            multi_token_steps += sum(a > 1 for a in got.accepted_per_step)
    assert multi_token_steps > 0


def test_the_decode_keeps_the_context_of_every_committed_position():
    """The cache the loop builds step by step equals the one built from the finished sequence at
    once."""
    model = _model(2, 0.15)
    seen = []
    original = model.level_drafter

    def spy(hidden, context=None):
        seen.append(context)
        return original(hidden, context)

    model.level_drafter = spy
    prompt = [5, 17, 40, 9]
    out = generate(model, make_strategy(DecodeSettings("tree", 4)), prompt, 20, {2})
    last = seen[-1]
    ids = prompt + out.tokens[:last.position + 1 - len(prompt)]
    hidden = model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
    whole = DrafterContext.of_sequence(model.heads, hidden, ids)
    assert whole.length == last.position
    torch.testing.assert_close(whole.view().keys, last.keys, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(whole.view().values, last.values, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 5])
def test_the_fast_loop_decodes_like_the_eager_loop(seed):
    """The fast engine's step (uncaptured here; captured on CUDA in test_cuda.py) keeps the
    drafter's context in a static buffer written in place: the same tokens and per-step counts as
    the eager loop, for every strategy, with an eager prefill and a padded one."""
    model = _model(seed, 0.15)
    engine = StaticEngine(model, capture=False, quiet=True)
    padded = StaticEngine(model, capture=True, quiet=True) if torch.cuda.is_available() else None
    multi_token_steps = 0
    for settings in (
        DecodeSettings("tree", 4),
        DecodeSettings("multi-head", 3, 3),
        DecodeSettings("tree", 3, adaptive=True),
        DecodeSettings("multi-head", 2, 3, "typical"),
    ):
        for prompt in ([5 + seed, 17, 40, 9], [7] * 12, [11]):
            got = generate(model, make_strategy(settings), prompt, 30, {2})
            fast = engine.generate(make_strategy(settings), prompt, 30, {2})
            assert fast.tokens == got.tokens, settings
            assert (fast.accepted_per_step, fast.drafted_depth_per_step) == (
                got.accepted_per_step,
                got.drafted_depth_per_step,
            )
            multi_token_steps += sum(a > 1 for a in got.accepted_per_step)
            if padded is not None:
                assert (
                    padded.generate(make_strategy(settings), prompt, 30, {2}).tokens == got.tokens
                )
    assert multi_token_steps > 0
    assert "fell_back_to_eager" not in engine.describe()


def test_the_padded_prefill_fills_the_same_context():
    """A captured prefill runs the prompt padded to its bucket: the context rows it writes for the
    prompt equal the eager prefill's (the padding's rows lie past the committed length, masked until
    overwritten)."""
    from medusa.decoding.fast_loop import FastDecoder
    from medusa.decoding.static_cache import StaticKVCache

    model = _model(1, 0.2)
    plan = make_strategy(DecodeSettings("tree", 4)).device_plan(model.device, sequential=True)
    prompt = [5, 17, 40, 9, 33, 8]
    filled = []
    for padded in (False, True):
        cache = StaticKVCache(model.config, 128, model.device, model.dtype)
        decoder = FastDecoder(model, plan, cache)
        with torch.inference_mode():
            if padded:
                decoder.prefill_padded(decoder.stage(prompt) + 10)
            else:
                decoder.prefill(prompt)
        filled.append(
            (decoder.context_keys[:, : len(prompt) - 1].clone(), decoder.last_hidden.clone())
        )
    torch.testing.assert_close(filled[0][0], filled[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(filled[0][1], filled[1][1], atol=1e-5, rtol=1e-4)


def test_save_and_load(tmp_path):
    model = _model(2, 0.2)
    state = model.heads.head_state_dict()
    assert state["drafter.depth"].tolist() == [4, 4, 1] and "drafter.position.weight" not in state
    config = infer_head_config(state, model.hidden_size, 400)
    kind = DRAFTERS[config.drafter]
    assert config.drafter == "context" and kind.needs_context and kind.path_dependent
    save_heads(model.heads, tmp_path / "heads", "tiny")
    assert json.loads((tmp_path / "heads" / "medusa_heads.json").read_text())["context"] is True
    heads = build_heads(read_head_checkpoint(str(tmp_path / "heads")), model.base_model)
    loaded = MedusaModel(model.base_model, tokenizer=None, heads=heads).eval()
    prompt = [5, 17, 40, 9]
    strategy = DecodeSettings("tree", 4)
    a = generate(model, make_strategy(strategy), prompt, 20, {2})
    b = generate(loaded, make_strategy(strategy), prompt, 20, {2})
    assert (a.tokens, a.accepted_per_step) == (b.tokens, b.accepted_per_step)


def test_the_context_grows_past_its_buffer_and_keeps_every_row():
    """Appended a few rows at a time into a small buffer (it doubles), the context equals the one
    built at once."""
    model = _model(3, 0.2)
    ids = [5, 17, 40, 9, 33, 8, 21, 7, 60, 12, 44]
    hidden = model.decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]
    grown = DrafterContext(model.heads, capacity=2)
    for start, end in ((0, 1), (1, 4), (4, 5), (5, 10)):
        grown.append(hidden[start:end], ids[start + 1:end + 1], start)
    whole = DrafterContext.of_sequence(model.heads, hidden, ids)
    assert grown.length == whole.length == len(ids) - 1
    torch.testing.assert_close(grown.view().keys, whole.view().keys)
    torch.testing.assert_close(grown.view(6).values, whole.view(6).values)
