"""``python medusa.py calibrate-tree``: measure the heads on a model + dataset and save the best
tree as JSON."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from medusa.measure.calibrate import calibrate_tree, measure_head_accuracy
from medusa.console import say
from medusa.evaluation.data import load_examples
from medusa.model.batch_generate import batched_greedy
from medusa.errors import MedusaError
from medusa.model import stop_token_ids
from medusa.output_dir import check_output_file
from medusa.evaluation.prompts import encode_prompts
from medusa.evaluation.data_spec import DataSpec
from medusa.measure.measured_model import (
    MeasuredModelSettings,
    add_model_arguments,
    load_measured_model,
)
from medusa.decoding.trees import MAX_TREE_NODES, save_tree


@dataclass
class CalibrationSettings(MeasuredModelSettings):
    max_output_len: int = 50
    heads: int | None = None
    tree_size: int = 63
    max_rank: int = 10
    batch_size: int = 32  # prompts per batched greedy generation
    output: str = "tree.json"


HELPS = {"dataset": "calibrate on data you will NOT evaluate on",
         "num_examples": "first N rows of the dataset ({default})"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = CalibrationSettings()
    add_model_arguments(p, d)
    DataSpec.add_arguments(p, d, HELPS, only=("dataset", "num_examples"))
    p.add_argument("--max-output-len", "-mol", type=int, default=d.max_output_len,
                   help="greedy tokens generated per prompt, on which the heads are measured "
                   f"({d.max_output_len})")
    p.add_argument("--heads", type=int, default=None,
                   help="heads to measure (default: all the model has)")
    p.add_argument("--tree-size", type=int, default=d.tree_size,
                   help=f"nodes in the tree ({d.tree_size})")
    p.add_argument("--max-rank", type=int, default=d.max_rank,
                   help=f"ranks measured per head ({d.max_rank})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"prompts generated at once ({d.batch_size})")
    p.add_argument("--output", "-o", default=d.output,
                   help=f"where the tree JSON goes ({d.output})")


def check_max_rank(max_rank: int, vocab_size: int) -> None:
    """A head ranks only the vocabulary's tokens: ranks past it would be measured as never right,
    and saved so."""
    if max_rank > vocab_size:
        raise MedusaError(
            f"--max-rank {max_rank} is more than the model's vocabulary of {vocab_size} tokens:"
            f" pass --max-rank {min(CalibrationSettings.max_rank, vocab_size)} (at most"
            f" {vocab_size})"
        )


def run_calibration(s: CalibrationSettings) -> dict:
    """Greedy continuations of the dataset's prompts → per-head top-k hit rates → optimal tree →
    JSON."""
    for name, value in (
        ("--num-examples", s.num_examples),
        ("--tree-size", s.tree_size),
        ("--max-rank", s.max_rank),
        ("--batch-size", s.batch_size),
        ("--max-input-len", s.max_input_len),
        ("--max-output-len", s.max_output_len),
        ("--heads", s.heads),
    ):
        if value is not None and value < 1:
            raise MedusaError(f"{name} must be at least 1 (got {value})")
    if s.tree_size > MAX_TREE_NODES:  # --tree would refuse the file it writes
        raise MedusaError(f"--tree-size {s.tree_size} is too big: at most {MAX_TREE_NODES} nodes")
    check_output_file(Path(s.output), "--output")  # before the model loads, not after the work
    examples, info = load_examples(
        s.dataset, s.src_lang, s.tgt_lang, s.num_examples, s.hf_token, s.split
    )
    model, s = load_measured_model(s, "calibrate")
    heads = s.heads or model.num_heads
    if heads > model.num_heads:
        raise MedusaError(f"--heads {heads} is more than the model has ({model.num_heads})")
    check_max_rank(s.max_rank, model.vocab_size)
    stops = sorted(stop_token_ids(model.tokenizer, model.base_model))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else stops[0]
    prompts = encode_prompts(
        model.tokenizer,
        [ex.source for ex in examples],
        s.src_lang,
        s.tgt_lang,
        s.prompt_style,
        s.max_input_len,
    )
    outs = batched_greedy(model.base_model, prompts, s.max_output_len, stops, pad, s.batch_size,
                          progress="greedy continuations")
    sequences = [ids + out for ids, out in zip(prompts, outs)]
    prompt_lengths = [len(ids) for ids in prompts]
    accuracy = measure_head_accuracy(model, sequences, prompt_lengths, heads, s.max_rank)
    tree, expected = calibrate_tree(accuracy, s.tree_size)
    top1, top5 = accuracy.topk(1), accuracy.topk(min(5, s.max_rank))
    meta = {
        "model": model.info.base,
        "heads": model.info.heads,
        "heads_measured": heads,
        "dataset": info.name,
        "examples": len(examples),
        "positions": accuracy.total,
        "top1": top1,
        "top5": top5,
        "accuracies": accuracy.accuracies(),
        "expected_tokens_per_step": expected,
    }
    Path(s.output).parent.mkdir(parents=True, exist_ok=True)
    save_tree(tree, s.output, meta)
    print("head top-1: " + ", ".join(f"{a:.3f}" for a in top1))
    print("head top-5: " + ", ".join(f"{a:.3f}" for a in top5))
    print(
        f"tree: {len(tree)} nodes, depth {max(len(p) for p in tree)}, expected tokens/step"
        f" {expected:.3f}"
    )
    say(
        f"saved {s.output} ({accuracy.total} positions from {len(examples)} examples of"
        f" {info.name})"
    )
    return meta
