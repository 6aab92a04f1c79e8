"""Row-wise int8 storage for shipped weights: half the bytes of float16, dequantised once at load.

The package ships its translators and drafters as package data, so bytes on disk (the wheel, a
clone) matter; compute does not change (the weights are dequantised to the model's dtype when they
load, and a LoRA adapter is merged into the base). Each matrix row keeps its own float32 scale (its
largest magnitude / 127), so a row of small LoRA values loses no more precision than a row of large
ones. A file is marked by its safetensors metadata, and each quantised tensor ``name`` has its
scales beside it as ``name`` + :data:`SCALE_SUFFIX`. Vectors and integer tensors (a draft
vocabulary) are stored as they are (floats in float16).
"""

from __future__ import annotations

from pathlib import Path

import torch

SCALE_SUFFIX = ".int8_row_scale"
METADATA = {"format": "pt", "medusa_weights": "int8-rowwise"}


class Int8FormatError(ValueError):
    """Codes and scales that do not fit together: a corrupt or hand-edited file."""


def quantize_rowwise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (2-D) as int8 codes and one float32 scale per row; an all-zero row gets scale 1.
    """
    w = weight.detach().float()
    if not torch.isfinite(w).all():  # a NaN or inf would garble its whole row
        raise ValueError(
            "weights with NaN or inf values cannot be stored in int8: check the training run"
        )
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scale


def quantize_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every float matrix as int8 + row scales; other floats (norm weights, vectors) in float16."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            raise ValueError(f"{name}: the tensors are quantised already")
        if t.is_floating_point() and t.dim() == 2:
            out[name], out[name + SCALE_SUFFIX] = quantize_rowwise(t)
        else:
            out[name] = t.to(torch.float16) if t.is_floating_point() else t
        out[name] = out[name].contiguous()
    return out


def is_quantized(tensors: dict[str, torch.Tensor]) -> bool:
    return any(name.endswith(SCALE_SUFFIX) for name in tensors)


def dequantize_tensors(tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
                       ) -> dict[str, torch.Tensor]:
    """The tensors as floats again (quantised ones in ``dtype``); files without int8 tensors pass
    through."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = tensors.get(name + SCALE_SUFFIX)
        if scale is None:
            out[name] = t
        elif t.dtype != torch.int8 or t.dim() != 2 or scale.shape != (t.shape[0],):
            raise Int8FormatError(
                f"{name}: int8 codes of shape {tuple(t.shape)} ({t.dtype}) do not match row scales"
                f" of shape {tuple(scale.shape)}"
            )
        else:
            out[name] = (t.float() * scale.float()[:, None]).to(dtype)
    orphans = [
        n for n in tensors if n.endswith(SCALE_SUFFIX) and n[: -len(SCALE_SUFFIX)] not in tensors
    ]
    if orphans:
        raise Int8FormatError(f"row scales without their tensor: {', '.join(orphans[:3])}")
    return out


def save_quantized(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file(quantize_tensors(tensors), str(path), metadata=METADATA)
