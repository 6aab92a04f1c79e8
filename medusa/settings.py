"""Run settings as one dataclass, and the two ready-made setups (offline embedded default, seed
protocol)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medusa.decoding import DecodeSettings
from medusa.evaluation.data_spec import DataSpec
from medusa.model.embedded import EMBEDDED_DATASET, EMBEDDED_NAME
from medusa.model.model_spec import ModelSpec

SEED_MODEL = "FasterDecoding/medusa-v1.0-vicuna-7b-v1.5"
SEED_DATASET = "ai4bharat/IN22-Gen"
# The demo's tree on a CPU, where every node costs a full row of the verify pass: rebuilt from the
# shipped drafter's
# calibration, the 3-node tree decodes faster than single-head on 2 cores and larger trees lose
# (docs/experiments/
# cpu-trees.md). On CUDA the demo decodes with the shipped tree, sized for a GPU.
CPU_DEMO_TREE_SIZE = 3
SEED_NEW_TOKENS = 50  # the seed's --max-output-len

SETUPS = {
    "seed": {"model_name": SEED_MODEL, "dataset": SEED_DATASET, "prompt_style": "seed"},
    # auto: chat where the tokenizer has a chat template (the embedded one does), else the seed
    # prompt
    "embedded": {"model_name": EMBEDDED_NAME, "dataset": EMBEDDED_DATASET, "prompt_style": "auto"},
}


@dataclass
class RunSettings(ModelSpec, DataSpec):
    """Everything one evaluation run depends on; written to the summary file (the token never
    is). The model's and the data's fields come from their specs; the decoding fields take
    :class:`DecodeSettings`' defaults."""

    setup: str = "embedded"
    bare_embedded: bool = False  # the embedded base without its shipped adapter, heads and tree
    decoding_strategy: str = DecodeSettings.strategy
    beam_width: int = DecodeSettings.beam_width
    use_no_medusa_heads: int = DecodeSettings.num_heads
    acceptance: str = DecodeSettings.acceptance
    posterior_threshold: float = DecodeSettings.posterior_threshold
    posterior_alpha: float = DecodeSettings.posterior_alpha
    tree_file: str | None = None
    tree_size: int | None = None
    # -ds tree: a dynamic tree of N nodes, --use-no-medusa-heads deep
    dynamic_tree: int | None = None
    adaptive: bool = False
    temperature: float = DecodeSettings.temperature
    top_k: int = DecodeSettings.top_k
    top_p: float = DecodeSettings.top_p
    compare_single_head: bool = False
    # a student's MedusaTextGenerator, FILE.py:Class, run instead of our decoder
    generator: str | None = None
    # --generator: seconds per example before the submission's example fails
    timeout: float | None = None
    # --generator: the submission's process in namespaces (medusa/grading/sandbox.py)
    sandbox: bool = False
    max_output_len: int = SEED_NEW_TOKENS
    engine: str = "auto"  # auto = graphs on CUDA, eager on CPU (medusa/decoding/engine.py)
    # rows decoded together by the fast engine (medusa/decoding/batch_loop.py)
    batch_size: int = 1
    output_dir: str | None = None
    seed: int = 0
    warmup: bool = True
    resume: bool = False
    debug: bool = False
    # torch's CPU threads (--threads, else medusa/runtime/threads.py's default)
    threads: int | None = None

    def load_settings(self):
        """What :func:`medusa.model.loader.load_model` needs for this run's model."""
        return super().load_settings(embedded_extras=not self.bare_embedded, small_fp32=True)

    def public_dict(self) -> dict:
        """The settings without the token (only whether one was given)."""
        d = asdict(self)
        d["hf_token"] = "given" if self.hf_token else None
        return d
