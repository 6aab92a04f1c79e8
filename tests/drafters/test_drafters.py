"""The drafter registry (medusa/drafters/): a kind is one class and one registration, and the
loader, the checkpoint files, the strategies and both engines take it without a change; every
built-in kind stores, recognises and reloads its own tensors, and tensors no kind stores are refused
with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_model
from medusa.decoding import DecodeSettings, generate, make_strategy
from medusa.decoding.engine import EagerEngine, StaticEngine
from medusa.drafters import (DRAFT_VOCAB, DRAFTERS, Drafter, HeadConfig, build_drafter,
                             drafter_class, drafter_names, infer_head_config, register,
                             stored_heads)
from medusa.model import MedusaModel
from medusa.model.checkpoints import build_heads, read_head_checkpoint, save_heads
from medusa.training import train_heads

BUILT_IN = ("medusa", "token-input", "sequential", "autoregressive", "context")


class OffsetDrafter(Drafter):
    """Head k drafts ``lm_head(h + b_k)``: a fixed function of the hidden state, one stored offset
    per head, projected by the shared lm_head. Everything a kind needs besides the base class is
    here."""

    name = "offset"
    key_prefixes = ("offset.",)

    @classmethod
    def check_config(cls, config: HeadConfig) -> None:
        super().check_config(config)
        if config.num_layers or not config.shared_lm_head:
            raise ValueError("offset heads project with the shared lm_head and have no blocks")

    def build(self, config: HeadConfig) -> None:
        self.offset = nn.Parameter(torch.zeros(config.num_heads, config.hidden_size))

    def own_tensors(self) -> dict[str, torch.Tensor]:
        return {"offset.weight": self.offset}

    def head_logits(self, hidden: torch.Tensor, next_tokens: torch.Tensor | None, num_heads: int
                    ) -> torch.Tensor:
        return torch.stack([self.heads[k](hidden + self.offset[k]) for k in range(num_heads)])

    @classmethod
    def infer_config(cls, state: dict[str, torch.Tensor], hidden_size: int, vocab_size: int
                     ) -> HeadConfig:
        num_heads, width = state["offset.weight"].shape
        if width != hidden_size:
            raise ValueError(f"offsets of width {width}, the base model has {hidden_size}")
        return HeadConfig(num_heads, 0, hidden_size, vocab_size, True, drafter=cls.name)


@pytest.fixture
def offset_kind():
    """The toy kind registered for one test (the registry is the package's: it is removed after)."""
    register(OffsetDrafter)
    yield OffsetDrafter
    DRAFTERS.pop(OffsetDrafter.name)


def _offset_model(seed: int, scale: float) -> MedusaModel:
    base = make_model("llama", seed=seed)
    config = HeadConfig(4, 0, base.config.hidden_size, base.config.vocab_size, True,
                        drafter="offset")
    heads = build_drafter(config, base.get_output_embeddings())
    with torch.no_grad():
        heads.offset.normal_(0, scale, generator=torch.Generator().manual_seed(seed))
    return MedusaModel(base, tokenizer=None, heads=heads).eval()


def test_the_registry_holds_the_built_in_kinds_in_order():
    assert drafter_names() == BUILT_IN
    assert train_heads.DRAFTERS == BUILT_IN  # the --drafter choices
    assert [drafter_class(name).name for name in BUILT_IN] == list(BUILT_IN)
    with pytest.raises(ValueError, match="unknown drafter 'hydra'"):
        drafter_class("hydra")


@pytest.mark.parametrize("seed,scale", [(0, 0.0), (2, 0.5)])
def test_a_registered_drafter_decodes_single_heads_tokens_in_both_engines(offset_kind, seed, scale):
    model = _offset_model(seed, scale)
    assert isinstance(model.heads, OffsetDrafter) and not model.path_dependent_heads
    eager, static = EagerEngine(model), StaticEngine(model, capture=False, quiet=True)
    multi_token_steps = 0
    for settings in (DecodeSettings("tree", 4), DecodeSettings("tree", 2),
                     DecodeSettings("multi-head", 3, 3), DecodeSettings("multi-head", 2, 4)):
        for prompt in ([5 + seed, 17, 40, 9], [7] * 12):
            ref = generate(model, make_strategy("single-head"), prompt, 30, {2})
            got = eager.generate(make_strategy(settings), prompt, 30, {2})
            fast = static.generate(make_strategy(settings), prompt, 30, {2})
            assert got.tokens == ref.tokens == fast.tokens, settings
            # identity offsets (scale 0) make beams tie exactly: which tied beam a step verifies,
            # and so how much it accepts, follows the engines' last-bit logit differences
            if scale:
                assert fast.accepted_per_step == got.accepted_per_step, settings
            multi_token_steps += sum(a > 1 for a in got.accepted_per_step)
    assert static.fell_back == []
    assert multi_token_steps > 0  # the drafts were used, not only verified away


def test_a_registered_drafter_is_saved_recognised_and_loaded(offset_kind, tmp_path):
    model = _offset_model(3, 0.5)
    state = model.heads.head_state_dict()
    assert set(state) == {"offset.weight"}  # the shared projection is never stored
    assert infer_head_config(state, model.hidden_size, 400) == model.heads.config
    save_heads(model.heads, tmp_path / "heads", "tiny")
    loaded = build_heads(read_head_checkpoint(str(tmp_path / "heads")), model.base_model)
    assert isinstance(loaded, OffsetDrafter)
    h = torch.randn(3, model.hidden_size)
    torch.testing.assert_close(loaded(h), model.heads(h))
    with pytest.raises(ValueError, match="shared lm_head"):
        build_drafter(HeadConfig(2, 1, 32, 400, True, drafter="offset"), model.lm_head)


def test_a_name_is_registered_once(offset_kind):
    clash = type("OtherOffset", (OffsetDrafter,), {})
    with pytest.raises(ValueError, match="registered already"):
        register(clash)
    register(OffsetDrafter)  # the same class again is no change
    assert list(DRAFTERS).count("offset") == 1


def _fresh(name: str, seed: int = 0) -> tuple[Drafter, nn.Module, nn.Module]:
    """A drafter of kind ``name`` on a tiny base, every tensor of its own moved off its initial
    value."""
    base = make_model("llama", seed=seed)
    lm, emb = base.get_output_embeddings(), base.get_input_embeddings()
    config = drafter_class(name).training_config(3, 1, base.config.hidden_size,
                                                 base.config.vocab_size, True, 4)
    drafter = build_drafter(config, lm, emb)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in drafter.parameters():
            if p is not lm.weight:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return drafter, lm, emb


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_kind_round_trips_its_state_dict(name):
    drafter, lm, emb = _fresh(name)
    assert drafter.name == name and type(drafter) is DRAFTERS[name]
    state = drafter.head_state_dict()
    config = infer_head_config(state, 32, 400)
    assert config == drafter.config
    again = build_drafter(config, lm, emb)
    again.load_head_state_dict(state)
    assert all(torch.equal(a, state[k]) for k, a in again.head_state_dict().items())
    h, paths = torch.randn(2, 32), torch.randint(3, 400, (2, 3))
    if drafter.needs_context:  # drafts read a context: compared on the layer's path-free pieces
        torch.testing.assert_close(again.context_entries(h, paths[:, 0], torch.arange(2)),
                                   drafter.context_entries(h, paths[:, 0], torch.arange(2)))
    else:
        torch.testing.assert_close(again.teacher_forced(h, paths), drafter.teacher_forced(h, paths))


@pytest.mark.parametrize("name,stored", [
    ("medusa", (False, False, 0, False)),
    ("token-input", (True, False, 0, False)),
    ("sequential", (False, True, 0, False)),
    ("autoregressive", (False, False, 4, False)),
    ("context", (False, False, 4, True)),
])
def test_the_stored_config_keeps_its_layout(name, stored):
    """medusa_heads.json holds the shape and one entry per kind, as it always has."""
    drafter, _, _ = _fresh(name)
    written = drafter.config.to_dict()
    assert list(written) == ["num_heads", "num_layers", "hidden_size", "vocab_size",
                             "shared_lm_head", "token_input", "sequential", "autoregressive",
                             "context"]
    assert tuple(written.values())[5:] == stored


def test_the_kind_is_read_from_the_keys():
    for name in BUILT_IN:
        drafter, _, _ = _fresh(name)
        state = drafter.head_state_dict()
        assert [cls.name for cls in DRAFTERS.values() if cls.recognises(state)] == [name]
        assert stored_heads(list(state), {"num_heads": 3}) == 3
    plain, _, _ = _fresh("medusa")
    assert stored_heads(list(plain.head_state_dict()), {}) == 3  # counted from the names
    # only the metadata can tell
    assert stored_heads(["drafter.fc.weight", "drafter.depth"], {}) is None


def test_tensors_no_kind_stores_are_refused():
    state = _fresh("medusa")[0].head_state_dict()
    with pytest.raises(ValueError, match="unexpected head weight name 'mystery.weight'"):
        infer_head_config({**state, "mystery.weight": torch.zeros(3)}, 32, 400)
    both = {**_fresh("token-input")[0].head_state_dict(),
            **_fresh("sequential")[0].head_state_dict()}
    with pytest.raises(ValueError, match="token_proj.* and seq_proj.* tensors are not one drafter"):
        infer_head_config(both, 32, 400)
    layer = _fresh("autoregressive")[0].head_state_dict()
    with pytest.raises(ValueError, match="not one drafter"):
        infer_head_config({**layer, "drafter.depth": torch.tensor([3, 4, 7])}, 32, 400)
    with pytest.raises(ValueError, match="no head weights"):
        infer_head_config({DRAFT_VOCAB: torch.arange(5)}, 32, 400)


def test_a_config_builds_only_its_own_kind():
    lm, emb = nn.Linear(32, 400, bias=False), nn.Embedding(400, 32)
    with pytest.raises(ValueError, match="a medusa head config cannot build a sequential drafter"):
        DRAFTERS["sequential"](HeadConfig(2, 1, 32, 400, True), lm, emb)
    with pytest.raises(ValueError, match="no attention layer"):
        build_drafter(HeadConfig(2, 1, 32, 400, True, attention_heads=4), lm)
    with pytest.raises(ValueError, match="input embedding"):
        build_drafter(HeadConfig(2, 1, 32, 400, True, drafter="token-input"), lm)
    with pytest.raises(ValueError, match="keep no context"):
        build_drafter(HeadConfig(2, 1, 32, 400, True), lm).new_context(8)
