"""The grading report of a ``--generator`` run: the course contract's checks, and the submission
against ours.

"Ours" is a second pass, after the submission's, on the grader's own model (the submission's process
never touches it), with the same rows, prompts and engine, written to its own file and resumable
like the predictions:

- for a ``multi-head`` submission the reference is, by default, the course reference: the course's
own algorithm
  (``--acceptance rescore``) on the head distributions the course's API exposes
  (:func:`medusa.decoding.multi_head.course_reference`); a second, labelled reference is our
  lossless multi-head (greedy acceptance: single-head's tokens), or the course reference when
  ``--acceptance`` names another rule;
- for a ``single-head`` submission, our single-head.

The references run only once the submission has produced one example: one that fails everywhere
costs no reference time. Agreement and time per token compare the examples the submission completed;
metrics compare all rows, a failed example counting as an empty prediction. Time per token counts
the ids the submission generated (returned ids minus an echoed prompt), never the prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from medusa.console import say
from medusa.decoding import DecodeSettings, Strategy, make_strategy
from medusa.evaluation.metrics import SpeedStats
from medusa.evaluation.results import BASELINE, PREDICTIONS

GRADING = "grading.json"
OURS = "ours.jsonl"
SECOND = {"lossless": "ours-lossless.jsonl", "course": "ours-course.jsonl"}
METRIC_NAMES = {
    "bleu": "BLEU",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "sacrebleu": "sacreBLEU",
    "chrf": "chrF",
}
STANDARD = ("sacrebleu", "chrf")  # printed with 2 decimals, as their own lines are
NO_EXAMPLE = "n/a (no completed example)"


@dataclass
class Pass:
    """One decoding pass of a grading run: ``role`` main (the submission), ours, second or baseline.
    """

    role: str
    strategy: Strategy | None
    file: str
    label: str = ""
    name: str = ""  # how the report calls a reference: ours, lossless, course


def describe(strategy: Strategy) -> str:
    """How a reference decodes, for the report's lines."""
    if getattr(strategy, "is_course_reference", False):
        return "the course reference: multi-head, rescore, heads as the course API returns them"
    acceptance = getattr(strategy, "acceptance", None)
    if acceptance is None:
        return f"our {strategy.name}"
    lossless = ": single-head's tokens" if acceptance.name == "greedy" else ""
    return f"our {strategy.name}, {acceptance.name} acceptance{lossless}"


def second_reference(decoding: DecodeSettings, course: bool = True) -> tuple[str, Strategy] | None:
    """Beside a multi-head reference: the lossless one, or the course reference when ours is not it
    (and the drafter can answer the course API: ``course``)."""
    if decoding.strategy != "multi-head" or (not course and not decoding.course_reference):
        return None
    if decoding.course_reference:
        return "lossless", make_strategy(
            DecodeSettings("multi-head", decoding.num_heads, decoding.beam_width)
        )
    return "course", make_strategy(
        DecodeSettings(
            "multi-head", decoding.num_heads, decoding.beam_width, "rescore", course_reference=True
        )
    )


def grading_runs(strategy: Strategy, decoding: DecodeSettings, compare_single_head: bool,
                 course: bool = True) -> list[Pass]:
    """The passes of a --generator run, in order: the submission, ours, the second reference, then
    single-head when asked and not ours already."""
    runs = [
        Pass("main", None, PREDICTIONS),
        Pass("ours", strategy, OURS, describe(strategy), "ours"),
    ]
    second = second_reference(decoding, course)
    if second is not None:
        kind, other = second
        runs.append(Pass("second", other, SECOND[kind], describe(other), kind))
    if compare_single_head and strategy.name != "single-head":
        runs.append(Pass("baseline", make_strategy("single-head"), BASELINE, "our single-head"))
    return runs


def succeeded(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("error")]


def generated(row: dict) -> int | None:
    """The tokens a row's decoder generated: a submission's returned ids minus an echoed prompt
    (None when that cannot be told), our decoders' output."""
    return row["generated_tokens"] if "generated_tokens" in row else row["tokens"]


def timed_rows(rows: list[dict]) -> list[dict]:
    """Completed rows whose generated token count is known: what speed is measured on."""
    return [r for r in rows if not r.get("error") and generated(r) is not None]


def _rtf(rows: list[dict]) -> float:
    rows = timed_rows(rows)
    return SpeedStats(
        seconds=sum(r["seconds"] for r in rows), tokens=sum(generated(r) for r in rows)
    ).rtf


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _empty(checks: dict) -> bool:
    count = checks.get("generated_tokens")
    return count == 0 if "generated_tokens" in checks else checks.get("returned_tokens") == 0


def contract_checks(ok: list[dict], max_len: int, eos_id: int) -> dict:
    """How many completed outputs meet each rule of the course's contract, and which examples break
    it."""
    rules = {
        "not_empty": ("output is not empty", lambda c: not _empty(c)),
        "one_dimensional": ("output is 1-D generated ids", lambda c: c["one_dimensional"]),
        "prompt_not_repeated": (
            "does not start with the prompt",
            lambda c: not c["starts_with_prompt"] and not c.get("partial_prompt_echo"),
        ),
        "within_length": (f"length <= max_output_len ({max_len})", lambda c: not c["over_length"]),
        "stops_at_eos": (f"nothing after EOS (id {eos_id})", lambda c: c["tokens_after_eos"] == 0),
    }
    out = {}
    for key, (label, rule) in rules.items():
        broken = [r["index"] for r in ok if not rule(r["checks"])]
        out[key] = {
            "label": label,
            "passed": len(ok) - len(broken),
            "of": len(ok),
            "broken_examples": broken,
        }
    return out


def agreement(ok: list[dict], ours_by_index: dict[int, dict]) -> dict:
    """Identical outputs, and the share of our tokens the submission reproduced before its first
    difference."""
    pairs = [(r, ours_by_index[r["index"]]) for r in ok if r["index"] in ours_by_index]
    ours_tokens = sum(len(o["token_ids"]) for _, o in pairs)
    prefix = sum(_common_prefix(r["token_ids"], o["token_ids"]) for r, o in pairs)
    return {
        "examples": len(pairs),
        "identical": sum(r["token_ids"] == o["token_ids"] for r, o in pairs),
        "agreeing_prefix_share": prefix / ours_tokens if ours_tokens else math.nan,
        "differing_examples": [r["index"] for r, o in pairs if r["token_ids"] != o["token_ids"]],
    }


def compare(
    rows: list[dict], ref_rows: list[dict], metrics: dict, ref_metrics: dict, ref: Pass
) -> dict:
    """The submission against one reference pass."""
    ok = succeeded(rows)
    by_index = {r["index"]: r for r in ref_rows}
    timed = timed_rows(rows)
    same_rows = [by_index[r["index"]] for r in timed if r["index"] in by_index]
    student_rtf, ref_rtf = _rtf(timed), _rtf(same_rows)
    return {
        "name": ref.name,
        "file": ref.file,
        "label": ref.label,
        "agreement": agreement(ok, by_index),
        "metrics": {
            k: {
                "submission": metrics[k],
                "ours": ref_metrics[k],
                "difference": metrics[k] - ref_metrics[k],
            }
            for k in METRIC_NAMES
            if k in metrics and k in ref_metrics
        },
        "seconds_per_token": {
            "submission": student_rtf,
            "ours": ref_rtf,
            "examples": len(timed),
            "ratio": student_rtf / ref_rtf if ref_rtf and not math.isnan(ref_rtf) else math.nan,
        },
    }


def grading_report(rows: list[dict], references: list[dict], settings, eos_id: int) -> dict:
    """Everything ``grading.json`` holds; ``references`` are :func:`compare`'s results, ours first
    (none when the reference passes were skipped). Every metric comes from the runner's own scoring,
    one code path for all."""
    ok = succeeded(rows)
    report: dict = {
        "generator": settings.generator,
        "strategy": settings.decoding_strategy,
        "acceptance": settings.acceptance,
        "sandbox": bool(getattr(settings, "sandbox", False)),
        "examples": len(rows),
        "completed": len(ok),
        "failed": [
            {"index": r["index"], "error": r["error"], "at": r.get("error_at")}
            for r in rows
            if r.get("error")
        ],
        "empty": [r["index"] for r in ok if _empty(r["checks"])],
        "unknown_generated_count": [r["index"] for r in ok if generated(r) is None],
        "checks": contract_checks(ok, settings.max_output_len, eos_id),
        "reference": references[0] if references else None,
        "second_reference": references[1] if len(references) > 1 else None,
    }
    return report


def write_report(folder: Path, report: dict) -> Path:
    path = folder / GRADING
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _reference_lines(ref: dict) -> list[str]:
    name = ref.get("name") or "ours"
    a = ref["agreement"]
    share = a["agreeing_prefix_share"]
    lines = [f"  {name}: {ref['label']} ({ref['file']})",
             f"    token agreement: identical {a['identical']}/{a['examples']}, agreeing prefix "
             + ("n/a" if math.isnan(share) else f"{100 * share:.1f}% of the reference's tokens")]
    seed = [k for k in ref["metrics"] if k not in STANDARD]
    for keys, digits in ((seed, 4), ([k for k in ref["metrics"] if k in STANDARD], 2)):
        if keys:
            lines.append(f"    metrics, submission - {name}: " + ", ".join(
                f"{METRIC_NAMES[k]} {m['difference']:+.{digits}f} ({m['submission']:.{digits}f} vs "
                f"{m['ours']:.{digits}f})" for k in keys for m in [ref["metrics"][k]]))
    t = ref["seconds_per_token"]
    if math.isnan(t["submission"]) or math.isnan(t["ours"]):
        lines.append("    time per token: n/a (no generated tokens counted)")
    else:
        lines.append(
            f"    time per token: {1000 * t['submission']:.2f} ms vs {name} {1000 * t['ours']:.2f}"
            f" ms ({t['ratio']:.2f}x {name})"
        )
    return lines


def format_report(report: dict) -> list[str]:
    """The console lines of the report, one fact each."""
    n, done = report["examples"], report["completed"]
    lines = [
        f"grading: {report['generator']} ({report['strategy']}, {report['acceptance']} acceptance"
        + (", sandboxed)" if report.get("sandbox") else ")"),
        f"  completed examples: {done}/{n}",
        f"  failed or empty: {len(report['failed']) + len(report['empty'])}/{n}",
    ]
    for f in report["failed"]:
        lines.append(
            f"  failed [{f['index']}]: {f['error']}" + (f" ({f['at']})" if f["at"] else "")
        )
    for check in report["checks"].values():
        if not check["of"]:
            lines.append(f"  {check['label']}: {NO_EXAMPLE}")
            continue
        flag = "ok" if check["passed"] == check["of"] else "FLAG"
        broken = check["broken_examples"]
        more = (
            f" — examples {', '.join(map(str, broken[:10]))}{' ...' if len(broken) > 10 else ''}"
            if broken
            else ""
        )
        lines.append(f"  {check['label']}: {check['passed']}/{check['of']} {flag}{more}")
    unknown = report.get("unknown_generated_count") or []
    if unknown:
        lines.append(
            "  generated ids unknown (the output starts with part of the prompt): examples "
            f"{', '.join(map(str, unknown[:10]))}; left out of the time per token"
        )
    if report["reference"] is None:
        lines.append("  against ours: skipped (no example completed)")
        return lines
    lines += _reference_lines(report["reference"])
    if report.get("second_reference"):
        lines += _reference_lines(report["second_reference"])
    return lines


def print_report(report: dict, path: Path) -> None:
    print("\n".join(format_report(report)), flush=True)
    say(f"grading report: {path}")
