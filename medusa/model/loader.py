"""Turn ``--model-name`` (+ ``--medusa-heads``) into a :class:`MedusaModel`: which format, which
base, which heads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medusa.model.checkpoints import (
    HeadCheckpoint,
    build_heads,
    read_head_checkpoint,
    read_json_object,
    read_medusa2_heads,
)
from medusa.console import say
from medusa.model.device_map import check_placed, describe_map, load_kwargs, model_devices
from medusa.model.embedded import (
    EMBEDDED_NAME,
    EMBEDDED_REPO,
    FAITHFUL_NAME,
    cache_root,
    converted_dir,
    embedded_gguf,
)
from medusa.errors import MedusaError
from medusa.model.finite import refuse_non_finite
from medusa.model.hub import fetch, is_local, looks_like_path
from medusa.drafters import HeadConfig, build_drafter
from medusa.model import MedusaModel, ModelInfo

EMBEDDED_UNTRAINED_HEADS = 5
# What ships with the embedded base: a Hindi→English LoRA, the autoregressive drafter (5 draft
# positions) trained
# on the adapted model, and the tree calibrated for it (docs/experiments/drafters.md).
EMBEDDED_DEFAULT_DIR = Path(__file__).parents[1] / "embedded_default"
# The second shipped translator: chrF 25.5 on FLORES-200 where the default's 18.7, with the drafter
# trained on its
# own text (docs/experiments/translators.md); stored in int8 to keep the package small.
SHIPPED_FOLDERS = {FAITHFUL_NAME: EMBEDDED_DEFAULT_DIR / "faithful"}
# a calibrated tree saved beside heads is used by -ds tree unless --tree is given
TREE_FILE = "tree.json"

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadSettings:
    """What to load and where; ``dtype='auto'`` means fp32 on CPU and the checkpoint's half type on
    CUDA, except that ``small_fp32`` keeps models under :data:`SMALL_MODEL_PARAMETERS` in fp32 on
    CUDA too."""

    model_name: str = EMBEDDED_NAME
    medusa_heads: str | None = None
    token: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    adapter: str | None = None  # a LoRA adapter (peft folder) merged into the base weights at load
    # embedded base: load the shipped adapter + heads + tree (False: bare base)
    embedded_extras: bool = True
    # one-sequence decoding: a small model is launch-bound on a GPU, so fp32 is free there
    small_fp32: bool = False
    # "auto": split over the visible GPUs (medusa/model/device_map.py)
    device_map: str | None = None
    max_memory: str | None = None  # per-GPU limits for device_map, e.g. "0=40GiB,1=40GiB"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedusaError(
            f"--device {name} was asked for but CUDA is not available here; use --device cpu "
            "(or install a CUDA build of torch, see the README)"
        )
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MedusaError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N")
    return torch.device(name)


# Below this, one-sequence decoding on a GPU stays in fp32, because fp32 verification gives exactly
# the single-head
# tokens and bf16 flips near-ties (about half the embedded model's outputs differ somewhere). In the
# eager
# engine fp32 is the faster too (bf16's casts cost launches); under the graphs engine bf16 is ~1.37x
# faster for the
# embedded 135M model (docs/experiments/engines.md): pass --dtype bfloat16 for speed there. A
# heuristic
# kept well below sizes where fp32 weight reads (2 bytes more per weight) dominate.
SMALL_MODEL_PARAMETERS = 500_000_000


def estimated_parameters(config: dict) -> int | None:
    """Weights of a dense decoder-only transformer from its config.json; None when unsure
    (mixture-of-experts, missing or odd fields), which keeps the half type."""
    if any(
        (config.get(k) or 0) > 1
        for k in ("num_experts", "num_local_experts", "n_routed_experts")
        if isinstance(config.get(k), int)
    ):
        return None
    try:
        h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        heads = config.get("num_attention_heads") or 1
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or h // heads
        intermediate = config.get("intermediate_size") or 4 * h
        sizes = (h, layers, vocab, heads, kv_heads, head_dim, intermediate)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
            return None
        attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim
        # unsure: count both
        embeddings = vocab * h * (1 if config.get("tie_word_embeddings") is True else 2)
        return layers * (attention + 3 * h * intermediate) + embeddings
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def resolve_dtype(
    name: str, device: torch.device, config_dtype=None, parameters: int | None = None
) -> torch.dtype:
    """``parameters`` (given only for one-sequence decoding) below :data:`SMALL_MODEL_PARAMETERS`
    keeps fp32."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    if parameters is not None and parameters < SMALL_MODEL_PARAMETERS:
        return torch.float32
    if config_dtype in (torch.float16, torch.bfloat16, "float16", "bfloat16"):
        return DTYPES[config_dtype] if isinstance(config_dtype, str) else config_dtype
    return torch.bfloat16


def _read_config(location: str, token: str | None) -> dict:
    return read_json_object(fetch(location, "config.json", token))


def _wrong_config_value(location: str, exc: Exception) -> MedusaError:
    """transformers' own field check of config.json (a string where a number belongs), said in one
    line."""
    reason = [line.strip() for line in str(exc).splitlines() if line.strip()][-1]
    return MedusaError(
        f"config.json of '{location}' holds a value of the wrong type ({reason}): restore the file "
        "from the original model"
    )


def _check_base_finite(model, label: str, location: str) -> None:
    """A base model whose weights hold NaN or inf writes garbage without a word: refuse it, tensor
    by tensor on the devices the weights were loaded to."""
    converted = Path(location).parent == cache_root()  # the cached transformers copy of a GGUF file
    advice = (
        f"the converted copy is damaged: delete {location} so that it is converted again"
        if converted
        else (
            "the checkpoint is damaged or was saved from a diverged training run: download or save"
            " it again"
        )
    )
    refuse_non_finite(model.named_parameters(), f"base model {label}", advice)


def _check_adapter_finite(adapter: str, token: str | None) -> None:
    """NaN or inf in a LoRA adapter would spread through the merged base weights: refuse the adapter
    file, naming the tensor. Layouts other than safetensors, and unreadable files, are left to
    peft's loader and its message."""
    from safetensors import safe_open

    from medusa.model.adapters import ADAPTER_WEIGHTS

    weights = fetch(adapter, ADAPTER_WEIGHTS, token, required=False)
    if weights is None:
        return
    try:
        with safe_open(str(weights), framework="pt") as f:
            refuse_non_finite(
                ((key, f.get_tensor(key)) for key in f.keys()),
                f"adapter weights {weights}",
                "the file is damaged or its training diverged: restore it, or run finetune again",
            )
    except MedusaError:
        raise
    except Exception:  # not safetensors after all: merge_adapter reports it in one line
        return


def _load_base(
    location: str,
    token: str | None,
    device: torch.device,
    dtype_name: str,
    small_fp32: bool = False,
    split: dict | None = None,
):
    """A transformers causal LM and its tokenizer, from a folder, a hub id or a GGUF file; ``split``
    holds the ``device_map``/``max_memory`` arguments of a model spread over several GPUs."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"token": token}
    config = _read_config(location, token)
    config_dtype = config.get("torch_dtype") or config.get("dtype")
    dtype = resolve_dtype(
        dtype_name, device, config_dtype, estimated_parameters(config) if small_fp32 else None
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, **kwargs, **(split or {})
        )
    except MedusaError:
        raise
    except StrictDataclassError as exc:
        raise _wrong_config_value(location, exc) from None
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise MedusaError(
            f"cannot load model '{location}': {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    if split:
        check_placed(model)
        placed = getattr(model, "hf_device_map", None)  # absent when everything went to one device
        if not placed:
            check_placed(model, model_devices(model))
        say(
            "device map: "
            + (
                describe_map(placed)
                if placed
                else f"{', '.join(model_devices(model))}: the whole model (it fits one GPU)"
            )
        )
    else:
        model.to(device)
    model.eval()
    return model, tokenizer


def _heads_from(location: str, token: str | None) -> HeadCheckpoint | None:
    ckpt = read_head_checkpoint(location, token)
    if ckpt is None:
        raise MedusaError(
            f"no Medusa heads at '{location}': expected medusa_heads.json +"
            " medusa_heads.safetensors or medusa_lm_head.pt"
        )
    return ckpt


def _beside(ckpt: HeadCheckpoint, name: str) -> Path | None:
    """A file or folder saved next to local heads (their adapter, their tree); None for hub heads.
    """
    source = Path(ckpt.source)
    folder = source if source.is_dir() else source.parent if source.is_file() else None
    return folder / name if folder is not None else None


def shipped_folder(name: str) -> str:
    """The heads folder a shipped model name stands for (``embedded:faithful``); any other name
    unchanged."""
    folder = SHIPPED_FOLDERS.get(name)
    if folder is None:
        return name
    if not (folder / "medusa_heads.json").is_file():
        raise MedusaError(
            f"{name} is not installed with this package ({folder} is missing): reinstall medusa"
        )
    return str(folder)


def check_shipped(settings: LoadSettings) -> None:
    """A shipped translator comes with its own adapter, drafter and tree: nothing may replace or
    strip them."""
    if settings.model_name not in SHIPPED_FOLDERS:
        return
    for flag, given in (("--medusa-heads", settings.medusa_heads), ("--adapter", settings.adapter),
                        ("--bare-embedded", not settings.embedded_extras)):
        if given:
            raise MedusaError(
                f"{settings.model_name} brings its own adapter, drafter and tree: drop {flag} (or"
                f" use --model-name {EMBEDDED_NAME} with it)"
            )


def training_base(model_name: str, adapter: str | None) -> tuple[str, str | None]:
    """What a training command loads for ``model_name``: a shipped translator's name stands for the
    embedded base with that translator's adapter, so the trained files record the adapter they need
    (and copy it beside them)."""
    folder = SHIPPED_FOLDERS.get(model_name)
    if folder is None:
        return model_name, adapter
    if adapter is not None:
        raise MedusaError(
            f"{model_name} is the embedded base with its own adapter: drop --adapter, or pass "
            f"--model-name {EMBEDDED_NAME} --adapter YOURS"
        )
    shipped_folder(model_name)  # installed?
    return EMBEDDED_NAME, str(folder / "adapter")


def check_names(settings: LoadSettings) -> None:
    """A missing local path is reported as one (not as an invalid hub id) before anything loads."""
    for flag, value in (
        ("--model-name", settings.model_name),
        ("--medusa-heads", settings.medusa_heads),
        ("--adapter", settings.adapter),
    ):
        if value is None or value == EMBEDDED_NAME or value in SHIPPED_FOLDERS:
            continue
        if not value.strip():
            raise MedusaError(
                f"{flag} is empty: pass a local folder or file, or a hub id like owner/name"
            )
        if not is_local(value) and looks_like_path(value):
            raise MedusaError(
                f"{flag} {value} does not exist (no such file or folder): check the path"
            )


def load_model(settings: LoadSettings) -> MedusaModel:
    """Detect the checkpoint kind and load base + heads; heads given with ``--medusa-heads`` win."""
    check_names(settings)
    check_shipped(settings)
    device = resolve_device(settings.device)
    name, token = shipped_folder(settings.model_name), settings.token
    heads_ckpt: HeadCheckpoint | None = None

    own = (
        None
        if name == EMBEDDED_NAME or name.endswith(".gguf")
        else read_head_checkpoint(name, token)
    )
    if own is not None:  # a heads-only checkpoint: the base is named inside
        heads_ckpt = own
        if not own.base_model:
            raise MedusaError(
                f"{name} holds heads but names no base model (base_model / base_model_name_or_path)"
            )
        base_name = own.base_model
    else:
        base_name = name
    if base_name == EMBEDDED_NAME:
        base_location, base_label = (
            str(converted_dir(embedded_gguf())),
            f"{EMBEDDED_REPO} (embedded GGUF Q4_1)",
        )
    elif base_name.endswith(".gguf"):
        if not Path(base_name).is_file():
            raise MedusaError(f"GGUF file {base_name} does not exist")
        base_location, base_label = str(converted_dir(Path(base_name))), base_name
    else:
        base_location = base_label = base_name
        if own is None:
            _read_config(name, token)  # fails early, with a clear message, for unknown names
            if settings.medusa_heads is None:
                heads_ckpt = read_medusa2_heads(name, token)

    # an explicit --adapter replaces the shipped one, and the shipped heads only fit the shipped
    # adapter
    shipped = (base_name == EMBEDDED_NAME and own is None and settings.medusa_heads is None
               and settings.adapter is None and settings.embedded_extras
               and (EMBEDDED_DEFAULT_DIR / "medusa_heads.json").is_file())
    if shipped:
        heads_ckpt = _heads_from(str(EMBEDDED_DEFAULT_DIR), token)
    if settings.medusa_heads is not None:
        heads_ckpt = _heads_from(settings.medusa_heads, token)
    adapter = settings.adapter
    if adapter is None and heads_ckpt is not None and heads_ckpt.declared.get("adapter"):
        # heads trained on an adapted base (train-heads --adapter / --joint-lora) only fit that base
        beside = _beside(heads_ckpt, heads_ckpt.declared["adapter"])
        if beside is None:
            raise MedusaError(
                f"heads {heads_ckpt.source} need their adapter '{heads_ckpt.declared['adapter']}': "
                "download the heads folder and pass its local path"
            )
        adapter = str(beside)

    split = load_kwargs(settings.device_map, settings.max_memory)
    say(
        f"loading base model {base_label} on"
        f" {'the visible GPUs (--device-map auto)' if split else device}"
    )
    base, tokenizer = _load_base(
        base_location, token, device, settings.dtype, settings.small_fp32, split
    )
    _check_base_finite(base, base_label, base_location)
    if adapter:
        from medusa.model.adapters import merge_adapter

        _check_adapter_finite(adapter, token)
        base = merge_adapter(base, adapter)
        base_label += f" + adapter {adapter}"
    heads = build_heads(heads_ckpt, base) if heads_ckpt is not None else None
    untrained = heads is None and base_name == EMBEDDED_NAME
    # the embedded base without its shipped heads: identity-initialised heads keep every strategy
    # runnable (τ ≈ 1)
    if untrained:
        lm_head = base.get_output_embeddings()
        config = HeadConfig(
            EMBEDDED_UNTRAINED_HEADS, 1, lm_head.weight.shape[1], lm_head.weight.shape[0], True
        )
        heads = build_drafter(config, lm_head)
        heads = heads.to(device=lm_head.weight.device, dtype=lm_head.weight.dtype)
    info = ModelInfo(
        name=settings.model_name,
        base=base_label,
        base_id=base_name,
        heads=(
            heads_ckpt.source
            if heads_ckpt
            else ("untrained (identity-initialised)" if untrained else None)
        ),
        head_format=heads_ckpt.format if heads_ckpt else ("untrained" if untrained else None),
        extra={
            "dtype": str(base.dtype).replace("torch.", ""),
            "device": (
                "+".join(sorted({str(p.device) for p in base.parameters()}))
                if split
                else str(device)
            ),
        },
    )
    if heads is not None:
        info.extra["head_config"] = heads.config.to_dict()
    tree = (
        _beside(heads_ckpt, heads_ckpt.declared.get("tree") or TREE_FILE)
        if heads_ckpt is not None
        else None
    )
    if tree is not None and tree.is_file():  # a calibrated tree saved beside the heads
        info.extra["tree"] = str(tree)
    return MedusaModel(base, tokenizer, heads, info)
