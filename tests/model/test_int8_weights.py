"""medusa/model/int8_weights.py: row-wise int8 storage of shipped heads and adapters, dequantised at
load."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_adapter
from test_autoregressive_drafter import _model
from medusa.errors import MedusaError
from medusa.model.checkpoints import build_heads, read_head_checkpoint, save_heads
from medusa.model.heads import DRAFT_VOCAB
from medusa.model.int8_weights import (
    METADATA,
    SCALE_SUFFIX,
    Int8FormatError,
    dequantize_tensors,
    is_quantized,
    quantize_rowwise,
    quantize_tensors,
    save_quantized,
)

def test_each_row_is_within_half_a_step_of_its_own_scale():
    # rows five orders of magnitude apart
    w = torch.randn(6, 50) * torch.logspace(-4, 1, 6)[:, None]
    w[2] = 0.0
    codes, scale = quantize_rowwise(w)
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32 and scale[2] == 1.0
    back = dequantize_tensors({"w": codes, "w" + SCALE_SUFFIX: scale})["w"]
    err = (back - w).abs().amax(dim=1)
    assert torch.all(err <= scale / 2 + 1e-12)
    assert torch.all(
        err[w.abs().amax(dim=1) > 0] <= w.abs().amax(dim=1)[w.abs().amax(dim=1) > 0] / 254 + 1e-12
    )
    assert torch.equal(back[2], torch.zeros(50))
    # each row uses its full range
    assert codes.abs().amax(dim=1)[w.abs().amax(dim=1) > 0].eq(127).all()


def test_only_matrices_are_quantised_and_integers_stay():
    tensors = {"m": torch.randn(8, 4), "norm": torch.randn(8), "vocab": torch.arange(10)}
    q = quantize_tensors(tensors)
    assert (
        q["m"].dtype == torch.int8
        and q["norm"].dtype == torch.float16
        and torch.equal(q["vocab"], tensors["vocab"])
    )
    assert (
        set(q) == {"m", "m" + SCALE_SUFFIX, "norm", "vocab"}
        and is_quantized(q)
        and not is_quantized(tensors)
    )
    back = dequantize_tensors(q, torch.float16)
    assert back["m"].dtype == torch.float16 and set(back) == set(tensors)
    with pytest.raises(ValueError, match="already"):
        quantize_tensors(q)


def test_weights_that_are_not_finite_are_refused():
    w = torch.randn(3, 8)
    w[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_rowwise(w)


@pytest.mark.parametrize("damage", ["shape", "orphan", "dtype"])
def test_codes_and_scales_that_do_not_fit_are_refused(damage):
    q = quantize_tensors({"m": torch.randn(8, 4)})
    if damage == "shape":
        q["m" + SCALE_SUFFIX] = q["m" + SCALE_SUFFIX][:5]
    elif damage == "orphan":
        q["gone" + SCALE_SUFFIX] = torch.ones(3)
    else:
        q["m"] = q["m"].float()
    with pytest.raises(Int8FormatError):
        dequantize_tensors(q)


def _tiny_heads(tiny_model_dir=None):
    """An autoregressive drafter (moved off its identity start) with a draft vocabulary, on the tiny
    base that ``tiny_model_dir`` holds too (make_model seed 0)."""
    model = _model(0, 0.1)
    model.heads.set_draft_vocab(torch.arange(3, 203))
    return model, model.heads


def test_int8_heads_load_like_their_floats(tiny_model_dir, tmp_path):
    model, heads = _tiny_heads(tiny_model_dir)
    folder = save_heads(heads, tmp_path / "heads", str(tiny_model_dir))
    weights = folder / "medusa_heads.safetensors"
    save_quantized(load_file(str(weights)), weights)
    ckpt = read_head_checkpoint(str(folder))
    assert not is_quantized(ckpt.state) and ckpt.state[DRAFT_VOCAB].dtype == torch.long
    loaded = build_heads(ckpt, model.base_model)
    assert torch.equal(loaded.draft_vocab, heads.draft_vocab)
    h, paths = torch.randn(4, model.hidden_size), torch.randint(3, 400, (4, 3))
    want, got = heads.level_logits(h, paths), loaded.level_logits(h, paths)
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    scale = want[finite].abs().max()
    diff = (got[finite] - want[finite]).abs()
    # a toy layer of 32 units: 1 % on average
    assert diff.max() <= 0.05 * scale and diff.mean() <= 0.01 * scale
    assert not torch.equal(got[finite], want[finite])  # it really was stored in int8


def test_a_damaged_int8_heads_file_is_a_one_line_error(tiny_model_dir, tmp_path):
    _, heads = _tiny_heads(tiny_model_dir)
    folder = save_heads(heads, tmp_path / "heads", str(tiny_model_dir))
    weights = folder / "medusa_heads.safetensors"
    q = quantize_tensors(load_file(str(weights)))
    name = next(k for k in q if k.endswith(SCALE_SUFFIX))
    q[name] = q[name][:-1]
    save_file(q, str(weights), metadata=METADATA)
    with pytest.raises(MedusaError, match="corrupt"):
        read_head_checkpoint(str(folder))


def test_an_int8_adapter_merges_like_its_floats(tiny_model_dir, tmp_path):
    from medusa.decoding import DecodeSettings, generate, make_strategy
    from medusa.model.loader import LoadSettings, load_model
    from medusa.model.adapters import merge_adapter

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    small = tmp_path / "adapter-int8"
    small.mkdir()
    (small / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    floats = load_file(str(adapter / "adapter_model.safetensors"))
    save_quantized(floats, small / "adapter_model.safetensors")
    assert {t.dtype for t in load_file(str(small / "adapter_model.safetensors")).values()} >= {
        torch.int8
    }
    plain = load_model(LoadSettings(str(tiny_model_dir), device="cpu")).base_model
    full = merge_adapter(
        load_model(LoadSettings(str(tiny_model_dir), device="cpu")).base_model, str(adapter)
    )
    int8 = merge_adapter(
        load_model(LoadSettings(str(tiny_model_dir), device="cpu")).base_model, str(small)
    )
    name = "model.layers.0.self_attn.q_proj.weight"
    w0, wf, wq = (dict(m.named_parameters())[name] for m in (plain, full, int8))
    delta_f, delta_q = wf - w0, wq - w0
    assert delta_f.abs().max() > 0 and not torch.equal(delta_f, delta_q)
    torch.testing.assert_close(delta_q, delta_f, atol=delta_f.abs().max().item() * 0.03, rtol=0)
    model = load_model(LoadSettings(str(tiny_model_dir), device="cpu", adapter=str(small)))
    assert (
        len(
            generate(model, make_strategy(DecodeSettings("single-head")), [5, 9, 13], 6, {2}).tokens
        )
        > 0
    )


def test_a_damaged_int8_adapter_is_a_one_line_error(tiny_model_dir, tmp_path):
    from medusa.model.loader import LoadSettings, load_model

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    floats = load_file(str(adapter / "adapter_model.safetensors"))
    q = quantize_tensors(floats)
    gone = next(k for k in floats if "lora_A" in k)
    # a LoRA tensor missing with its scales: peft would leave it at zero
    q.pop(gone), q.pop(gone + SCALE_SUFFIX)
    save_file(q, str(adapter / "adapter_model.safetensors"), metadata=METADATA)
    with pytest.raises(MedusaError, match="cannot load adapter .*missing"):
        load_model(LoadSettings(str(tiny_model_dir), device="cpu", adapter=str(adapter)))
    q = quantize_tensors(floats)
    q.pop(gone)  # scales without their codes
    save_file(q, str(adapter / "adapter_model.safetensors"), metadata=METADATA)
    with pytest.raises(MedusaError, match="cannot load adapter"):
        load_model(LoadSettings(str(tiny_model_dir), device="cpu", adapter=str(adapter)))
    (adapter / "adapter_model.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(MedusaError, match="cannot load adapter"):
        load_model(LoadSettings(str(tiny_model_dir), device="cpu", adapter=str(adapter)))


def test_an_int8_adapter_that_lost_its_metadata_is_still_read_as_int8(tiny_model_dir, tmp_path):
    from medusa.model.adapters import int8_adapter_state

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path)
    floats = load_file(str(adapter / "adapter_model.safetensors"))
    assert int8_adapter_state(str(adapter)) is None  # floats: peft reads them itself
    # no medusa metadata
    save_file(quantize_tensors(floats), str(adapter / "adapter_model.safetensors"))
    state = int8_adapter_state(str(adapter))
    assert state.keys() == floats.keys()
    for k in floats:
        torch.testing.assert_close(
            state[k], floats[k].float(), atol=floats[k].float().abs().max().item() / 200, rtol=0
        )
