"""``python medusa.py calibrate-tree``: measure the heads on a model + dataset and save the best tree as JSON."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from medusa.measure.calibrate import calibrate_tree, measure_head_accuracy
from medusa.console import say
from medusa.evaluation.data import load_examples
from medusa.training.batch_generate import batched_greedy
from medusa.model.embedded import EMBEDDED_NAME
from medusa.errors import MedusaError
from medusa.model.device_map import add_device_map_arguments, check_device_map
from medusa.model.loader import LoadSettings, load_model
from medusa.model import stop_token_ids
from medusa.runtime.output_dir import check_output_file
from medusa.evaluation.prompts import encode_prompts
from medusa.measure.trees import save_tree


@dataclass
class CalibrationSettings:
    model_name: str = EMBEDDED_NAME
    medusa_heads: str | None = None
    adapter: str | None = None
    dataset: str = "flores200-sample"
    split: str = "test"
    src_lang: str = "hin_Deva"
    tgt_lang: str = "eng_Latn"
    num_examples: int | None = 50
    prompt_style: str = "auto"  # chat where the tokenizer has a chat template, else seed
    max_input_len: int = 1000
    max_output_len: int = 50
    heads: int | None = None
    tree_size: int = 63
    max_rank: int = 10
    batch_size: int = 32  # prompts per batched greedy generation
    output: str = "tree.json"
    device: str = "auto"
    device_map: str | None = None  # --device-map auto: split over the GPUs (medusa/model/device_map.py)
    max_memory: str | None = None
    dtype: str = "auto"
    hf_token: str | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = CalibrationSettings()
    p.add_argument("--model-name", "-m", default=d.model_name)
    p.add_argument("--medusa-heads", default=None)
    p.add_argument("--adapter", default=None, help="LoRA adapter merged into the base at load")
    p.add_argument("--dataset", "-d", default=d.dataset, help="calibrate on data you will NOT evaluate on")
    p.add_argument("--split", default=d.split)
    p.add_argument("--src-lang", default=d.src_lang)
    p.add_argument("--tgt-lang", default=d.tgt_lang)
    p.add_argument("--num-examples", "-n", type=int, default=d.num_examples)
    p.add_argument("--prompt-style", choices=["auto", "seed", "chat"], default=d.prompt_style,
                   help="auto (default): chat where the tokenizer has a chat template, else the seed prompt")
    p.add_argument("--max-input-len", "-mil", type=int, default=d.max_input_len)
    p.add_argument("--max-output-len", "-mol", type=int, default=d.max_output_len)
    p.add_argument("--heads", type=int, default=None, help="heads to measure (default: all the model has)")
    p.add_argument("--tree-size", type=int, default=d.tree_size, help="nodes in the tree (63)")
    p.add_argument("--max-rank", type=int, default=d.max_rank, help="ranks measured per head (10)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts generated at once (32)")
    p.add_argument("--output", "-o", default=d.output, help="where the tree JSON goes (tree.json)")
    p.add_argument("--device", default=d.device)
    add_device_map_arguments(p)
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default=d.dtype)
    p.add_argument("--hf-token", "-token", default=None)


def run_calibration(s: CalibrationSettings) -> dict:
    """Greedy continuations of the dataset's prompts → per-head top-k hit rates → optimal tree → JSON."""
    for name, value in (("--num-examples", s.num_examples), ("--tree-size", s.tree_size), ("--max-rank", s.max_rank),
                        ("--batch-size", s.batch_size), ("--max-input-len", s.max_input_len),
                        ("--max-output-len", s.max_output_len), ("--heads", s.heads)):
        if value is not None and value < 1:
            raise MedusaError(f"{name} must be at least 1 (got {value})")
    check_output_file(Path(s.output), "--output")  # before the model loads, not after the work
    examples, info = load_examples(s.dataset, s.src_lang, s.tgt_lang, s.num_examples, s.hf_token, s.split)
    check_device_map(s)
    model = load_model(LoadSettings(s.model_name, s.medusa_heads, s.hf_token, s.device, s.dtype, adapter=s.adapter,
                                    device_map=s.device_map, max_memory=s.max_memory))
    from medusa.evaluation.preflight import settle_prompt_style

    s = settle_prompt_style(s, model.tokenizer, model.info.base)  # the seed prompt for a model without a template
    heads = s.heads or model.num_heads
    if not model.num_heads:
        raise MedusaError(f"{s.model_name} has no Medusa heads to calibrate; pass --medusa-heads PATH")
    if heads > model.num_heads:
        raise MedusaError(f"--heads {heads} is more than the model has ({model.num_heads})")
    stops = sorted(stop_token_ids(model.tokenizer, model.base_model))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else stops[0]
    prompts = encode_prompts(model.tokenizer, [ex.source for ex in examples], s.src_lang, s.tgt_lang,
                             s.prompt_style, s.max_input_len)
    outs = batched_greedy(model.base_model, prompts, s.max_output_len, stops, pad, s.batch_size,
                          progress="greedy continuations")
    sequences = [ids + out for ids, out in zip(prompts, outs)]
    prompt_lengths = [len(ids) for ids in prompts]
    accuracy = measure_head_accuracy(model, sequences, prompt_lengths, heads, s.max_rank)
    tree, expected = calibrate_tree(accuracy, s.tree_size)
    top1, top5 = accuracy.topk(1), accuracy.topk(min(5, s.max_rank))
    meta = {
        "model": model.info.base, "heads": model.info.heads, "heads_measured": heads, "dataset": info.name,
        "examples": len(examples), "positions": accuracy.total, "top1": top1, "top5": top5,
        "accuracies": accuracy.accuracies(), "expected_tokens_per_step": expected,
    }
    Path(s.output).parent.mkdir(parents=True, exist_ok=True)
    save_tree(tree, s.output, meta)
    print("head top-1: " + ", ".join(f"{a:.3f}" for a in top1))
    print("head top-5: " + ", ".join(f"{a:.3f}" for a in top5))
    print(f"tree: {len(tree)} nodes, depth {max(len(p) for p in tree)}, expected tokens/step {expected:.3f}")
    say(f"saved {s.output} ({accuracy.total} positions from {len(examples)} examples of {info.name})")
    return meta
