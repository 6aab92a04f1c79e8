"""Reading and writing Medusa head weights in the three layouts found in the wild.

- project format: ``medusa_heads.safetensors`` + ``medusa_heads.json`` (shape, base model, sharing);
- Medusa-1 (FasterDecoding "v0.1"): ``medusa_lm_head.pt`` + ``config.json`` with
``medusa_num_heads``,
  ``medusa_num_layers``, ``base_model_name_or_path``;
- Medusa-2 (FasterDecoding "v1.0"): ``medusa_head.{k}...`` tensors inside the full model's own
weight files. All use FasterDecoding's key layout (``{k}.{j}.linear.weight``, ``{k}.{L}.weight``);
the project format adds the prefixed tensors of the other drafter kinds (:mod:`medusa.drafters`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medusa.drafters import Drafter, build_drafter, drafter_prefixes, infer_head_config
from medusa.errors import MedusaError
from medusa.model.finite import refuse_non_finite
from medusa.model.hub import fetch, is_local
from medusa.model.int8_weights import Int8FormatError, dequantize_tensors, is_quantized

HEADS_CONFIG = "medusa_heads.json"
HEADS_WEIGHTS = "medusa_heads.safetensors"
MEDUSA1_WEIGHTS = ("medusa_lm_head.safetensors", "medusa_lm_head.pt")
MEDUSA2_PREFIX = "medusa_head."
FORMAT_NAME = "medusa-heads"
# files heads metadata names beside the heads (defaults)
FOLDER_FILES = {"tree": "tree.json", "adapter": "adapter"}
TEXT_FIELDS = ("base_model", "base_model_name_or_path", *FOLDER_FILES)
EXPECTED_NAMES = ("0.0.linear.weight (head 0, residual block 0), 0.1.weight (head 0's projection), "
                  "token_proj.0.weight, seq_proj.0.weight or drafter.*")
NON_FINITE_ADVICE = (
    "the file is damaged or the training that wrote it diverged: restore it, or train the heads "
    "again (with a lower --lr if the loss went to NaN)"
)


@dataclass
class HeadCheckpoint:
    """Head tensors as read from disk, before they are matched to a base model."""

    state: dict[str, torch.Tensor]
    format: str  # "project" | "medusa-1" | "medusa-2"
    source: str
    base_model: str | None = None
    declared: dict = field(default_factory=dict)


def save_heads(heads: Drafter, folder: str | Path, base_model: str, extra: dict | None = None
               ) -> Path:
    """Write the project format: small (a shared projection is not stored) and safe to load
    (safetensors)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in heads.head_state_dict().items()}
    save_file(state, str(folder / HEADS_WEIGHTS))
    meta = {
        "format": FORMAT_NAME,
        "version": 1,
        **heads.config.to_dict(),
        "base_model": base_model,
        **(extra or {}),
    }
    (folder / HEADS_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def save_medusa1(heads: Drafter, folder: str | Path, base_model: str) -> Path:
    """Write FasterDecoding's Medusa-1 layout so their tools load our heads (projection always
    materialised)."""
    if not heads.medusa1_layout:
        raise MedusaError(f"{heads.name} heads have no FasterDecoding Medusa-1 equivalent; "
                          "use the project format")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in heads.heads.state_dict().items()}
    torch.save(state, folder / MEDUSA1_WEIGHTS[1])
    cfg = {
        "medusa_num_heads": heads.config.num_heads,
        "medusa_num_layers": heads.config.num_layers,
        "base_model_name_or_path": base_model,
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
NOT_A_MODEL = (
    "pass a model folder, a hub id, a .gguf file or a heads weights file (.safetensors or .pt)"
)


def _load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """Named tensors of a heads file; int8-stored ones (medusa/model/int8_weights.py) come back as
    float32."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return _dequantized(load_file(str(path)), path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except MedusaError:
        raise
    except Exception as exc:  # corrupt or truncated file, or not weights at all
        raise MedusaError(
            f"cannot read head weights {path} ({_why_unreadable(exc)}); {NOT_A_MODEL}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MedusaError(
            f"{path} holds no named tensors, so it is not head weights; {NOT_A_MODEL}"
        )
    return state


def _dequantized(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not is_quantized(state):
        return state
    try:
        return dequantize_tensors(state)
    except Int8FormatError as exc:
        raise MedusaError(
            f"cannot read head weights {path}: {exc}; the file is corrupt: write it again"
        ) from None


def _why_unreadable(exc: Exception) -> str:
    """The reason in a few words. torch's own text for pickled objects advises loading untrusted
    code: never shown."""
    text = str(exc).strip()
    if "Unsupported global" in text:  # a real pickle that names Python classes or functions
        return (
            "it holds pickled Python objects besides tensors, which are never loaded, for safety;"
            " save the tensors alone, or as safetensors"
        )
    # unreadable for the file system's reasons (permissions, I/O): say which
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    # torch's KeyError: 101 etc. say nothing
    return "not a weights file: corrupt, cut short or another format"


def read_json_object(path: Path) -> dict:
    """A settings file's content; a list or a bare value there (a hand edit, another file saved over
    it) is said so, rather than failing later where its fields are read."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MedusaError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise MedusaError(
            f"{path} is not a JSON object of settings (it holds a {type(data).__name__}): restore"
            " the file from where the model or heads came from"
        )
    return data


def inside_folder(name: str, config: Path | str, key: str) -> str:
    """``name`` as given, once sure it stays inside the heads folder: heads metadata may only point
    at files shipped with the heads, never at a tree or adapter anywhere else on the disk."""
    normal = os.path.normpath(name)
    if os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise MedusaError(
            f"{config} names {key} '{name}', outside the heads folder: the path must lie inside the"
            f" folder; move the file there and name it relative to the folder (e.g. \"{key}\":"
            f" \"{FOLDER_FILES[key]}\")"
        )
    return name


def checked_declared(declared: dict, config: Path | str) -> dict:
    """Heads metadata whose names are text and whose files lie inside the heads folder."""
    for key in TEXT_FIELDS:
        value = declared.get(key)
        if value is not None and not isinstance(value, str):
            raise MedusaError(
                f"{config}: {key} must be a string, not {json.dumps(value)}: fix or remove it"
            )
    for key in FOLDER_FILES:
        if declared.get(key):
            inside_folder(declared[key], config, key)
    return declared


def _is_head_tensor(name: str) -> bool:
    first, _, rest = name.partition(".")
    return (first.isdigit() and bool(rest)) or name.startswith(drafter_prefixes())


def _head_tensors(state: dict[str, torch.Tensor], path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a heads file, once sure they are heads and finite: a file of something else
    would otherwise be reported as heads that do not fit the base model, and NaN weights would
    decode without a word."""
    if not any(_is_head_tensor(name) for name in state):
        found = f"its tensors: {', '.join(sorted(state)[:3])}" if state else "it holds no tensors"
        raise MedusaError(
            f"{path} holds no Medusa head tensors ({found}); expected names like {EXPECTED_NAMES}: "
            "pass the heads train-heads saved"
        )
    refuse_non_finite(state.items(), f"head weights {path}", NON_FINITE_ADVICE)
    return state


def _checkpoint(
    weights: Path, fmt: str, source: str, declared: dict, config: Path | str, base_key: str
) -> HeadCheckpoint:
    declared = checked_declared(declared, config)
    state = _head_tensors(_load_tensor_file(weights), weights)
    return HeadCheckpoint(state, fmt, source, declared.get(base_key), declared)


def read_head_checkpoint(location: str, token: str | None = None) -> HeadCheckpoint | None:
    """Heads stored on their own (project or Medusa-1 format) at a folder, file or hub id; None if
    none there."""
    path = Path(location)
    if path.is_file() and path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise MedusaError(
            f"{path} is a file but not a model ({path.suffix or 'no suffix'}); {NOT_A_MODEL}"
        )
    if path.is_file():  # a bare weights file
        cfg_path = path.parent / HEADS_CONFIG
        declared = read_json_object(cfg_path) if cfg_path.is_file() else {}
        fmt = "project" if path.name == HEADS_WEIGHTS else "medusa-1"
        return _checkpoint(path, fmt, str(path), declared, cfg_path, "base_model")
    cfg = fetch(location, HEADS_CONFIG, token, required=False)
    if cfg is not None:
        declared = read_json_object(cfg)
        if declared.get("format") != FORMAT_NAME:
            raise MedusaError(
                f"{cfg} is not a medusa heads config (format={declared.get('format')!r})"
            )
        return _checkpoint(
            fetch(location, HEADS_WEIGHTS, token), "project", location, declared, cfg, "base_model"
        )
    for name in MEDUSA1_WEIGHTS:
        weights = fetch(location, name, token, required=False)
        if weights is not None:
            conf = fetch(location, "config.json", token, required=False)
            declared = read_json_object(conf) if conf is not None else {}
            return _checkpoint(
                weights, "medusa-1", location, declared, conf or location, "base_model_name_or_path"
            )
    return None


def _weight_files(location: str, token: str | None) -> list[Path]:
    """The model's weight files that hold Medusa-2 head tensors (via the shard index when there is
    one)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = fetch(location, index_name, token, required=False)
        if index is not None:
            weight_map = read_json_object(index).get("weight_map", {})
            if not isinstance(weight_map, dict):
                raise MedusaError(
                    f"{index}: weight_map is not a JSON object: restore the file from the model's"
                    " source"
                )
            shards = sorted({f for k, f in weight_map.items() if k.startswith(MEDUSA2_PREFIX)})
            return [fetch(location, s, token) for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        single = fetch(location, name, token, required=False)
        if single is not None:
            return [single]
    return []


def read_medusa2_heads(location: str, token: str | None = None) -> HeadCheckpoint | None:
    """``medusa_head.*`` tensors inside a full model checkpoint (Medusa-2), or None when it has
    none."""
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(location, token):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        if key.startswith(MEDUSA2_PREFIX):
                            state[key[len(MEDUSA2_PREFIX):]] = f.get_tensor(key)
            except Exception as exc:
                raise MedusaError(f"cannot read model weights {path}: {exc}") from None
        else:
            full = _load_tensor_file(path)
            state.update(
                {
                    k[len(MEDUSA2_PREFIX) :]: v
                    for k, v in full.items()
                    if k.startswith(MEDUSA2_PREFIX)
                }
            )
    if not state:
        return None
    conf = fetch(location, "config.json", token, required=False)
    declared = checked_declared(
        read_json_object(conf) if conf is not None else {}, conf or location
    )
    refuse_non_finite(state.items(), f"head weights in {location}", NON_FINITE_ADVICE)
    return HeadCheckpoint(
        state, "medusa-2", location, location if not is_local(location) else None, declared
    )


def build_heads(ckpt: HeadCheckpoint, base_model) -> Drafter:
    """Match head tensors to a loaded base model: shape checks, then a tensor-for-tensor load."""
    lm_head = base_model.get_output_embeddings()
    hidden, vocab = lm_head.weight.shape[1], lm_head.weight.shape[0]
    try:
        config = infer_head_config(ckpt.state, hidden, vocab)
    except ValueError as exc:
        raise MedusaError(f"heads at {ckpt.source} do not fit this base model: {exc}") from None
    heads = build_drafter(config, lm_head, base_model.get_input_embeddings())
    try:
        heads.load_head_state_dict(ckpt.state)
    # e.g. a draft vocabulary on heads that cannot take one, or out of range
    except ValueError as exc:
        raise MedusaError(f"heads at {ckpt.source} do not fit this base model: {exc}") from None
    return heads.to(device=lm_head.weight.device, dtype=lm_head.weight.dtype)
