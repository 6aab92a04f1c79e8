"""Every head checkpoint layout written to disk and read back tensor-for-tensor, through the loader
too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_model
from medusa.model.checkpoints import (
    HEADS_CONFIG,
    HEADS_WEIGHTS,
    build_heads,
    read_head_checkpoint,
    read_medusa2_heads,
    save_heads,
    save_medusa1,
)
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.model.loader import LoadSettings, load_model

HIDDEN, VOCAB = 32, 400  # tiny_config's sizes


# ---------------------------------------------------------------- helpers


def trained_heads(base, num_heads=3, num_layers=1, shared=False, seed=7) -> MedusaHeads:
    """Heads on ``base`` with random values in every tensor they own (the shared projection is left
    alone)."""
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(
            num_heads, num_layers, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=shared
        ),
        lm,
    )
    gen = torch.Generator().manual_seed(seed)
    params = dict(heads.heads.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name in heads.head_state_dict():
            params[name].copy_(torch.randn(params[name].shape, generator=gen) * 0.2)
    return heads


def assert_same_heads(loaded: MedusaHeads, original: MedusaHeads, same_config: bool = True) -> None:
    """Equal tensors under every FasterDecoding key (projections included) and equal logits."""
    if same_config:
        assert loaded.config == original.config
        own_a, own_b = loaded.head_state_dict(), original.head_state_dict()
        assert set(own_a) == set(own_b)
    full_a, full_b = loaded.heads.state_dict(), original.heads.state_dict()
    assert set(full_a) == set(full_b)
    for key in full_b:
        assert full_a[key].dtype == full_b[key].dtype, key
        assert torch.equal(
            full_a[key], full_b[key]
        ), f"head tensor {key} differs after the round trip"
    hidden = torch.randn(
        2, 5, original.config.hidden_size, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        assert torch.equal(loaded(hidden), original(hidden))


def assert_same_base(loaded, original) -> None:
    a, b = loaded.state_dict(), original.state_dict()
    assert set(a) == set(b)
    for key in b:
        assert torch.equal(a[key], b[key]), f"base weight {key} differs"


def save_base(model, folder: Path, tokenizer) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def add_medusa2_tensors(weights_file: Path, heads: MedusaHeads) -> list[str]:
    """Rewrite a safetensors weights file with ``medusa_head.*`` tensors added (FasterDecoding's
    Medusa-2)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights_file))
    extra = {
        f"medusa_head.{k}": v.clone().contiguous() for k, v in heads.heads.state_dict().items()
    }
    state.update(extra)
    save_file(state, str(weights_file), metadata={"format": "pt"})
    return sorted(extra)


def declare_medusa(folder: Path, heads: MedusaHeads, num_heads: int | None = None) -> None:
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["medusa_num_heads"] = heads.config.num_heads if num_heads is None else num_heads
    cfg["medusa_num_layers"] = heads.config.num_layers
    cfg_path.write_text(json.dumps(cfg, indent=2))


def load(model_name, medusa_heads=None):
    return load_model(
        LoadSettings(
            model_name=str(model_name),
            medusa_heads=medusa_heads and str(medusa_heads),
            device="cpu",
        )
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    """The tiny Llama exactly as saved in tiny_model_dir (GQA, untied)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tied_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama-tied")
    return save_base(make_model(seed=5, tie_word_embeddings=True), folder, tiny_tokenizer)


@pytest.fixture(scope="module")
def tied_base(tied_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tied_dir, dtype=torch.float32).eval()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return model


@pytest.fixture
def project_dir(tmp_path, base, tiny_model_dir):
    heads = trained_heads(base, num_heads=3, num_layers=1, shared=True)
    return save_heads(heads, tmp_path / "heads", base_model=str(tiny_model_dir)), heads


# ---------------------------------------------------------------- project format


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("shared", [True, False])
def test_project_format_round_trip_via_read_and_build(
    tmp_path, base, tiny_model_dir, shared, num_layers
):
    heads = trained_heads(base, num_heads=3, num_layers=num_layers, shared=shared)
    folder = save_heads(
        heads, tmp_path / "heads", base_model=str(tiny_model_dir), extra={"note": "x"}
    )
    assert sorted(p.name for p in folder.iterdir()) == sorted([HEADS_CONFIG, HEADS_WEIGHTS])

    meta = json.loads((folder / HEADS_CONFIG).read_text())
    assert meta["format"] == "medusa-heads" and meta["base_model"] == str(tiny_model_dir)
    assert (
        meta["num_heads"] == 3
        and meta["num_layers"] == num_layers
        and meta["shared_lm_head"] is shared
    )
    assert meta["note"] == "x"

    ckpt = read_head_checkpoint(str(folder))
    assert ckpt is not None and ckpt.format == "project"
    assert ckpt.base_model == str(tiny_model_dir)
    assert set(ckpt.state) == set(heads.head_state_dict())
    if shared:  # the shared projection is not written: the file holds only the residual blocks
        assert not any(k.endswith(f".{num_layers}.weight") for k in ckpt.state)

    loaded = build_heads(ckpt, base)
    assert_same_heads(loaded, heads)
    if shared:
        assert loaded.heads[0][num_layers] is base.get_output_embeddings()

    # a bare weights file path works too, picking up the config next to it
    ckpt_file = read_head_checkpoint(str(folder / HEADS_WEIGHTS))
    assert ckpt_file.format == "project" and ckpt_file.base_model == str(tiny_model_dir)
    assert_same_heads(build_heads(ckpt_file, base), heads)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("shared", [True, False])
def test_project_format_round_trip_via_load_model(
    tmp_path, base, tiny_model_dir, shared, num_layers
):
    heads = trained_heads(base, num_heads=3, num_layers=num_layers, shared=shared)
    folder = save_heads(heads, tmp_path / "heads", base_model=str(tiny_model_dir))
    model = load(folder)
    assert model.info.head_format == "project"
    assert model.info.base == str(tiny_model_dir)
    assert model.num_heads == 3
    assert_same_heads(model.heads, heads)
    assert_same_base(model.base_model, base)


def test_project_format_on_tied_base_shares_the_embedding(tmp_path, tied_base, tied_dir):
    heads = trained_heads(tied_base, num_heads=2, num_layers=1, shared=True)
    folder = save_heads(heads, tmp_path / "heads", base_model=str(tied_dir))
    model = load(tied_dir, medusa_heads=folder)  # plain base + --medusa-heads
    assert model.info.head_format == "project"
    assert_same_heads(model.heads, heads)
    emb = model.base_model.get_input_embeddings().weight
    # tied: head projection is the very embedding matrix
    assert model.heads.heads[0][1].weight is emb


def test_project_config_with_wrong_format_is_refused(tmp_path, base, tiny_model_dir):
    folder = save_heads(trained_heads(base), tmp_path / "heads", base_model=str(tiny_model_dir))
    meta = json.loads((folder / HEADS_CONFIG).read_text())
    meta["format"] = "something-else"
    (folder / HEADS_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(MedusaError, match="not a medusa heads config"):
        read_head_checkpoint(str(folder))


# ---------------------------------------------------------------- Medusa-1


@pytest.mark.parametrize("shared", [True, False])
def test_medusa1_round_trip_via_load_model(tmp_path, base, tiny_model_dir, shared):
    heads = trained_heads(base, num_heads=3, num_layers=1, shared=shared)
    folder = save_medusa1(heads, tmp_path / "m1", base_model=str(tiny_model_dir))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg == {
        "medusa_num_heads": 3,
        "medusa_num_layers": 1,
        "base_model_name_or_path": str(tiny_model_dir),
    }
    # Medusa-1 always materialises the projection, so FasterDecoding's code can load it
    raw = torch.load(folder / "medusa_lm_head.pt", weights_only=True)
    assert "0.1.weight" in raw and torch.equal(raw["2.1.weight"], heads.heads[2][1].weight)

    model = load(folder)
    assert model.info.head_format == "medusa-1"
    assert model.info.base == str(tiny_model_dir)
    assert model.num_heads == 3
    assert model.heads.config.shared_lm_head is False
    assert_same_heads(model.heads, heads, same_config=not shared)
    assert_same_base(model.base_model, base)


def test_medusa1_on_tied_base(tmp_path, tied_base, tied_dir):
    heads = trained_heads(tied_base, num_heads=2, num_layers=2, shared=False)
    folder = save_medusa1(heads, tmp_path / "m1", base_model=str(tied_dir))
    model = load(folder)
    assert model.info.head_format == "medusa-1"
    assert_same_heads(model.heads, heads)
    assert_same_base(model.base_model, tied_base)


def test_medusa1_config_understating_heads_trusts_the_tensors(tmp_path, base, tiny_model_dir):
    heads = trained_heads(base, num_heads=4, num_layers=1, shared=False)
    folder = save_medusa1(heads, tmp_path / "m1", base_model=str(tiny_model_dir))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["medusa_num_heads"] = 2
    (folder / "config.json").write_text(json.dumps(cfg))
    model = load(folder)
    assert model.num_heads == 4
    assert_same_heads(model.heads, heads)
    assert model.heads(torch.zeros(1, 1, HIDDEN)).shape == (4, 1, 1, VOCAB)


def test_medusa1_safetensors_variant(tmp_path, base, tiny_model_dir):
    from safetensors.torch import save_file

    heads = trained_heads(base, num_heads=2, num_layers=1, shared=False)
    folder = save_medusa1(heads, tmp_path / "m1", base_model=str(tiny_model_dir))
    state = torch.load(folder / "medusa_lm_head.pt", weights_only=True)
    (folder / "medusa_lm_head.pt").unlink()
    save_file({k: v.clone() for k, v in state.items()}, str(folder / "medusa_lm_head.safetensors"))
    model = load(folder)
    assert model.info.head_format == "medusa-1"
    assert_same_heads(model.heads, heads)


def test_medusa1_without_base_model_name_is_an_error(tmp_path, base, tiny_model_dir):
    folder = save_medusa1(trained_heads(base), tmp_path / "m1", base_model=str(tiny_model_dir))
    (folder / "config.json").write_text(json.dumps({"medusa_num_heads": 3, "medusa_num_layers": 1}))
    with pytest.raises(MedusaError, match="base model"):
        load(folder)


# ---------------------------------------------------------------- Medusa-2


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_medusa2_single_file(tmp_path, tiny_tokenizer, kind):
    original = make_model(kind, seed=11)
    folder = save_base(original, tmp_path / "m2", tiny_tokenizer)
    heads = trained_heads(original, num_heads=3, num_layers=1, shared=False)
    add_medusa2_tensors(folder / "model.safetensors", heads)
    declare_medusa(folder, heads)

    ckpt = read_medusa2_heads(str(folder))
    assert ckpt is not None and ckpt.format == "medusa-2"
    assert ckpt.declared["medusa_num_heads"] == 3

    model = load(folder)
    assert model.info.head_format == "medusa-2"
    assert type(model.base_model).__name__.lower().startswith(kind)
    assert model.num_heads == 3
    assert_same_heads(model.heads, heads)
    assert_same_base(model.base_model, original)
    assert not any("medusa" in k for k in model.base_model.state_dict())


@pytest.mark.parametrize("split", [False, True], ids=["one-shard", "two-shards"])
def test_medusa2_sharded(tmp_path, tiny_tokenizer, split):
    original = make_model("llama", seed=12, tie_word_embeddings=True)
    folder = tmp_path / "m2s"
    original.save_pretrained(folder, max_shard_size="50KB")
    tiny_tokenizer.save_pretrained(folder)
    index_path = folder / "model.safetensors.index.json"
    assert index_path.is_file() and not (folder / "model.safetensors").exists()
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2

    heads = trained_heads(original, num_heads=2, num_layers=2, shared=False)
    from safetensors.torch import load_file, save_file

    items = {
        f"medusa_head.{k}": v.clone().contiguous() for k, v in heads.heads.state_dict().items()
    }
    keys = sorted(items)
    groups = {shards[-1]: keys} if not split else {shards[0]: keys[::2], shards[-1]: keys[1::2]}
    for shard, names in groups.items():
        state = load_file(str(folder / shard))
        state.update({n: items[n] for n in names})
        save_file(state, str(folder / shard), metadata={"format": "pt"})
        index["weight_map"].update({n: shard for n in names})
    index.setdefault("metadata", {})["total_size"] = index.get("metadata", {}).get(
        "total_size", 0
    ) + sum(v.numel() * v.element_size() for v in items.values())
    index_path.write_text(json.dumps(index, indent=2))
    declare_medusa(folder, heads)

    model = load(folder)
    assert model.info.head_format == "medusa-2"
    assert model.num_heads == 2
    assert_same_heads(model.heads, heads)
    assert_same_base(model.base_model, original)


def test_medusa2_folder_with_explicit_heads_uses_the_given_heads(
    tmp_path, tiny_tokenizer, tiny_model_dir, base
):
    original = make_model("llama", seed=0)  # same weights as tiny_model_dir
    folder = save_base(original, tmp_path / "m2", tiny_tokenizer)
    add_medusa2_tensors(folder / "model.safetensors", trained_heads(original, num_heads=4, seed=1))
    given = trained_heads(base, num_heads=2, num_layers=2, shared=True, seed=2)
    heads_folder = save_heads(given, tmp_path / "heads", base_model=str(tiny_model_dir))
    model = load(folder, medusa_heads=heads_folder)
    assert model.info.head_format == "project"
    assert model.num_heads == 2
    assert_same_heads(model.heads, given)


def test_heads_only_folder_with_explicit_heads_uses_the_given_heads(tmp_path, tiny_model_dir, base):
    m1 = trained_heads(base, num_heads=4, num_layers=1, shared=False, seed=1)
    m1_folder = save_medusa1(m1, tmp_path / "m1", base_model=str(tiny_model_dir))
    given = trained_heads(base, num_heads=2, num_layers=1, shared=True, seed=2)
    heads_folder = save_heads(given, tmp_path / "heads", base_model="elsewhere/ignored")
    model = load(m1_folder, medusa_heads=heads_folder)
    assert model.info.head_format == "project"
    assert model.info.base == str(tiny_model_dir)  # the base still comes from the model_name folder
    assert model.num_heads == 2
    assert_same_heads(model.heads, given)


def test_plain_model_has_no_medusa2_heads(tiny_model_dir):
    assert read_medusa2_heads(str(tiny_model_dir)) is None
    assert read_head_checkpoint(str(tiny_model_dir)) is None


# ---------------------------------------------------------------- plain base (+ --medusa-heads)


def test_plain_base_with_medusa_heads_folder(project_dir, tiny_model_dir, base):
    folder, heads = project_dir
    model = load(tiny_model_dir, medusa_heads=folder)
    assert model.info.head_format == "project"
    assert model.info.heads == str(folder)
    assert model.num_heads == 3
    assert_same_heads(model.heads, heads)
    assert_same_base(model.base_model, base)


def test_plain_base_with_medusa1_heads_folder(tmp_path, tiny_model_dir, base):
    heads = trained_heads(base, num_heads=2, num_layers=1, shared=False)
    # the given base wins
    folder = save_medusa1(heads, tmp_path / "m1", base_model="somewhere/else")
    model = load(tiny_model_dir, medusa_heads=folder)
    assert model.info.head_format == "medusa-1"
    assert model.info.base == str(tiny_model_dir)
    assert_same_heads(model.heads, heads)


def test_plain_base_without_heads(tiny_model_dir, base):
    model = load(tiny_model_dir)
    assert model.num_heads == 0
    assert model.heads is None and model.info.head_format is None
    assert_same_base(model.base_model, base)
    with pytest.raises(AttributeError):
        model.medusa_head
    with pytest.raises(ValueError, match="heads"):
        model(torch.tensor([[1, 5, 9]]), medusa_forward=True)


# ---------------------------------------------------------------- errors


def test_corrupt_project_weights(project_dir, tiny_model_dir):
    folder, _ = project_dir
    (folder / HEADS_WEIGHTS).write_bytes(b"\x00garbage, not a safetensors file" * 10)
    with pytest.raises(MedusaError, match="cannot read head weights"):
        read_head_checkpoint(str(folder))
    with pytest.raises(MedusaError, match="cannot read head weights"):
        load(tiny_model_dir, medusa_heads=folder)


def test_corrupt_medusa1_weights(tmp_path, base, tiny_model_dir):
    folder = save_medusa1(trained_heads(base), tmp_path / "m1", base_model=str(tiny_model_dir))
    (folder / "medusa_lm_head.pt").write_bytes(b"this is not a torch pickle \x80\x04 at all")
    with pytest.raises(MedusaError, match="cannot read head weights"):
        load(folder)


def test_corrupt_heads_config_json(project_dir, tiny_model_dir):
    folder, _ = project_dir
    (folder / HEADS_CONFIG).write_text("{ not json")
    with pytest.raises(MedusaError, match="cannot read"):
        load(tiny_model_dir, medusa_heads=folder)


def test_heads_for_another_hidden_size(tmp_path, tiny_model_dir):
    other = make_model(
        "llama", seed=3, hidden_size=48, num_attention_heads=4, num_key_value_heads=2
    )
    heads = trained_heads(other, num_heads=2, shared=False)
    folder = save_heads(heads, tmp_path / "heads", base_model=str(tiny_model_dir))
    with pytest.raises(MedusaError, match="hidden size 48"):
        load(tiny_model_dir, medusa_heads=folder)


def test_heads_for_another_vocab_size(tmp_path, tiny_model_dir):
    other = make_model("llama", seed=3, vocab_size=300)
    heads = trained_heads(other, num_heads=2, shared=False)
    folder = save_medusa1(heads, tmp_path / "m1", base_model=str(tiny_model_dir))
    with pytest.raises(MedusaError, match="300"):
        load(folder)


def test_medusa_heads_pointing_at_folder_without_heads(tmp_path, tiny_model_dir):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "README.md").write_text("no heads")
    with pytest.raises(MedusaError, match="no Medusa heads"):
        load(tiny_model_dir, medusa_heads=empty)
    # a plain model folder is not a heads folder either
    with pytest.raises(MedusaError, match="no Medusa heads"):
        load(tiny_model_dir, medusa_heads=tiny_model_dir)


def test_unknown_hub_model_offline():
    with pytest.raises(MedusaError, match="nobody/no-such-model-xyz") as info:
        load("nobody/no-such-model-xyz")
    assert "offline" in str(info.value) or "unknown model" in str(info.value)


def test_unknown_hub_heads_offline(tiny_model_dir):
    with pytest.raises(MedusaError, match="no Medusa heads"):
        load(tiny_model_dir, medusa_heads="nobody/no-such-heads-xyz")


def test_folder_without_config_json(tmp_path, tiny_model_dir):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(MedusaError, match="config.json"):
        load(folder)


# ---------------------------------------------------------------- FasterDecoding call shape


def test_fasterdecoding_forward_shape_and_values(project_dir, tiny_model_dir, tiny_tokenizer):
    folder, heads = project_dir
    model = load(folder)
    reference = make_model("llama", seed=0)  # tiny_model_dir's model, built independently
    ids = torch.tensor([tiny_tokenizer("The quick brown fox jumps.")["input_ids"]])
    seq = ids.shape[1]
    assert seq >= 3

    with torch.no_grad():
        medusa_logits, outputs, orig = model(ids, medusa_forward=True, output_orig=True)
        ref_logits = reference(ids).logits
    assert medusa_logits.shape == (3, 1, seq, VOCAB)
    assert orig.shape == (1, seq, VOCAB)
    hidden = outputs.last_hidden_state
    assert hidden.shape == (1, seq, HIDDEN)
    assert torch.allclose(orig, ref_logits, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(orig, model.base_model(ids).logits, atol=1e-5)
        for k in range(3):
            assert torch.equal(model.medusa_head[k](hidden), medusa_logits[k])
            # and the heads are the saved ones, not fresh copies of lm_head
            assert torch.allclose(medusa_logits[k], heads.heads[k](hidden), atol=1e-6)
        assert not torch.allclose(medusa_logits[0], orig)
        only_heads = model(ids, medusa_forward=True)
        assert torch.equal(only_heads, medusa_logits)
        plain = model(ids, medusa_forward=False)
        assert torch.allclose(plain.logits, ref_logits, atol=1e-5)

    assert len(model.medusa_head) == 3 and model.medusa == 3
    tok = model.get_tokenizer()
    assert tok is model.tokenizer
    assert tok("नमस्ते world")["input_ids"] == tiny_tokenizer("नमस्ते world")["input_ids"]


def test_step_matches_fasterdecoding_forward(project_dir):
    folder, _ = project_dir
    model = load(folder)
    ids = torch.tensor([[1, 17, 42, 99, 250]])
    with torch.no_grad():
        medusa_logits, _, orig = model(ids, medusa_forward=True, output_orig=True)
        out = model.step(ids, num_heads=2)
        last = model.step(ids, num_heads=3, last_only=True)
    assert torch.allclose(out.logits, orig, atol=1e-6)
    assert torch.allclose(out.head_logits, medusa_logits[:2], atol=1e-6)
    assert last.head_logits.shape == (3, 1, 1, VOCAB)
    assert torch.allclose(last.logits, orig[:, -1:], atol=1e-6)
    with pytest.raises(ValueError, match="asked for 4 heads"):
        model.step(ids, num_heads=4)


def test_a_tree_saved_beside_the_heads_is_found_from_the_folder_or_the_weights_file(
    project_dir, tiny_model_dir
):
    from medusa.decoding.trees import save_tree

    folder, _ = project_dir
    assert "tree" not in load(folder).info.extra
    save_tree([(0,), (0, 0), (1,)], str(folder / "tree.json"))
    assert load(folder).info.extra["tree"] == str(folder / "tree.json")
    by_file = load(tiny_model_dir, medusa_heads=folder / "medusa_heads.safetensors")
    assert by_file.info.extra["tree"] == str(folder / "tree.json")
