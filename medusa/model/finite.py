"""Refuse weights holding NaN or inf where they are loaded.

Decoding with such weights runs without a word: non-finite heads or drafters never draft an accepted
token (τ falls to 1), and a non-finite base model writes garbage. One ``isfinite`` pass per tensor
at load is cheap next to reading the weights, so every weight file is checked (heads, drafter,
adapter) and the base model once its parameters sit on their devices.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from medusa.errors import MedusaError

# checked at once: bounds the temporary mask of a large embedding on its device
CHUNK_ELEMENTS = 1 << 24


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite; integer tensors always are, and weights not materialised
    (meta) cannot tell."""
    if not tensor.is_floating_point() or tensor.device.type == "meta":
        return True
    flat = tensor.detach().reshape(-1)  # a view of the contiguous weights: nothing is copied
    return all(bool(torch.isfinite(chunk).all()) for chunk in flat.split(CHUNK_ELEMENTS))


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding NaN or inf; None when all are finite."""
    return next((name for name, tensor in tensors if not is_finite(tensor)), None)


def refuse_non_finite(
    tensors: Iterable[tuple[str, torch.Tensor]], source: str, advice: str
) -> None:
    """One error naming ``source`` and the tensor, with ``advice`` saying what to do about it."""
    name = first_non_finite(tensors)
    if name is not None:
        raise MedusaError(f"{source}: tensor {name} holds NaN or inf values; {advice}")
