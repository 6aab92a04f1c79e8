"""--device-map/--max-memory (medusa/model/device_map.py) on a CPU: flag checks, the device-map
summary, and the split code path of MedusaModel (outputs handed back to the first device), which
must not change a token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import make_model

from medusa.decoding import generate, make_strategy
from medusa.model.device_map import (
    check_device_map,
    check_placed,
    describe_map,
    load_kwargs,
    parse_max_memory,
)
from medusa.errors import MedusaError
from medusa.model.heads import HeadConfig, MedusaHeads
from medusa.model import MedusaModel


def settings(**kw) -> SimpleNamespace:
    return SimpleNamespace(
        **{"device_map": "auto", "max_memory": None, "device": "auto", "engine": "auto", **kw}
    )


def test_max_memory_is_read_per_gpu():
    assert parse_max_memory("0=40GiB, 1=38GB") == {0: "40GiB", 1: "38GB"}
    assert load_kwargs("auto", "0=1GiB") == {"device_map": "auto", "max_memory": {0: "1GiB"}}
    assert load_kwargs(None, None) == {} and load_kwargs("auto", None) == {"device_map": "auto"}
    for bad in ("40GiB", "gpu0=1GiB", "0=lots", "0=1GiB,,1=1GiB", "cpu=10GiB"):
        with pytest.raises(MedusaError, match="is not GPU=SIZE"):
            parse_max_memory(bad)


@pytest.mark.parametrize("kw, count, needle", [
    ({"device_map": None, "max_memory": "0=1GiB"}, 1, "add --device-map auto"),
    ({"device": "cpu"}, 1, "drop --device cpu"),
    ({}, 2, "cannot run in each of 2 processes"),
    ({"engine": "graphs"}, 1, "drop --engine"),
    ({"max_memory": "0:1GiB"}, 1, "is not GPU=SIZE"),
])
def test_flags_that_do_not_fit_are_refused_before_loading(kw, count, needle):
    with pytest.raises(MedusaError, match=needle):
        check_device_map(settings(**kw), count)


def test_device_map_without_cuda_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MedusaError, match="CUDA is not available here: drop --device-map"):
        check_device_map(settings(), 1)
    check_device_map(settings(device_map=None), 1)  # no split asked: nothing to check


def test_offloaded_weights_are_refused_and_maps_described():
    with pytest.raises(MedusaError, match="parts would go to cpu"):
        check_placed(SimpleNamespace(hf_device_map={"model.layers.0": 0, "model.layers.1": "cpu"}))
    check_placed(SimpleNamespace(hf_device_map={"model.layers.0": 0, "lm_head": 1}))
    text = describe_map(
        {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 1}
    )
    assert text == "cuda:0: 2 modules; cuda:1: 2 modules (lm_head)"


@pytest.mark.parametrize("strategy", ["single-head", "multi-head", "tree"])
def test_the_split_path_changes_no_token(strategy):
    base = make_model("llama", seed=3)
    lm = base.get_output_embeddings()
    heads = MedusaHeads(
        HeadConfig(
            3, 1, lm.weight.shape[1], lm.weight.shape[0], shared_lm_head=True, drafter="token-input"
        ),
        lm,
        base.get_input_embeddings(),
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for block in heads.heads:
            block[0].linear.weight.normal_(0, 0.05)
    whole, split = MedusaModel(base, None, heads), MedusaModel(base, None, heads)
    # the outputs take the split model's way back to the first device (a no-op move on a CPU)
    split._split = True
    assert not whole.split and split.split
    prompt = [5, 17, 33, 48, 60, 7]
    ours = [generate(m, make_strategy(strategy), prompt, 20, set()).tokens for m in (whole, split)]
    assert ours[0] == ours[1] and len(ours[0]) == 20
    logits, outputs, orig = split(torch.tensor([prompt]), medusa_forward=True, output_orig=True)
    assert logits.shape[0] == 3 and orig.shape[-1] == lm.weight.shape[0]
