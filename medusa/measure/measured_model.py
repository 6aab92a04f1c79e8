"""The model a measurement command loads, and the prompts it builds: the settings, flags and loading that
``measure-acceptance`` and ``calibrate-tree`` share (each adds its own data and outputs)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from medusa.errors import MedusaError
from medusa.model import MedusaModel
from medusa.model.device_map import add_device_map_arguments, check_device_map
from medusa.model.embedded import EMBEDDED_NAME
from medusa.model.loader import LoadSettings, load_model


@dataclass
class MeasuredModelSettings:
    model_name: str = EMBEDDED_NAME
    medusa_heads: str | None = None
    adapter: str | None = None
    split: str = "test"
    src_lang: str = "hin_Deva"
    tgt_lang: str = "eng_Latn"
    prompt_style: str = "auto"  # chat where the tokenizer has a chat template, else seed
    max_input_len: int = 1000
    device: str = "auto"
    device_map: str | None = None  # --device-map auto: split over the GPUs (medusa/model/device_map.py)
    max_memory: str | None = None
    dtype: str = "auto"
    hf_token: str | None = None


def add_model_arguments(p: argparse.ArgumentParser, d: MeasuredModelSettings) -> None:
    """The shared flags; the command adds its data, lengths and outputs."""
    p.add_argument("--model-name", "-m", default=d.model_name,
                   help=f"base model with its heads: a local folder, a hub id or a .gguf file ({d.model_name})")
    p.add_argument("--medusa-heads", default=None,
                   help="heads stored on their own (folder, file or hub id), when the model has none beside it")
    p.add_argument("--adapter", default=None, help="LoRA adapter merged into the base at load")
    p.add_argument("--split", default=d.split, help=f"dataset split, for hub datasets ({d.split})")
    p.add_argument("--src-lang", default=d.src_lang, help=f"source language code ({d.src_lang})")
    p.add_argument("--tgt-lang", default=d.tgt_lang, help=f"target language code ({d.tgt_lang})")
    p.add_argument("--prompt-style", choices=["auto", "seed", "chat"], default=d.prompt_style,
                   help="auto (default): chat where the tokenizer has a chat template, else the seed prompt")
    p.add_argument("--max-input-len", "-mil", type=int, default=d.max_input_len,
                   help=f"prompt tokens kept ({d.max_input_len})")
    p.add_argument("--device", default=d.device, help=f"auto, cpu, cuda or cuda:N ({d.device})")
    add_device_map_arguments(p)
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default=d.dtype,
                   help="weights' type; auto: fp32 on a CPU, the checkpoint's half type on a GPU")
    p.add_argument("--hf-token", "-token", default=None,
                   help="Hugging Face token for gated models or data (better: the HF_TOKEN environment variable)")


def load_measured_model(s: MeasuredModelSettings, purpose: str) -> tuple[MedusaModel, MeasuredModelSettings]:
    """The model with its heads (refused without: there is nothing to ``purpose``), and the settings with ``auto``
    prompt style settled for its tokenizer (the seed prompt for a model without a chat template)."""
    from medusa.evaluation.preflight import settle_prompt_style

    check_device_map(s)
    model = load_model(LoadSettings(s.model_name, s.medusa_heads, s.hf_token, s.device, s.dtype, adapter=s.adapter,
                                    device_map=s.device_map, max_memory=s.max_memory))
    s = settle_prompt_style(s, model.tokenizer, model.info.base)
    if not model.num_heads:
        raise MedusaError(f"{s.model_name} has no Medusa heads to {purpose}; pass --medusa-heads PATH")
    return model, s
