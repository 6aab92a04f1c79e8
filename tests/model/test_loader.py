"""How the loader picks a dtype: 'auto' is fp32 on CPU, a checkpoint's half type on CUDA, and fp32
for small models when decoding one sequence on CUDA (measured faster and exact there)."""

from __future__ import annotations

import json

import pytest
import torch

from medusa.model.loader import SMALL_MODEL_PARAMETERS, estimated_parameters, resolve_dtype
from medusa.runner import load_settings
from medusa.settings import RunSettings

CUDA, CPU = torch.device("cuda"), torch.device("cpu")  # resolve_dtype only looks at the device type


def test_estimated_parameters_of_known_shapes():
    smollm2_135m = {
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "vocab_size": 49152,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "tie_word_embeddings": True,
    }
    # 134,515,008 without the norm weights
    assert 0.99 < estimated_parameters(smollm2_135m) / 134.5e6 < 1.01
    llama2_7b = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "vocab_size": 32000,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "tie_word_embeddings": False,
    }
    assert 0.99 < estimated_parameters(llama2_7b) / 6.738e9 < 1.01
    assert estimated_parameters({"hidden_size": 8}) is None and estimated_parameters({}) is None
    # unsure: count both matrices
    untied = {k: v for k, v in smollm2_135m.items() if k != "tie_word_embeddings"}
    assert estimated_parameters(untied) == estimated_parameters(smollm2_135m) + 49152 * 576


def test_estimated_parameters_gives_up_where_unsure():
    olmoe = {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "vocab_size": 50304,
        "intermediate_size": 1024,
        # 7B in all, 1B active: the dense formula says 0.6B
        "num_attention_heads": 16,
        "num_experts": 64,
    }
    assert estimated_parameters(olmoe) is None
    assert estimated_parameters({**olmoe, "num_experts": 1}) is not None
    assert estimated_parameters({"hidden_size": 576, "num_hidden_layers": 30, "vocab_size": 49152,
                                 "num_attention_heads": "9"}) is None
    assert estimated_parameters({"text_config": {"hidden_size": 576}}) is None


@pytest.mark.parametrize("name, device, config_dtype, parameters, expected", [
    ("auto", CPU, "bfloat16", None, torch.float32),
    ("auto", CPU, "bfloat16", 10**6, torch.float32),
    ("auto", CUDA, "float16", None, torch.float16),
    ("auto", CUDA, None, None, torch.bfloat16),
    ("auto", CUDA, "bfloat16", 135_000_000, torch.float32),  # small model, one-sequence decoding
    ("auto", CUDA, "bfloat16", 1_100_000_000, torch.bfloat16),
    ("auto", CUDA, "bfloat16", SMALL_MODEL_PARAMETERS, torch.bfloat16),
    ("auto", CUDA, "float16", 7 * 10**9, torch.float16),
    ("bfloat16", CUDA, None, 135_000_000, torch.bfloat16),  # an explicit --dtype always wins
    ("float16", CPU, None, None, torch.float16),
])
def test_resolve_dtype(name, device, config_dtype, parameters, expected):
    assert resolve_dtype(name, device, config_dtype, parameters) == expected


def test_decoding_asks_for_small_model_fp32_and_keeps_explicit_dtype():
    settings = load_settings(RunSettings(dtype="bfloat16"))
    assert settings.small_fp32 and settings.dtype == "bfloat16"


def test_load_base_passes_the_size_only_for_decoding(tiny_model_dir, monkeypatch):
    import medusa.model.loader as loader

    seen = []
    real = loader.resolve_dtype
    monkeypatch.setattr(loader, "resolve_dtype", lambda *a: seen.append(a[3]) or real(*a))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    loader._load_base(str(tiny_model_dir), None, CPU, "auto", small_fp32=True)
    loader._load_base(str(tiny_model_dir), None, CPU, "auto")
    assert seen == [estimated_parameters(config), None] and seen[0] < SMALL_MODEL_PARAMETERS
    # training and batched commands keep the half type
    assert loader.LoadSettings().small_fp32 is False
