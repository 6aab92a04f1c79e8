"""``python medusa.py measure-acceptance``: per-head top-1/top-5 and greedy τ of every strategy, on
whole datasets.

Greedy continuations come from batched ``generate``; :mod:`medusa.measure.replay` then turns one
teacher-forced pass into the accepted length of every step of every strategy. Figures are written as
JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medusa.model.batch_generate import batched_greedy
from medusa.console import say
from medusa.evaluation.data import load_examples
from medusa.decoding import DecodeSettings, make_strategy
from medusa.errors import MedusaError
from medusa.model import stop_token_ids
from medusa.model.embedded import EMBEDDED_DATASET
from medusa.output_dir import claimed_folder
from medusa.evaluation.prompts import encode_prompts
from medusa.measure.calibrate import measure_head_accuracy
from medusa.arg_types import COUNT
from medusa.evaluation.data_spec import DataSpec
from medusa.measure.measured_model import (
    MeasuredModelSettings,
    add_model_arguments,
    load_measured_model,
)
from medusa.measure.replay import drafted_replay, head_topk_hits, ranked_positions, replay_steps

DEFAULT_GRID = ("2:2", "2:5", "5:2", "5:5", "10:2", "10:5")  # the assignment's W × S grid, as W:S


@dataclass
class AcceptanceSettings(MeasuredModelSettings):
    dataset: list[str] = field(default_factory=lambda: [EMBEDDED_DATASET])  # as the main run
    num_examples: int | None = None  # every row
    max_output_len: int = 128
    multi_head: list[str] = field(default_factory=lambda: list(DEFAULT_GRID))
    # tree JSONs or "builtin"; none: the heads' own tree, else built-in
    trees: list[str] = field(default_factory=list)
    batch_size: int = 32
    output_dir: str = "acceptance"

    @property
    def datasets(self) -> list[str]:
        return list(self.dataset)


def parse_grid(items: list[str], num_heads: int) -> list[tuple[int, int]]:
    """``W:S`` strings to (beam width, heads); refuses more heads than the model has."""
    grid = []
    for item in items:
        try:
            w, s = (int(x) for x in item.split(":"))
        except ValueError:
            raise MedusaError(
                f"--multi-head {item!r}: write beam width and heads as W:S, e.g. 5:2"
            ) from None
        if w < 1 or s < 1:
            raise MedusaError(f"--multi-head {item}: W and S must be at least 1")
        if s > num_heads:
            raise MedusaError(f"--multi-head {item} needs {s} heads, the model has {num_heads}")
        grid.append((w, s))
    return grid


def strategies_for(s: AcceptanceSettings, model) -> dict[str, DecodeSettings]:
    out = {f"multi-head W{w} S{k}": DecodeSettings(strategy="multi-head", num_heads=k, beam_width=w)
           for w, k in parse_grid(s.multi_head, model.num_heads)}
    for tree in s.trees or [model.info.extra.get("tree") or "builtin"]:
        tree_file = None if tree == "builtin" else tree
        label = (
            f"tree ({Path(tree_file).name})"
            if tree_file
            else f"tree (built-in, {model.num_heads} heads)"
        )
        if label in out:  # two files of the same name
            label = f"tree ({tree_file})"
        out[label] = DecodeSettings(strategy="tree", num_heads=model.num_heads, tree_file=tree_file)
    return out


def measure(s: AcceptanceSettings) -> dict:
    if (
        s.max_output_len < 2
        or s.batch_size < 1
        or s.max_input_len < 1
        or (s.num_examples is not None and s.num_examples < 1)
    ):
        raise MedusaError(
            "--max-output-len must be at least 2, and --batch-size, --max-input-len and "
            "--num-examples at least 1"
        )
    model, s = load_measured_model(s, "measure")
    strategies = {name: make_strategy(d) for name, d in strategies_for(s, model).items()}
    for name, strategy in strategies.items():
        if strategy.num_heads > model.num_heads:
            raise MedusaError(
                f"{name} is {strategy.num_heads} levels deep but the model has {model.num_heads}"
                " heads; use a shallower --tree"
            )
    max_rank = max([10] + [d.beam_width for d in strategies_for(s, model).values()]
                   + [getattr(st, "max_rank", 0) for st in strategies.values()])
    stops = stop_token_ids(model.tokenizer, model.base_model)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else min(stops)
    report: dict = {
        "model": model.info.base,
        "heads": model.info.heads,
        "max_output_len": s.max_output_len,
        "prompt_style": s.prompt_style,
        "dtype": model.info.extra.get("dtype"),
        "device": model.info.extra.get("device"),
        "datasets": {},
    }
    for name in s.datasets:
        examples, info = load_examples(
            name, s.src_lang, s.tgt_lang, s.num_examples, s.hf_token, s.split
        )
        prompts = encode_prompts(
            model.tokenizer,
            [ex.source for ex in examples],
            s.src_lang,
            s.tgt_lang,
            s.prompt_style,
            s.max_input_len,
        )
        gens = batched_greedy(
            model.base_model,
            prompts,
            s.max_output_len,
            sorted(stops),
            pad,
            s.batch_size,
            progress=f"greedy outputs of {name}",
        )
        steps: dict[str, list[int]] = {k: [] for k in strategies}
        extra: dict = {}
        # drafts that depend on the tokens above them: drafted at every step
        if model.path_dependent_heads:
            say(
                f"{name}: replaying {len(strategies)} strategies on {len(examples)} rows, drafting"
                f" each step with the {model.heads.name} drafter"
            )
            hits, positions = _teacher_forced_hits(model, prompts, gens)
            per_row = drafted_replay(
                model,
                strategies,
                list(zip(prompts, gens)),
                s.max_output_len,
                stops,
                s.batch_size,
                progress=f"drafted replay of {name}",
            )
            steps = {key: [n for row in rows for n in row] for key, rows in per_row.items()}
            extra = {"tau_method": "replayed, drafted per step"}
        else:
            say(f"{name}: replaying {len(strategies)} strategies on {len(examples)} rows")
            ranked = ranked_positions(
                model, list(zip(prompts, gens)), model.num_heads, max_rank, s.batch_size
            )
            hits, positions = None, 0
            for gen, rk in zip(gens, ranked):
                h, n = head_topk_hits(rk, gen)
                hits = h if hits is None else hits + h
                positions += n
                for key, strategy in strategies.items():
                    steps[key] += replay_steps(strategy, gen, rk, s.max_output_len, stops)
            extra = {"tau_method": "replayed"}
        denom = max(positions, 1)
        entry = {
            "rows": len(examples),
            "generated_tokens": sum(len(g) for g in gens),
            "positions": positions,
            "top1": [round(x / denom, 4) for x in hits[0].tolist()],
            "top5": [round(x / denom, 4) for x in hits[1].tolist()],
            "tau": {k: round(sum(v) / max(len(v), 1), 4) for k, v in steps.items()},
            "steps": {k: len(v) for k, v in steps.items()},
            **extra,
        }
        report["datasets"][info.name] = entry
    return report


def _teacher_forced_hits(
    model, prompts: list[list[int]], gens: list[list[int]]
) -> tuple[torch.Tensor, int]:
    """Each head's top-1 and top-5 hits [2, K] below the true tokens (the path a node is accepted
    on), over the same positions as the replay's :func:`~medusa.measure.replay.head_topk_hits`."""
    k = model.num_heads
    rows = [(p, g) for p, g in zip(prompts, gens) if len(g) > k]
    if not rows:
        return torch.zeros(2, k, dtype=torch.long), 0
    acc = measure_head_accuracy(
        model, [p + g for p, g in rows], [len(p) for p, _ in rows], k, max_rank=5
    )
    return (
        torch.tensor([[row[0] for row in acc.hits], [sum(row[:5]) for row in acc.hits]]),
        acc.total,
    )


def markdown(report: dict) -> str:
    lines = [f"Model: {report['model']}; heads: {report['heads']}; greedy acceptance; up to "
             f"{report['max_output_len']} new tokens; {report['dtype']} on {report['device']}.", ""]
    names = list(report["datasets"])
    first = report["datasets"][names[0]]
    k = len(first["top1"])
    lines += [
        "| data | rows | positions | "
        + " | ".join(f"head {i + 1} top-1 / top-5" for i in range(k))
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in range(k)) + " |",
    ]
    for name, e in report["datasets"].items():
        lines.append(
            f"| {name} | {e['rows']} | {e['positions']} | "
            + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in zip(e["top1"], e["top5"]))
            + " |"
        )
    lines += ["", "| strategy | " + " | ".join(f"τ {n}" for n in names) + " |",
              "| --- | " + " | ".join("---" for _ in names) + " |"]
    for strat in first["tau"]:
        lines.append(
            f"| {strat} | "
            + " | ".join(f"{report['datasets'][n]['tau'][strat]:.3f}" for n in names)
            + " |"
        )
    return "\n".join(lines) + "\n"


def run_measure(s: AcceptanceSettings) -> dict:
    out = Path(s.output_dir)
    with claimed_folder(out):  # checked and locked before the model loads
        return _write_report(measure(s), out)


def _write_report(report: dict, out: Path) -> dict:
    (out / "acceptance.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    table = markdown(report)
    (out / "acceptance.md").write_text(table, encoding="utf-8")
    print(table)
    say(f"wrote {out / 'acceptance.json'} and {out / 'acceptance.md'}")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = AcceptanceSettings()
    add_model_arguments(p, d)
    DataSpec.add_arguments(p, d, {
        "dataset": "data whose prompts are measured: hub id, local file/folder or a shipped sample "
        f"(repeatable; default {d.dataset[0]}, as the main run)",
        "num_examples": "first N rows of each dataset (all)"},
        only=("dataset", "num_examples"), many=True)
    p.add_argument("--max-output-len", "-mol", type=COUNT, default=d.max_output_len,
                   help=f"greedy tokens generated per prompt, then replayed ({d.max_output_len})")
    p.add_argument(
        "--multi-head",
        action="append",
        default=None,
        metavar="W:S",
        help="a multi-head config to replay (repeatable; default the grid "
        + " ".join(DEFAULT_GRID)
        + ")",
    )
    p.add_argument(
        "--tree",
        dest="trees",
        action="append",
        default=None,
        help=(
            "tree JSON to replay (repeatable, to compare trees in one pass; 'builtin' for the"
            " built-in tree; default: the tree saved beside the heads, else the built-in one)"
        ),
    )
    p.add_argument("--batch-size", type=COUNT, default=d.batch_size,
                   help=f"prompts generated and replayed together ({d.batch_size})")
    p.add_argument(
        "--output-dir",
        "-o",
        default=d.output_dir,
        help=f"where the report is written ({d.output_dir})",
    )


def settings_from(args: dict) -> AcceptanceSettings:
    d = AcceptanceSettings()
    args = dict(args)
    args["dataset"] = args["dataset"] or d.dataset
    args["multi_head"] = args["multi_head"] or d.multi_head
    args["trees"] = args["trees"] or []
    return AcceptanceSettings(**args)
