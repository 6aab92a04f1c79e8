"""Which model a command loads and where: the settings and flags every model-loading command
shares, each field and flag written once here.

Three layers, since the commands load different parts:

- :class:`BaseModelSpec`: a base model, its device, weights' type and hub token (``finetune``);
- :class:`ServedBaseSpec`: plus the adapter merged into it and its split over GPUs, the base as
  decoding serves it (``train-heads``);
- :class:`ModelSpec`: plus heads stored on their own (the run, ``calibrate-tree``,
  ``measure-acceptance``).

A command's settings dataclass inherits the layer it loads, so its fields stay flat
(``settings.model_name``) and the files it writes keep their keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from medusa.arg_types import FlagAdder
from medusa.model.device_map import add_device_map_arguments
from medusa.model.embedded import EMBEDDED_NAME

DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")  # --dtype (loader.resolve_dtype)
AUTO = "auto"  # --device and --dtype: decided where the model loads

HELPS = {
    "model_name": "base model with its heads: a local folder, a hub id or a .gguf file "
    "({default})",
    "medusa_heads": "heads stored on their own (folder, file or hub id), when the model has none "
    "beside it",
    "adapter": "LoRA adapter merged into the base at load",
    "device": "auto, cpu, cuda or cuda:N ({default})",
    "dtype": "weights' type; auto: fp32 on a CPU, the checkpoint's half type on a GPU",
    "hf_token": "Hugging Face token for gated models or data (better: the HF_TOKEN environment "
    "variable)",
}


@dataclass
class BaseModelSpec:
    """A base model, the device it runs on, its weights' type and the hub token that reads it."""

    model_name: str = EMBEDDED_NAME
    device: str = AUTO
    dtype: str = AUTO
    hf_token: str | None = None

    @staticmethod
    def add_arguments(parser, defaults: object, helps: dict[str, str] | None = None,
                      only: tuple[str, ...] | None = None) -> None:
        """The flags of the fields ``defaults`` has (every layer's, in one order), with its values
        as defaults; ``helps`` words a flag for one command, ``only`` picks some of them."""
        flag = FlagAdder(parser, defaults, helps, only)
        flag("model_name", "--model-name", "-m", help=HELPS["model_name"])
        flag("medusa_heads", "--medusa-heads", help=HELPS["medusa_heads"])
        flag("adapter", "--adapter", help=HELPS["adapter"])
        flag("device", "--device", help=HELPS["device"])
        if flag.wants("device_map"):  # --device-map and --max-memory, as device_map.py words them
            add_device_map_arguments(parser)
        flag("dtype", "--dtype", choices=list(DTYPE_NAMES), help=HELPS["dtype"])
        flag("hf_token", "--hf-token", "-token", help=HELPS["hf_token"])

    def load_settings(self, **extra):
        """What :func:`medusa.model.loader.load_model` needs for this model; ``extra`` sets the
        loader's other fields."""
        from medusa.model.loader import LoadSettings

        return LoadSettings(model_name=self.model_name,
                            medusa_heads=getattr(self, "medusa_heads", None),
                            token=self.hf_token, device=self.device, dtype=self.dtype,
                            adapter=getattr(self, "adapter", None),
                            device_map=getattr(self, "device_map", None),
                            max_memory=getattr(self, "max_memory", None), **extra)


@dataclass
class ServedBaseSpec(BaseModelSpec):
    """The base as decoding serves it: an adapter merged at load, its layers split over GPUs."""

    adapter: str | None = None  # a LoRA adapter folder merged into the base weights at load
    device_map: str | None = None  # "auto": one model split over the visible GPUs (device_map.py)
    max_memory: str | None = None  # with device_map: per-GPU limits, e.g. "0=40GiB,1=40GiB"


@dataclass
class ModelSpec(ServedBaseSpec):
    """The served base with Medusa heads: beside it in its checkpoint, or stored on their own."""

    medusa_heads: str | None = None
