"""summary.csv / table.csv rows and the PNG plots, from hand-made summaries (no model needed)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from medusa.evaluation.plots import (
    HEADS_PLOT,
    QUALITY_PLOT,
    TAU_PLOT,
    head_acceptance,
    run_plots,
    table_plots,
)
from medusa.evaluation.result_tables import (
    add_speedups,
    config_row,
    write_summary_csv,
    write_table_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary(
    strategy="multi-head",
    width=5,
    heads=2,
    tps=100.0,
    tau=2.0,
    heads_rates=(0.6, 0.3),
    bleu=0.25,
    chrf=31.5,
    speedup=None,
):
    out = {
        "settings": {
            "decoding_strategy": strategy,
            "beam_width": width,
            "use_no_medusa_heads": heads,
            "acceptance": "greedy",
        },
        "examples": 4,
        "metrics": {
            "bleu": bleu,
            "rouge1": 0.4,
            "rouge2": 0.2,
            "rougeL": 0.35,
            "sacrebleu": 5.5,
            "chrf": chrf,
        },
        "speed": {
            "rtf": 1 / tps,
            "tokens_per_second": tps,
            "tokens_per_step": tau,
            "generated_tokens": 200,
            "generation_seconds": 200 / tps,
            "decoding_steps": int(200 / tau),
            "head_acceptance": list(heads_rates),
        },
    }
    if speedup is not None:
        out["speedup_vs_single_head"] = speedup
        out["identical_to_single_head"] = 4
    return out


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_summary_csv_holds_the_summary_numbers(tmp_path):
    s = summary(speedup=1.7)
    rows = read_csv(write_summary_csv(tmp_path, s))
    assert len(rows) == 1
    row = rows[0]
    assert (row["config"], row["strategy"], row["beam_width"], row["heads"]) == (
        "w5-s2",
        "multi-head",
        "5",
        "2",
    )
    for key in ("bleu", "rouge1", "rouge2", "rougeL", "sacrebleu", "chrf"):
        assert float(row[key]) == s["metrics"][key]
    for key in ("rtf", "tokens_per_second", "tokens_per_step", "generation_seconds"):
        assert float(row[key]) == s["speed"][key]  # full precision, not rounded for display
    assert int(row["generated_tokens"]) == 200 and int(row["decoding_steps"]) == 100
    assert float(row["speedup_vs_single_head"]) == 1.7 and row["identical_to_single_head"] == "4"
    assert (float(row["head_1"]), float(row["head_2"])) == (0.6, 0.3)


def test_missing_and_nan_values_are_empty_cells(tmp_path):
    s = summary(strategy="single-head", heads_rates=())
    s["metrics"] = {}  # speed-only data (no references)
    s["speed"]["tokens_per_step"] = math.nan
    row = read_csv(write_summary_csv(tmp_path, s))[0]
    assert row["config"] == "single-head" and row["beam_width"] == "" and row["heads"] == ""
    assert row["bleu"] == "" and row["chrf"] == "" and row["tokens_per_step"] == ""
    assert row["speedup_vs_single_head"] == "" and "head_1" not in row


def test_table_csv_speedup_is_against_the_single_head_row(tmp_path):
    rows = [
        config_row(summary("single-head", tps=50.0, tau=1.0, heads_rates=()), "single-head"),
        config_row(summary(width=2, heads=2, tps=80.0, heads_rates=(0.5, 0.2)), "w2-s2"),
        config_row(
            summary(width=2, heads=5, tps=60.0, heads_rates=(0.5, 0.2, 0.1, 0.05, 0.0)), "w2-s5"
        ),
    ]
    add_speedups(rows)
    parsed = read_csv(write_table_csv(tmp_path, rows))
    assert [r["config"] for r in parsed] == ["single-head", "w2-s2", "w2-s5"]
    assert [float(r["speedup_vs_single_head"]) for r in parsed] == pytest.approx([1.0, 1.6, 1.2])
    assert [float(r["tokens_per_second"]) for r in parsed] == [50.0, 80.0, 60.0]
    assert (
        parsed[0]["head_1"] == ""
        and parsed[1]["head_3"] == ""
        and float(parsed[2]["head_5"]) == 0.0
    )


def test_no_single_head_row_means_no_speedup():
    rows = [config_row(summary(tps=80.0), "w5-s2")]
    add_speedups(rows)
    assert rows[0]["speedup_vs_single_head"] is None


def test_table_plots_are_pngs(tmp_path):
    rows = [config_row(summary("single-head", tps=50.0, tau=1.0, heads_rates=()), "single-head"),
            config_row(summary(width=2, heads=2, tps=80.0), "w2-s2")]
    made = table_plots(tmp_path, rows)
    assert sorted(p.name for p in made) == sorted([QUALITY_PLOT, TAU_PLOT, HEADS_PLOT])
    for p in made:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert not list(tmp_path.glob("*.tmp*"))  # written to a temp name, then renamed


def _figures_of(monkeypatch) -> list:
    import medusa.evaluation.plots

    figures: list = []
    monkeypatch.setattr(
        medusa.evaluation.plots, "_save", lambda fig, path: figures.append(fig) or path
    )
    return figures


def test_configurations_of_equal_quality_plot_their_speed(tmp_path, monkeypatch):
    """Greedy rows share one quality: the plot is RTF per configuration, titled with that quality,
    not a flat scatter in a meaningless band."""
    from medusa.evaluation.plots import quality_vs_rtf

    figures = _figures_of(monkeypatch)
    rows = [
        config_row(summary(width=w, heads=h, tps=50.0 + 10 * w + h), f"w{w}-s{h}")
        for w in (2, 5)
        for h in (2, 5)
    ]
    quality_vs_rtf(rows, tmp_path / QUALITY_PLOT)
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["config"] for r in rows]
    assert [round(b.get_width(), 6) for b in ax.patches] == [round(r["rtf"], 6) for r in rows]
    assert (
        "every configuration scores" in ax.get_title().lower()
        and f"{rows[0]['bleu']:.4g}" in ax.get_title()
    )


def test_configurations_of_different_quality_share_one_legend(tmp_path, monkeypatch):
    """Rows of different quality (a lossy rule): two scatter panels, one legend for both, and a
    y-range that holds every point with room around it."""
    from medusa.evaluation.plots import quality_vs_rtf

    figures = _figures_of(monkeypatch)
    rows = []
    for i, (w, h) in enumerate([(2, 2), (2, 5), (5, 2)]):
        s = summary(width=w, heads=h, tps=50.0 + 10 * i)
        s["metrics"]["bleu"] += 0.01 * i
        s["metrics"]["chrf"] += 1.5 * i
        rows.append(config_row(s, f"w{w}-s{h}"))
    quality_vs_rtf(rows, tmp_path / QUALITY_PLOT)
    fig = figures[0]
    assert len(fig.axes) == 2 and not any(ax.get_legend() for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [r["config"] for r in rows]
    for ax, key in zip(fig.axes, ("bleu", "chrf")):
        low, high = ax.get_ylim()
        values = [r[key] for r in rows]
        assert low < min(values) and high > max(values) and not any(ax.texts for ax in fig.axes)


def test_plots_with_nothing_to_show_are_skipped(tmp_path):
    s = summary("single-head", heads_rates=())
    s["metrics"] = {}
    s["speed"]["tokens_per_step"] = math.nan
    assert table_plots(tmp_path, [config_row(s)]) == [] and not list(tmp_path.iterdir())
    assert run_plots(tmp_path, config_row(summary("single-head", heads_rates=()))) == []
    assert (
        head_acceptance([config_row(summary(heads_rates=(math.nan, math.nan)))], tmp_path / "x.png")
        is None
    )


def test_a_medusa_run_gets_its_head_acceptance_plot(tmp_path):
    made = run_plots(tmp_path, config_row(summary(heads_rates=(0.7, 0.4, 0.2))))
    assert [p.name for p in made] == [HEADS_PLOT] and made[0].read_bytes().startswith(PNG_MAGIC)


def test_tree_rows_take_their_depth_from_the_tree_file(tmp_path):
    s = summary(strategy="tree", width=2, heads=2)
    # the built-in tree for -nmh 2
    assert config_row(s)["config"] == "tree" and config_row(s)["heads"] == 2
    s["tree_used"] = "heads/tree.json"
    row = read_csv(write_summary_csv(tmp_path, s))[0]
    assert (row["config"], row["beam_width"], row["heads"]) == ("tree", "", "")


@pytest.mark.parametrize("replaced_by", ["folder", "link", "link-at-tmp"])
def test_a_prediction_log_replaced_during_the_run_is_written_again_in_place(replaced_by, tmp_path):
    """A folder or a link put where the log (or its temporary file) was: the rows land in a plain
    file at the log's path, and nothing is written through a link to elsewhere."""
    from medusa.evaluation.results import PredictionLog

    path = tmp_path / "predictions.jsonl"
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the grader's\n")
    log = PredictionLog(path, resume=False)
    log.write({"index": 0, "prediction": "a"})
    path.unlink()
    if replaced_by == "folder":
        path.mkdir()
        (path / "inside").write_text("x")
    elif replaced_by == "link":
        path.symlink_to(elsewhere)
    else:
        path.with_name(path.name + ".tmp").symlink_to(elsewhere)
    log.close()
    assert path.is_file() and not path.is_symlink()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"index": 0, "prediction": "a"}
    ]
    assert elsewhere.read_text() == "not the grader's\n"
