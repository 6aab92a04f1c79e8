"""LoRA adapters merged into the base weights at load (so decoding runs the plain model), float or
int8-stored.

``python medusa.py finetune`` (:mod:`medusa.training.finetune`) trains and saves them; the loader
merges them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medusa.errors import MedusaError
from medusa.model.int8_weights import METADATA, SCALE_SUFFIX, dequantize_tensors

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def merge_adapter(base_model, adapter: str):
    """Fold a LoRA adapter into the base weights (so decoding runs the plain model) and return the
    merged model.

    An adapter stored in int8 (``pack_embedded_default.py --int8``) is dequantised first: peft reads
    floats only.
    """
    from peft import PeftModel

    try:
        state = int8_adapter_state(adapter)
        if state is None:
            return PeftModel.from_pretrained(base_model, adapter).merge_and_unload()
        from peft import PeftConfig, get_peft_model, set_peft_model_state_dict

        config = PeftConfig.from_pretrained(adapter)
        # merged onto this base, as is
        config.base_model_name_or_path = getattr(base_model, "name_or_path", None)
        model = get_peft_model(base_model, config)
        loaded = set_peft_model_state_dict(model, state)
        missing = [k for k in loaded.missing_keys if "lora_" in k]
        if loaded.unexpected_keys or missing:
            raise ValueError(f"its weights do not fit its config ({len(missing)} missing, "
                             f"{len(loaded.unexpected_keys)} unexpected, e.g. "
                             f"{(missing + list(loaded.unexpected_keys))[0]})")
        return model.merge_and_unload()
    # RuntimeError: weights of another shape
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise MedusaError(
            f"cannot load adapter {adapter}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None


def int8_adapter_state(adapter: str) -> dict[str, torch.Tensor] | None:
    """The dequantised weights of a local int8-stored adapter; None for any other adapter (peft
    loads those)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = Path(adapter) / ADAPTER_WEIGHTS
    if not weights.is_file():
        return None
    try:
        # marked, or (a file whose metadata was lost) int8 by its names
        with safe_open(str(weights), "pt") as f:
            marked = (f.metadata() or {}).get("medusa_weights") == METADATA["medusa_weights"] or \
                any(k.endswith(SCALE_SUFFIX) for k in f.keys())
    # not a safetensors file: a one-line error rather than peft's traceback
    except Exception as exc:
        raise ValueError(
            f"{weights} is not a readable safetensors file ({type(exc).__name__})"
        ) from None
    return dequantize_tensors(load_file(str(weights))) if marked else None
