"""The grading report of a ``--generator`` run: the course contract's checks, and the submission against ours.

"Ours" is a second pass, after the submission's, of our own strategy of the same name and ``--acceptance`` rule on
the same rows, prompts and engine (written to ``ours.jsonl``, resumable like the predictions). It runs only once the
submission has produced one example: a submission that fails everywhere costs no reference time. Agreement and
time per token compare the examples the submission completed; metrics compare all rows, a failed example
counting as an empty prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from medusa.console import say
from medusa.decoding import Strategy, make_strategy
from medusa.evaluation.metrics import SpeedStats
from medusa.evaluation.results import BASELINE, PREDICTIONS

GRADING = "grading.json"
OURS = "ours.jsonl"
METRIC_NAMES = {"bleu": "BLEU", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "sacrebleu": "sacreBLEU",
                "chrf": "chrF"}
STANDARD = ("sacrebleu", "chrf")  # printed with 2 decimals, as their own lines are


def grading_runs(strategy: Strategy, compare_single_head: bool) -> list[tuple[str, Strategy, str]]:
    """The passes of a --generator run, in order: the submission, ours, then single-head when asked and not ours."""
    runs = [("main", strategy, PREDICTIONS), ("ours", strategy, OURS)]
    if compare_single_head and strategy.name != "single-head":
        runs.append(("baseline", make_strategy("single-head"), BASELINE))
    return runs


def succeeded(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]


def _rtf(rows: list[dict]) -> float:
    return SpeedStats(seconds=sum(r["seconds"] for r in rows), tokens=sum(r["tokens"] for r in rows)).rtf


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def contract_checks(ok: list[dict], max_len: int, eos_id: int) -> dict:
    """How many completed outputs meet each rule of the course's contract, and which examples break it."""
    rules = {
        "one_dimensional": ("output is 1-D generated ids", lambda c: c["one_dimensional"]),
        "prompt_not_repeated": ("does not start with the prompt", lambda c: not c["starts_with_prompt"]),
        "within_length": (f"length <= max_output_len ({max_len})", lambda c: not c["over_length"]),
        "stops_at_eos": (f"nothing after EOS (id {eos_id})", lambda c: c["tokens_after_eos"] == 0),
    }
    out = {}
    for key, (label, rule) in rules.items():
        broken = [r["index"] for r in ok if not rule(r["checks"])]
        out[key] = {"label": label, "passed": len(ok) - len(broken), "of": len(ok), "broken_examples": broken}
    return out


def agreement(ok: list[dict], ours_by_index: dict[int, dict]) -> dict:
    """Identical outputs, and the share of our tokens the submission reproduced before its first difference."""
    pairs = [(r, ours_by_index[r["index"]]) for r in ok if r["index"] in ours_by_index]
    ours_tokens = sum(len(o["token_ids"]) for _, o in pairs)
    prefix = sum(_common_prefix(r["token_ids"], o["token_ids"]) for r, o in pairs)
    return {
        "examples": len(pairs),
        "identical": sum(r["token_ids"] == o["token_ids"] for r, o in pairs),
        "agreeing_prefix_share": prefix / ours_tokens if ours_tokens else math.nan,
        "differing_examples": [r["index"] for r, o in pairs if r["token_ids"] != o["token_ids"]],
    }


def grading_report(rows: list[dict], ours: list[dict] | None, metrics: dict, ours_metrics: dict, settings,
                   eos_id: int) -> dict:
    """Everything ``grading.json`` holds; ``ours`` is None when the reference pass was skipped. Both metric dicts
    come from the runner's own scoring, so the submission and ours are scored by one code path."""
    ok = succeeded(rows)
    report: dict = {
        "generator": settings.generator,
        "strategy": settings.decoding_strategy,
        "acceptance": settings.acceptance,
        "examples": len(rows),
        "completed": len(ok),
        "failed": [{"index": r["index"], "error": r["error"], "at": r.get("error_at")} for r in rows if r.get("error")],
        "checks": contract_checks(ok, settings.max_output_len, eos_id),
        "reference": None,
    }
    if ours is None:
        return report
    by_index = {r["index"]: r for r in ours}
    same_rows = [by_index[r["index"]] for r in ok if r["index"] in by_index]
    student_rtf, ours_rtf = _rtf(ok), _rtf(same_rows)
    report["reference"] = {
        "file": OURS,
        "agreement": agreement(ok, by_index),
        "metrics": {k: {"submission": metrics[k], "ours": ours_metrics[k], "difference": metrics[k] - ours_metrics[k]}
                    for k in METRIC_NAMES if k in metrics and k in ours_metrics},
        "seconds_per_token": {"submission": student_rtf, "ours": ours_rtf,
                              "ratio": student_rtf / ours_rtf if ours_rtf and not math.isnan(ours_rtf) else math.nan},
    }
    return report


def write_report(folder: Path, report: dict) -> Path:
    path = folder / GRADING
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def format_report(report: dict) -> list[str]:
    """The console lines of the report, one fact each."""
    n, done = report["examples"], report["completed"]
    lines = [f"grading: {report['generator']} ({report['strategy']}, {report['acceptance']} acceptance)",
             f"  completed examples: {done}/{n}"]
    for f in report["failed"]:
        lines.append(f"  failed [{f['index']}]: {f['error']}" + (f" ({f['at']})" if f["at"] else ""))
    for check in report["checks"].values():
        flag = "ok" if check["passed"] == check["of"] else "FLAG"
        broken = check["broken_examples"]
        more = f" — examples {', '.join(map(str, broken[:10]))}{' ...' if len(broken) > 10 else ''}" if broken else ""
        lines.append(f"  {check['label']}: {check['passed']}/{check['of']} {flag}{more}")
    ref = report["reference"]
    if ref is None:
        lines.append("  against ours: skipped (no example completed)")
        return lines
    a = ref["agreement"]
    share = a["agreeing_prefix_share"]
    lines.append(f"  token agreement with our {report['strategy']} ({report['acceptance']}): identical "
                 f"{a['identical']}/{a['examples']}, agreeing prefix "
                 + ("n/a" if math.isnan(share) else f"{100 * share:.1f}% of our tokens"))
    seed = [k for k in ref["metrics"] if k not in STANDARD]
    for keys, digits in ((seed, 4), ([k for k in ref["metrics"] if k in STANDARD], 2)):
        if keys:
            lines.append("  metrics, submission - ours: " + ", ".join(
                f"{METRIC_NAMES[k]} {m['difference']:+.{digits}f} ({m['submission']:.{digits}f} vs "
                f"{m['ours']:.{digits}f})" for k in keys for m in [ref["metrics"][k]]))
    t = ref["seconds_per_token"]
    if math.isnan(t["submission"]) or math.isnan(t["ours"]):
        lines.append("  time per token: n/a (no tokens generated)")
    else:
        lines.append(f"  time per token: {1000 * t['submission']:.2f} ms vs ours {1000 * t['ours']:.2f} ms "
                     f"({t['ratio']:.2f}x ours)")
    return lines


def print_report(report: dict, path: Path) -> None:
    print("\n".join(format_report(report)), flush=True)
    say(f"grading report: {path}")
