"""PNG plots of results rows (see :mod:`medusa.evaluation.result_tables`): quality against speed, τ, and per-head acceptance.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch), so a run
on a headless server or inside a test never opens a window.
"""

from __future__ import annotations

import math
from pathlib import Path

QUALITY_PLOT = "quality-vs-rtf.png"
TAU_PLOT = "tau.png"
HEADS_PLOT = "head-acceptance.png"
MARKERS = "osD^v<>pX*"


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def quality_vs_rtf(rows: list[dict], path: Path) -> Path | None:
    """BLEU-1 and chrF (one panel each) against RTF, a point per configuration: up and left is better."""
    rtf = [_number(r.get("rtf")) for r in rows]
    panels = [("bleu", "BLEU-1 (seed references)"), ("chrf", "chrF (raw references)")]
    if all(math.isnan(x) for x in rtf) or all(r.get(k) is None for r in rows for k, _ in panels):
        return None  # no references (speed-only data) or nothing generated: nothing to draw
    fig = _figure(10.0, 4.0)
    axes = fig.subplots(1, 2)
    for ax, (key, label) in zip(axes, panels):
        values = [_number(r.get(key)) for r in rows]
        for i, (x, y, r) in enumerate(zip(rtf, values, rows)):
            # a marker and a legend entry per configuration: greedy rows share one quality, so text labels
            # written beside the points would overprint each other
            ax.scatter([x], [y], marker=MARKERS[i % len(MARKERS)], label=r["config"])
        ax.set_xlabel("RTF (seconds per generated token)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle("Quality against speed, per configuration")
    return _save(fig, path)


def tau_per_config(rows: list[dict], path: Path) -> Path | None:
    """τ (tokens per decoding step) per configuration; single-head is 1 by definition."""
    taus = [_number(r.get("tokens_per_step")) for r in rows]
    if all(math.isnan(t) for t in taus):
        return None  # e.g. a student's generator: no steps counted
    fig = _figure(max(5.0, 0.9 * len(rows) + 2), 4.0)
    ax = fig.subplots()
    bars = ax.bar([r["config"] for r in rows], [0.0 if math.isnan(t) else t for t in taus])
    ax.bar_label(bars, labels=["n/a" if math.isnan(t) else f"{t:.2f}" for t in taus], fontsize=8)
    ax.set_ylabel("τ (tokens per decoding step)")
    ax.set_title("Tokens accepted per step, per configuration")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, path)


def head_acceptance(rows: list[dict], path: Path) -> Path | None:
    """Acceptance rate of head 1, 2, … (a line per configuration that drafted with heads)."""
    series = []
    for r in rows:
        rates = [_number(r[k]) for k in sorted((k for k in r if k.startswith("head_")), key=lambda k: int(k[5:]))]
        if any(not math.isnan(x) for x in rates):
            series.append((r["config"], rates))
    if not series:
        return None
    fig = _figure()
    ax = fig.subplots()
    for name, rates in series:
        ax.plot(range(1, len(rates) + 1), rates, marker="o", label=name)
    deepest = max(len(rates) for _, rates in series)
    ax.set_xticks(range(1, deepest + 1))
    ax.set_xlabel("head")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-head acceptance (head k accepted: a step keeps at least k + 1 tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def table_plots(folder: Path, rows: list[dict]) -> list[Path]:
    """All three plots of a results table; plots with nothing to show are skipped."""
    made = [quality_vs_rtf(rows, folder / QUALITY_PLOT), tau_per_config(rows, folder / TAU_PLOT),
            head_acceptance(rows, folder / HEADS_PLOT)]
    return [p for p in made if p is not None]


def run_plots(folder: Path, row: dict) -> list[Path]:
    """A single run: its per-head acceptance, where it drafted with heads (other plots compare configurations)."""
    made = head_acceptance([row], folder / HEADS_PLOT)
    return [made] if made is not None else []
