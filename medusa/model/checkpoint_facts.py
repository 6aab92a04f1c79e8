"""What a checkpoint's small files say before any weight is read: chat template, head count, shipped
tree.

Loading a 7B model takes minutes; a wrong ``--prompt-style``, ``-nmh`` or ``--tree-size`` should not
wait for it. Every answer here mirrors a choice :func:`medusa.model.loader.load_model` makes later
from the full files, and says ``None`` where only the weights could tell (then the check runs after
loading, as before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medusa.drafters import stored_heads
from medusa.errors import MedusaError
from medusa.model.checkpoints import (
    HEADS_CONFIG,
    HEADS_WEIGHTS,
    MEDUSA1_WEIGHTS,
    MEDUSA2_PREFIX,
    inside_folder,
)
from medusa.model.embedded import EMBEDDED_NAME
from medusa.model.hub import fetch, is_local

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclass
class CheckpointFacts:
    """``None`` means "cannot tell before loading"."""

    base: str  # the base model the tokenizer comes from (for messages)
    chat_template: bool | None = None
    num_heads: int | None = None
    # a calibrated tree saved beside the heads (what -ds tree uses without --tree)
    tree: str | None = None
    heads_source: str | None = None
    declared: dict = field(default_factory=dict)


def _json_or_none(path: Path | None) -> dict | None:
    """A small JSON file's content; an unreadable one is "cannot tell" (the loader reports it
    properly)."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _text(declared: dict, key: str) -> str:
    """A name from heads metadata; anything but text is "cannot tell" (the loader says what is wrong
    with it)."""
    value = declared.get(key)
    return value if isinstance(value, str) else ""


def has_chat_template(location: str, token: str | None = None) -> bool | None:
    """Whether the tokenizer at a folder or hub id carries a chat template, from its config files
    only."""
    # transformers 4.43+ saves the template beside tokenizer_config.json
    for name in CHAT_TEMPLATE_FILES:
        if fetch(location, name, token, required=False) is not None:
            return True
    config = _json_or_none(fetch(location, TOKENIZER_CONFIG, token, required=False))
    if config is None:
        return None  # no tokenizer config here: only loading the tokenizer can tell
    return bool(config.get("chat_template"))


def count_heads(keys, prefix: str = "") -> int:
    """Heads named in weight keys (``{k}.{j}...``, after ``prefix``); 0 when none are."""
    found = set()
    for key in keys:
        if key.startswith(prefix):
            first = key[len(prefix):].split(".", 1)[0]
            if first.isdigit():
                found.add(int(first))
    return max(found) + 1 if found else 0


def _stored_heads(keys: list[str] | None, declared: dict) -> int | None:
    """Heads in a heads-only weights file, as the drafter kind whose tensors these are counts them
    (from the keys; a drafter layer without per-head tensors: its declared depth)."""
    if not keys:
        return None
    return stored_heads(keys, declared)


def weight_keys(path: Path) -> list[str] | None:
    """Tensor names from a weights file's header (safetensors) or a memory-mapped pickle, never
    their data."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return list(state) if isinstance(state, dict) else None
    except Exception:  # corrupt or unusual: the loader gives the one-line error
        return None


def _local_file(location: str, name: str) -> Path | None:
    path = Path(location) / name
    return path if path.is_file() else None


def _heads_only(location: str, token: str | None) -> CheckpointFacts | None:
    """Heads stored on their own at ``location`` (the loader's read_head_checkpoint, without the
    tensors)."""
    path = Path(location)
    if path.is_file():
        declared = _json_or_none(path.parent / HEADS_CONFIG) or {}
        keys = weight_keys(path)
        return CheckpointFacts(
            _text(declared, "base_model"),
            num_heads=_stored_heads(keys, declared),
            heads_source=str(path),
            declared=declared,
        )
    config = fetch(location, HEADS_CONFIG, token, required=False)
    if config is not None:
        declared = _json_or_none(config) or {}
        weights = _local_file(location, HEADS_WEIGHTS) if is_local(location) else None
        keys = weight_keys(weights) if weights else None
        num = _stored_heads(keys, declared) if keys else declared.get("num_heads")
        return CheckpointFacts(
            _text(declared, "base_model"),
            num_heads=num if isinstance(num, int) else None,
            heads_source=location,
            declared=declared,
        )
    if is_local(location):
        for name in MEDUSA1_WEIGHTS:
            weights = _local_file(location, name)
            if weights is not None:
                declared = _json_or_none(_local_file(location, "config.json")) or {}
                keys = weight_keys(weights)
                return CheckpointFacts(
                    _text(declared, "base_model_name_or_path"),
                    num_heads=count_heads(keys) if keys else None,
                    heads_source=location,
                    declared=declared,
                )
        return None
    declared = _json_or_none(fetch(location, "config.json", token, required=False)) or {}
    # a Medusa-1 heads repository
    if "medusa_num_heads" in declared and "hidden_size" not in declared:
        # its config may state fewer heads than its tensors hold: the count waits for the weights
        return CheckpointFacts(
            _text(declared, "base_model_name_or_path"), heads_source=location, declared=declared
        )
    return None


def _medusa2_heads(location: str, token: str | None) -> int | None:
    """Heads inside a full checkpoint's weights (0 for a plain model), from the shard index or a
    file header."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = _json_or_none(fetch(location, index_name, token, required=False))
        if index is not None:
            return count_heads(index.get("weight_map", {}), MEDUSA2_PREFIX)
    if not is_local(location):
        return None  # one big hub file: its header would mean a download
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = _local_file(location, name)
        if weights is not None:
            keys = weight_keys(weights)
            return count_heads(keys, MEDUSA2_PREFIX) if keys is not None else None
    return None


def _beside(source: str, declared: dict) -> str | None:
    """The tree saved next to local heads, as the loader finds it; a name that is not text or leaves
    the folder is "cannot tell" (the loader refuses it)."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    name = declared.get("tree") or "tree.json"
    if folder is None or not isinstance(name, str):
        return None
    try:
        tree = folder / inside_folder(name, source, "tree")
    except MedusaError:
        return None
    return str(tree) if tree.is_file() else None


def inspect_checkpoint(
    model_name: str,
    medusa_heads: str | None,
    adapter: str | None,
    bare_embedded: bool,
    token: str | None = None,
) -> CheckpointFacts:
    """The facts about ``--model-name`` (+ ``--medusa-heads``, ``--adapter``) that the loader would
    find."""
    from medusa.model.loader import (
        EMBEDDED_DEFAULT_DIR,
        EMBEDDED_UNTRAINED_HEADS,
        LoadSettings,
        check_names,
        shipped_folder,
    )

    # empty or missing paths, said as such
    check_names(LoadSettings(model_name, medusa_heads, adapter=adapter))
    model_name = shipped_folder(model_name)
    own = (
        None
        if model_name == EMBEDDED_NAME or model_name.endswith(".gguf")
        else _heads_only(model_name, token)
    )
    base = own.base if own is not None and own.base else model_name
    heads: CheckpointFacts | None = own
    plain_heads: int | None = 0
    if base == EMBEDDED_NAME:
        template: bool | None = True  # SmolLM2-135M-Instruct's tokenizer carries its chat template
    elif base.endswith(".gguf"):
        template = None  # inside the GGUF file: known once the tokenizer is converted and loaded
    else:
        template = has_chat_template(base, token)
        if own is None and medusa_heads is None:
            plain_heads = _medusa2_heads(model_name, token)
    facts = CheckpointFacts(base, chat_template=template, num_heads=plain_heads)
    if plain_heads:  # Medusa-2: the heads live in the model's folder, and so may a calibrated tree
        facts.tree = _beside(model_name, _json_or_none(_local_file(model_name, "config.json")
                                                       if is_local(model_name) else None) or {})
    shipped = (base == EMBEDDED_NAME and own is None and medusa_heads is None and adapter is None
               and not bare_embedded and (EMBEDDED_DEFAULT_DIR / HEADS_CONFIG).is_file())
    if shipped:
        heads = _heads_only(str(EMBEDDED_DEFAULT_DIR), token)
    if medusa_heads is not None:
        heads = _heads_only(medusa_heads, token)
        if heads is None:
            return facts  # the loader says what is missing there
    if heads is not None:
        facts.num_heads, facts.heads_source, facts.declared = (
            heads.num_heads,
            heads.heads_source,
            heads.declared,
        )
        facts.tree = _beside(heads.heads_source, heads.declared)
    elif base == EMBEDDED_NAME:
        # identity-initialised heads keep every strategy runnable
        facts.num_heads = EMBEDDED_UNTRAINED_HEADS
    return facts
