"""One model split over several GPUs (``--device-map auto``, ``--max-memory``): accelerate's
big-model loading through transformers' ``from_pretrained(device_map=..., max_memory=...)``.

The base's layers are spread over the visible GPUs in order, the Medusa heads are put where
``lm_head`` is (they read its input), and :class:`medusa.model.MedusaModel` hands every output back
on the first GPU, where the decoders keep their tensors. The graphs/compiled engines keep one static
cache on one GPU, so a split model decodes in the eager loop (said once).
"""

from __future__ import annotations

import torch

from medusa.console import say
from medusa.errors import MedusaError

DEVICE_MAPS = ("auto",)
FAST_ENGINES = ("graphs", "compiled")


def add_device_map_arguments(p) -> None:
    """``--device-map`` and ``--max-memory``, for every command that loads a model to run it."""
    p.add_argument(
        "--device-map",
        choices=list(DEVICE_MAPS),
        default=None,
        help=(
            "split a model too large for one GPU over the visible GPUs (accelerate's big-model"
            " loading); the heads sit with lm_head"
        ),
    )
    p.add_argument("--max-memory", default=None, metavar="GPU=SIZE,...",
                   help="with --device-map auto: memory each GPU may hold, e.g. 0=40GiB,1=40GiB")


def parse_max_memory(text: str | None) -> dict[int, str] | None:
    """``"0=40GiB,1=40GiB"`` → ``{0: "40GiB", 1: "40GiB"}``; each size as accelerate reads it (GiB,
    GB, MiB...)."""
    if text is None:
        return None
    from accelerate.utils import convert_file_size_to_int

    limits: dict[int, str] = {}
    for part in text.split(","):
        gpu, sep, size = (p.strip() for p in part.partition("="))
        try:
            if not sep or not gpu.isdigit():
                raise ValueError
            convert_file_size_to_int(size)
        except ValueError:
            raise MedusaError(
                f"--max-memory entry '{part.strip()}' is not GPU=SIZE: write e.g. "
                "--max-memory 0=40GiB,1=40GiB (GPU numbers as torch counts them)"
            ) from None
        limits[int(gpu)] = size
    return limits


def check_device_map(settings, process_count: int = 1) -> None:
    """Before anything loads: the flags fit together and there are GPUs to split over. ``settings``
    has ``device_map``, ``max_memory``, ``device`` and (for evaluation runs) ``engine``."""
    device_map, max_memory = getattr(settings, "device_map", None), getattr(
        settings, "max_memory", None
    )
    if device_map is None:
        if max_memory is not None:
            raise MedusaError(
                "--max-memory limits what --device-map auto puts on each GPU: add --device-map auto"
            )
        return
    if getattr(settings, "device", "auto") not in ("auto", "cuda"):
        raise MedusaError(
            f"--device-map auto places the model itself; drop --device {settings.device}"
        )
    if process_count > 1:
        raise MedusaError(
            "--device-map splits one model over all the GPUs, so it cannot run in each of "
            f"{process_count} processes: launch one process (python medusa.py) or drop --device-map"
        )
    if getattr(settings, "engine", "auto") in FAST_ENGINES:
        raise MedusaError(
            f"--engine {settings.engine} keeps the whole model on one GPU; with --device-map the"
            " eager engine runs: drop --engine"
        )
    limits = parse_max_memory(max_memory)  # the flags first, then the machine
    if not torch.cuda.is_available():
        raise MedusaError(
            "--device-map auto splits a model over GPUs, but CUDA is not available here: drop "
            "--device-map (a CPU holds the whole model anyway)"
        )
    visible = torch.cuda.device_count()
    if limits and max(limits) >= visible:
        raise MedusaError(
            f"--max-memory names GPU {max(limits)}, but {visible} GPU(s) are visible (0 to "
            f"{visible - 1}): check the numbers or CUDA_VISIBLE_DEVICES"
        )


def load_kwargs(device_map: str | None, max_memory: str | None) -> dict:
    """The ``from_pretrained`` arguments of a split load (none for a one-device load)."""
    if device_map is None:
        return {}
    limits = parse_max_memory(max_memory)
    return {"device_map": device_map, **({"max_memory": limits} if limits else {})}


def check_placed(base, devices: list[str] | None = None) -> None:
    """Every weight must sit on a GPU: offloaded ones (cpu/disk/meta) would be slow and are not
    supported here. ``devices``: where the weights are, when transformers kept no device map
    (everything on one device)."""
    placed = set(getattr(base, "hf_device_map", {}).values()) if devices is None else set(devices)
    off = sorted(str(d) for d in placed if str(d) in ("cpu", "disk", "meta"))
    if off:
        raise MedusaError(
            "the model does not fit in the GPUs' memory (--max-memory): parts would go to "
            f"{' and '.join(off)}; allow more memory per GPU or use more GPUs"
        )


def describe_map(device_map: dict) -> str:
    """``{"model.layers.0": 0, ..., "lm_head": 1}`` → ``"cuda:0: 17 modules; cuda:1: 18 modules
    (lm_head)"``."""
    where: dict[str, list[str]] = {}
    for module, device in device_map.items():
        where.setdefault(f"cuda:{device}" if isinstance(device, int) else str(device), []).append(
            module
        )
    return "; ".join(
        f"{d}: {len(m)} modules" + (" (lm_head)" if any(x.endswith("lm_head") for x in m) else "")
        for d, m in where.items()
    )


def model_devices(model) -> list[str]:
    """The devices holding the model's weights (base and heads), e.g. ``["cuda:0", "cuda:1"]``."""
    return sorted({str(p.device) for p in model.parameters()})


def engine_for(model, asked: str) -> str:
    """The engine a model decodes with: a split model runs the eager loop (its cache layers live on
    several GPUs)."""
    devices = model_devices(model)
    if len(devices) > 1 and asked in ("auto", *FAST_ENGINES):
        say(
            f"note: the model is split over {', '.join(devices)}; the eager engine runs (the graphs"
            " engine needs the whole model on one GPU)"
        )
        return "eager"
    return asked
