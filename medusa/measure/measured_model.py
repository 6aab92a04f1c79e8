"""The model a measurement command loads, and the prompts it builds: the settings, flags and loading
that ``measure-acceptance`` and ``calibrate-tree`` share (each adds its own data and outputs)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.evaluation.data_spec import DataSpec
from medusa.model.device_map import check_device_map
from medusa.model.loader import load_model
from medusa.model.model_spec import ModelSpec


@dataclass
class MeasuredModelSettings(ModelSpec, DataSpec):
    """The model with its heads and the rows it is measured on; each command adds its lengths
    and outputs."""


# the measuring commands' own words for shared flags
HELPS = {"split": "dataset split, for hub datasets ({default})"}


def add_model_arguments(p: argparse.ArgumentParser, d: MeasuredModelSettings) -> None:
    """The shared flags but the rows taken; the command adds its data, lengths and outputs."""
    ModelSpec.add_arguments(p, d, only=("model_name", "medusa_heads", "adapter"))
    DataSpec.add_arguments(p, d, HELPS,
                           only=("split", "src_lang", "tgt_lang", "prompt_style", "max_input_len"))
    ModelSpec.add_arguments(p, d, only=("device", "device_map", "dtype", "hf_token"))


def load_measured_model(
    s: MeasuredModelSettings, purpose: str
) -> tuple[MedusaModel, MeasuredModelSettings]:
    """The model with its heads (refused without: there is nothing to ``purpose``), and the settings
    with ``auto`` prompt style settled for its tokenizer (the seed prompt for a model without a chat
    template)."""
    from medusa.evaluation.preflight import settle_prompt_style

    check_device_map(s)
    model = load_model(s.load_settings())
    s = settle_prompt_style(s, model.tokenizer, model.info.base)
    if not model.num_heads:
        raise MedusaError(
            f"{s.model_name} has no Medusa heads to {purpose}; pass --medusa-heads PATH"
        )
    return model, s
