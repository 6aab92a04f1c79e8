"""Run settings as one dataclass, and the two ready-made setups (offline embedded default, seed protocol)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medusa.model.embedded import EMBEDDED_DATASET, EMBEDDED_NAME

SEED_MODEL = "FasterDecoding/medusa-v1.0-vicuna-7b-v1.5"
SEED_DATASET = "ai4bharat/IN22-Gen"
# The demo's tree on a CPU, where every node costs a full row of the verify pass: rebuilt from the shipped drafter's
# calibration, the 3-node tree decodes faster than single-head on 2 cores and larger trees lose (docs/experiments/
# cpu-trees.md). On CUDA the demo decodes with the shipped tree, sized for a GPU.
CPU_DEMO_TREE_SIZE = 3

SETUPS = {
    "seed": {"model_name": SEED_MODEL, "dataset": SEED_DATASET, "prompt_style": "seed"},
    # auto: chat where the tokenizer has a chat template (the embedded one does), else the seed prompt
    "embedded": {"model_name": EMBEDDED_NAME, "dataset": EMBEDDED_DATASET, "prompt_style": "auto"},
}


@dataclass
class RunSettings:
    """Everything one evaluation run depends on; written to the summary file (the token never is)."""

    setup: str = "embedded"
    model_name: str = EMBEDDED_NAME
    medusa_heads: str | None = None
    adapter: str | None = None
    bare_embedded: bool = False  # the embedded base without its shipped adapter, heads and tree
    dataset: str = EMBEDDED_DATASET
    split: str = "test"
    src_lang: str = "hin_Deva"
    tgt_lang: str = "eng_Latn"
    num_examples: int | None = 50
    decoding_strategy: str = "single-head"
    beam_width: int = 2
    use_no_medusa_heads: int = 2
    acceptance: str = "greedy"
    posterior_threshold: float = 0.09
    posterior_alpha: float = 0.3
    tree_file: str | None = None
    tree_size: int | None = None
    dynamic_tree: int | None = None  # -ds tree: a dynamic tree of N nodes, --use-no-medusa-heads deep
    adaptive: bool = False
    compare_single_head: bool = False
    generator: str | None = None  # a student's MedusaTextGenerator, FILE.py:Class, run instead of our decoder
    timeout: float | None = None  # --generator: seconds per example before the submission's example fails
    sandbox: bool = False  # --generator: the submission's process in namespaces (medusa/grading/sandbox.py)
    max_input_len: int = 1000
    max_output_len: int = 50
    prompt_style: str = "auto"  # resolved before loading where the tokenizer config tells (medusa/evaluation/preflight.py)
    device: str = "auto"
    device_map: str | None = None  # "auto": one model split over the visible GPUs (medusa/model/device_map.py)
    max_memory: str | None = None  # with device_map: per-GPU limits, e.g. "0=40GiB,1=40GiB"
    dtype: str = "auto"
    engine: str = "auto"  # auto = graphs on CUDA, eager on CPU (medusa/decoding/engine.py)
    output_dir: str | None = None
    seed: int = 0
    warmup: bool = True
    resume: bool = False
    debug: bool = False
    hf_token: str | None = None
    threads: int | None = None  # torch's CPU threads (--threads, else medusa/runtime/threads.py's default)

    def load_settings(self):
        """What :func:`medusa.model.loader.load_model` needs for this run's model."""
        from medusa.model.loader import LoadSettings

        return LoadSettings(self.model_name, self.medusa_heads, self.hf_token, self.device, self.dtype, self.adapter,
                            embedded_extras=not self.bare_embedded, small_fp32=True, device_map=self.device_map,
                            max_memory=self.max_memory)

    def public_dict(self) -> dict:
        """The settings without the token (only whether one was given)."""
        d = asdict(self)
        d["hf_token"] = "given" if self.hf_token else None
        return d
