"""Flat rows of a run's results for spreadsheets: ``summary.csv`` for every run, ``table.csv`` for
the course table.

``summary.json`` is nested (metrics, speed, settings, …); a CSV row holds the numbers a results
table compares, one configuration per row, so several runs can be pasted together or plotted without
parsing JSON.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from medusa.decoding import strategy_class

SUMMARY_CSV = "summary.csv"
TABLE_CSV = "table.csv"
QUALITY = ("bleu", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf")
SPEED = (
    "rtf",
    "tokens_per_second",
    "tokens_per_step",
    "generated_tokens",
    "generation_seconds",
    "decoding_steps",
)
FIELDS = ("config", "strategy", "beam_width", "heads", "acceptance", "examples", *QUALITY, *SPEED,
          "speedup_vs_single_head", "identical_to_single_head", "processes", "gpus")


def config_name(strategy: str, beam_width: int | None, heads: int | None) -> str:
    """The short name of a configuration, as the table's sub-folders are named (``single-head``,
    ``w2-s5``, …): the strategy's class says it."""
    return strategy_class(strategy).config_name(beam_width, heads)


def config_row(summary: dict, name: str | None = None) -> dict:
    """One flat row from a run's summary: configuration, quality, speed, per-head acceptance
    (``head_1`` …)."""
    settings, speed = summary["settings"], summary["speed"]
    strategy = settings["decoding_strategy"]
    kind = strategy_class(strategy)
    multi = kind.uses_heads
    # a tree file sets its own depth; -nmh counts only for multi-head and the built-in tree
    heads = settings["use_no_medusa_heads"] if multi and not summary.get("tree_used") else None
    row = {
        "config": (
            name or config_name(strategy, settings["beam_width"], settings["use_no_medusa_heads"])
        ),
        "strategy": strategy,
        "beam_width": settings["beam_width"] if kind.uses_beams else None,
        "heads": heads,
        "acceptance": settings["acceptance"] if multi else None,
        "examples": summary["examples"],
        **{k: summary["metrics"].get(k) for k in QUALITY},
        **{k: speed.get(k) for k in SPEED},
        "speedup_vs_single_head": summary.get("speedup_vs_single_head"),
        "identical_to_single_head": summary.get("identical_to_single_head"),
        # a data-parallel launch's processes, and the GPUs they used
        "processes": summary.get("processes"),
        "gpus": summary.get("gpus"),
        # a graded submission's (not a CSV column)
        "failed_examples": summary.get("failed_examples", 0),
    }
    for h, rate in enumerate(speed.get("head_acceptance") or []):
        row[f"head_{h + 1}"] = rate
    return row


def add_speedups(rows: list[dict]) -> None:
    """Tokens/s of each row over the single-head row's (the table's baseline); nothing when there is
    none."""
    base = next((r for r in rows if r["strategy"] == "single-head"), None)
    base_rate = base["tokens_per_second"] if base else None
    for r in rows:
        ok = base_rate and r["tokens_per_second"] is not None and not math.isnan(base_rate)
        r["speedup_vs_single_head"] = r["tokens_per_second"] / base_rate if ok else None


def _cell(value) -> object:
    """Missing and NaN values are empty cells (what spreadsheets read as "no value")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows with every column any row has (per-head columns vary); written to a temp file, then
    renamed."""
    heads = max((int(k.split("_")[1]) for r in rows for k in r if k.startswith("head_")), default=0)
    fields = [*FIELDS, *(f"head_{h}" for h in range(1, heads + 1))]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _cell(r.get(k)) for k in fields} for r in rows)
    os.replace(tmp, path)
    return path


def write_summary_csv(folder: Path, summary: dict) -> Path:
    return write_rows(folder / SUMMARY_CSV, [config_row(summary)])


def write_table_csv(folder: Path, rows: list[dict]) -> Path:
    return write_rows(folder / TABLE_CSV, rows)
