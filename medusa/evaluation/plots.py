"""PNG plots of results rows (see :mod:`medusa.evaluation.result_tables`): quality against speed, τ,
and per-head acceptance.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no global backend
switch), so a run on a headless server or inside a test never opens a window.
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


QUALITY_PANELS = [("bleu", "BLEU-1 (seed references)"), ("chrf", "chrF (raw references)")]


def _same(values: list[float]) -> bool:
    """One quality for every configuration (greedy verification is lossless, so a greedy table has
    one)."""
    known = [v for v in values if not math.isnan(v)]
    return bool(known) and max(known) - min(known) <= 1e-9 * max(1.0, abs(max(known)))


def quality_vs_rtf(rows: list[dict], path: Path) -> Path | None:
    """Quality against RTF, a point per configuration: up and left is better.

    When every configuration scores the same (a greedy, lossless table) a scatter would be a flat
    line in a meaningless band, so the plot is RTF per configuration instead, with the one shared
    quality in its title."""
    rtf = [_number(r.get("rtf")) for r in rows]
    if all(math.isnan(x) for x in rtf) or all(
        r.get(k) is None for r in rows for k, _ in QUALITY_PANELS
    ):
        return None  # no references (speed-only data) or nothing generated: nothing to draw
    qualities = {key: [_number(r.get(key)) for r in rows] for key, _ in QUALITY_PANELS}
    if all(_same(v) or all(math.isnan(x) for x in v) for v in qualities.values()):
        return _rtf_bars(rows, rtf, qualities, path)
    fig = _figure(10.0, 4.6)
    axes = fig.subplots(1, 2)
    for ax, (key, label) in zip(axes, QUALITY_PANELS):
        values = qualities[key]
        for i, (x, y, r) in enumerate(zip(rtf, values, rows)):
            # a marker per configuration and one legend for both panels: text beside close points
            # overprints
            ax.scatter(
                [x], [y], marker=MARKERS[i % len(MARKERS)], s=60, alpha=0.8, label=r["config"]
            )
        _pad_limits(ax, values)
        ax.set_xlabel("RTF (seconds per generated token)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=min(len(rows), 7))
    fig.suptitle("Quality against speed, per configuration (up and left is better)")
    return _save(fig, path)


def _pad_limits(ax, values: list[float]) -> None:
    """A y-range that shows the spread without inflating a tiny difference into the whole axis."""
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return
    low, high = min(known), max(known)
    pad = max(0.15 * (high - low), 0.05 * abs(high), 1e-3)
    ax.set_ylim(low - pad, high + pad)


def _rtf_bars(
    rows: list[dict], rtf: list[float], qualities: dict[str, list[float]], path: Path
) -> Path:
    """RTF per configuration (shorter is faster), titled with the quality they all share."""
    fig = _figure(max(6.0, 0.9 * len(rows) + 3), 4.0)
    ax = fig.subplots()
    names = [r["config"] for r in rows]
    bars = ax.barh(names, [0.0 if math.isnan(x) else x for x in rtf])
    ax.bar_label(
        bars, labels=["n/a" if math.isnan(x) else f"{x:.4f}" for x in rtf], fontsize=8, padding=2
    )
    ax.invert_yaxis()  # the table's order, top to bottom
    ax.set_xlabel("RTF (seconds per generated token; shorter is faster)")
    ax.grid(axis="x", alpha=0.3)
    shared = [f"{label.split(' (')[0]} {next(v for v in qualities[key] if not math.isnan(v)):.4g}"
              for key, label in QUALITY_PANELS if not all(math.isnan(v) for v in qualities[key])]
    ax.set_title(
        f"Every configuration scores {' and '.join(shared)}: they differ only in speed", fontsize=10
    )
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
        rates = [
            _number(r[k])
            for k in sorted((k for k in r if k.startswith("head_")), key=lambda k: int(k[5:]))
        ]
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
    """A single run: its per-head acceptance, where it drafted with heads (other plots compare
    configurations)."""
    made = head_acceptance([row], folder / HEADS_PLOT)
    return [made] if made is not None else []
