"""Which rows a command reads and how a row becomes a prompt: the settings and flags every
data-reading command shares, each field and flag written once here.

:class:`PromptSpec` (languages, prompt style, prompt length) is what ``finetune`` needs beside its
own pairs; :class:`DataSpec` adds the dataset, its split and the rows taken (the run,
``calibrate-tree``, ``measure-acceptance``, ``train-heads``). A command's settings dataclass
inherits the one it reads, so its fields stay flat and the files it writes keep their keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from medusa.arg_types import FlagAdder, NamedRule, at_least_one
from medusa.evaluation.languages import SOURCE_LANG, TARGET_LANG
from medusa.evaluation.prompts import PROMPT_STYLES
from medusa.model.embedded import EMBEDDED_DATASET

AUTO_STYLE = "auto"  # chat where the tokenizer has a chat template, else seed (preflight.py)
# prompt tokens kept: at 256, 11 % of FLORES-200 and 1,259 training sources were cut
MAX_INPUT_LEN = 1000
SEED_ROWS = 50  # the seed's rows per run
SPLIT = "test"

HELPS = {
    "dataset": "hub id, local file/folder, or a shipped sample: flores200-sample, in22-gen-sample",
    "split": "dataset split for hub data ({default})",
    "src_lang": "source language code ({default})",
    "tgt_lang": "target language code ({default})",
    "num_examples": "first N rows ({default})",
    "prompt_style": "auto (default): chat where the tokenizer has a chat template, else the seed "
    "prompt",
    "fixed_prompt_style": "seed = the course's prompt; chat = the tokenizer's chat template "
    "({default})",
    "max_input_len": "prompt tokens kept ({default})",
}


@dataclass
class PromptSpec:
    """The language pair, the prompt's form and how many of its tokens are kept."""

    src_lang: str = SOURCE_LANG
    tgt_lang: str = TARGET_LANG
    prompt_style: str = AUTO_STYLE  # settled for the tokenizer once it loads (preflight.py)
    max_input_len: int = MAX_INPUT_LEN

    @staticmethod
    def add_arguments(parser, defaults: object, helps: dict[str, str] | None = None,
                      only: tuple[str, ...] | None = None, many: bool = False,
                      auto_style: bool = True) -> None:
        """The flags of the fields ``defaults`` has, with its values as defaults. ``many``:
        ``--dataset`` repeats (the command pools or measures several); ``auto_style``: the command
        settles ``auto`` once the model loads, so it offers it."""
        flag = FlagAdder(parser, defaults, helps, only)
        flag("dataset", "--dataset", "-d", help=HELPS["dataset"],
             **({"action": "append", "default": None} if many else {}))
        flag("split", "--split", help=HELPS["split"])
        flag("src_lang", "--src-lang", help=HELPS["src_lang"])
        flag("tgt_lang", "--tgt-lang", help=HELPS["tgt_lang"])
        flag("num_examples", "--num-examples", "-n", action=NamedRule, check=at_least_one,
             help=HELPS["num_examples"])
        styles = [AUTO_STYLE, *PROMPT_STYLES] if auto_style else list(PROMPT_STYLES)
        flag("prompt_style", "--prompt-style", choices=styles,
             help=HELPS["prompt_style" if auto_style else "fixed_prompt_style"])
        flag("max_input_len", "--max-input-len", "-mil", action=NamedRule, check=at_least_one,
             help=HELPS["max_input_len"])


@dataclass
class DataSpec(PromptSpec):
    """The rows: a dataset (hub id, local file or folder, shipped sample), its split, how many."""

    dataset: str = EMBEDDED_DATASET
    split: str = SPLIT
    num_examples: int | None = SEED_ROWS  # None: every row
