"""The figures say what the tables say (issue 20): every test reads the plotted values back
from the figure's artists and compares them with the cells of the tables.

- ``accuracy.png``: one row of panels per table (single-source results apart from
  multi-source ones), open-set tables plot the H-score and the known- and unknown-class
  accuracy, error bars are the spread the tables show (std or standard error) and the title
  says which and over how many seeds, a cell of one run is a point without an error bar;
- ``robustness.png``: the mean panel is the robustness table's means (clean, per severity and
  the mean corruption accuracy with ``missing``) with their error bars, curves have their own
  markers and offsets;
- ``curves.png``: whole epochs on the x axis.
"""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from figure_checks import assert_readable  # noqa: E402
from merdg.diagnostics.plots import figure_curves  # noqa: E402
from merdg.evaluators.corruptions import (  # noqa: E402
    MEANS_PANEL,
    figure_severity_curves,
    severity_curves,
    severity_means,
)
from merdg.experiments.plots import figure_accuracy  # noqa: E402
from merdg.experiments.report import ExperimentView, accuracy_panels  # noqa: E402
from merdg.experiments.results import build_tables  # noqa: E402
from merdg.plotting import pyplot  # noqa: E402

MULTI = json.dumps({"split_seed": 0})
SINGLE = json.dumps({"setting": "single-source", "split_seed": 0})
OPEN = json.dumps({"open_set": True, "split_seed": 0})


def row(settings, algorithm, column, seed, rng, **metrics):
    return {"dataset": "toy", "settings": settings, "modalities": "a+b", "algorithm": algorithm,
            "target": column.split("->")[-1], "column": column, "seed": seed,
            "hparams_seed": 0, "selection": "source_val", "path": f"{settings}{algorithm}"
            f"{column}{seed}", "val_acc": rng.uniform(0.5, 0.9), "val_loss": 1.0,
            "target_acc": rng.uniform(0.3, 0.8), **metrics}


def rows_of(settings, columns, seeds, rng, algorithms=("ERM", "MERDG"), **extra):
    return [row(settings, a, c, s, rng, **{k: rng.uniform(0.1, 0.9) for k in extra})
            for a in algorithms for c in columns for s in seeds]


def plotted(fig) -> dict[str, dict[str, object]]:
    """``{panel title: {gid: value}}``: a bar's height, a point's y, an error bar's
    (low, high)."""
    out = {}
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found = {}
        for artist in ax.get_children():
            gid = artist.get_gid()
            if gid is None:
                continue
            if isinstance(artist, Rectangle):
                found[gid] = ("bar", artist.get_height())
            elif isinstance(artist, Line2D):
                found[gid] = ("line", list(artist.get_xdata()), list(artist.get_ydata()))
            elif isinstance(artist, LineCollection):
                found[gid] = ("error", [(seg[0][1], seg[1][1]) for seg in artist.get_segments()])
        out[ax.get_title().replace("-\n", "-").replace("\n", " ")] = found  # unwrapped
    return out


def suptitle(fig) -> str:
    return fig._suptitle.get_text().replace("-\n", "-").replace("\n", " ")


# --- accuracy.png -------------------------------------------------------------------------

def test_single_source_results_have_their_own_panels(tmp_path):
    rng = np.random.default_rng(0)
    rows = (rows_of(MULTI, ["d0", "d1"], [0, 1, 2], rng)
            + rows_of(SINGLE, ["d1->d0", "d0->d1"], [0, 1, 2], rng))
    fig = figure_accuracy(accuracy_panels(rows), "std")
    assert_readable(fig)
    data = plotted(fig)
    assert list(data) == ["toy: source-validation accuracy", "toy: target accuracy",
                          "toy (single-source, source->target): source-validation accuracy",
                          "toy (single-source, source->target): target accuracy"]
    tables = build_tables(rows, "source_val", "target_acc")
    for settings, title in ((MULTI, "toy: target accuracy"),
                            (SINGLE, "toy (single-source, source->target): target accuracy")):
        cells = tables[("toy", settings)]
        for (mods, algo), per_column in cells.items():
            for column, cell in per_column.items():
                kind, height = data[title][f"{mods} {algo}|{column}"]
                assert kind == "bar" and height == pytest.approx(100 * cell.mean)
                _, [(low, high)] = data[title][f"{mods} {algo}|{column}|std"]
                assert (high - low) / 2 == pytest.approx(100 * cell.std)
    assert "bars: mean ± sample std over n = 3 seeds" in suptitle(fig)
    pyplot().close(fig)


def test_error_bars_say_standard_error_and_one_run_is_a_point():
    rng = np.random.default_rng(1)
    rows = rows_of(MULTI, ["d0", "d1"], [0, 1, 2, 3], rng, algorithms=("ERM",))
    rows += rows_of(MULTI, ["d0", "d1"], [0], rng, algorithms=("MERDG",))
    fig = figure_accuracy(accuracy_panels(rows), "se")
    data = plotted(fig)["toy: target accuracy"]
    cells = build_tables(rows, "source_val", "target_acc")[("toy", MULTI)]
    erm, merdg = cells[("a+b", "ERM")], cells[("a+b", "MERDG")]
    _, [(low, high)] = data["a+b ERM|avg|se"]
    assert erm["avg"].n == 4 and (high - low) / 2 == pytest.approx(100 * erm["avg"].se)
    kind, _, ys = data["a+b MERDG|d1"]  # one run: a point, without an error bar
    assert kind == "line" and ys == [pytest.approx(100 * merdg["d1"].mean)]
    assert not any(gid.startswith("a+b MERDG|") and gid.endswith("|se") for gid in data)
    title = suptitle(fig)
    assert "bars: mean ± standard error over n = 4 seeds" in title
    assert "a point: one run (n = 1, no spread)" in title
    pyplot().close(fig)


def test_open_set_runs_plot_the_h_score_and_known_and_unknown_accuracy():
    rng = np.random.default_rng(2)
    rows = rows_of(OPEN, ["d0", "d1"], [0, 1], rng, h_score=0, known_acc=0, unknown_acc=0)
    fig = figure_accuracy(accuracy_panels(rows), "std")
    assert_readable(fig)
    data = plotted(fig)
    panels = {"h_score": "toy (open-set): target H-score",
              "known_acc": "toy (open-set): known-class accuracy (rejections wrong)",
              "unknown_acc": "toy (open-set): unknown-class accuracy (share rejected)"}
    assert list(data) == list(panels.values())  # no closed-set accuracy panel
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_visible()] == [
        "H-score (%)", "accuracy (%)", "accuracy (%)"]
    for metric, title in panels.items():
        cells = build_tables(rows, "source_val", metric)[("toy", OPEN)]
        for (mods, algo), per_column in cells.items():
            for column, cell in per_column.items():
                assert data[title][f"{mods} {algo}|{column}"][1] == pytest.approx(
                    100 * cell.mean)
    pyplot().close(fig)


def test_accuracy_png_is_written_with_the_experiments_error(tmp_path):
    from merdg.experiments.report import plot_accuracy

    rng = np.random.default_rng(3)
    rows = rows_of(MULTI, ["d0"], [0, 1], rng)
    path = plot_accuracy(rows, tmp_path / "accuracy.png", error="se")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="--error must be one of std, se"):
        plot_accuracy(rows, tmp_path / "x.png", error="sem")


# --- robustness.png -----------------------------------------------------------------------

def robustness_rows(corruptions, seeds=(0, 1, 2), algorithms=("ERM", "MERDG", "CMRF")):
    """Rows with the corruption evaluator's columns, as ``run_rows`` flattens them."""
    rng = np.random.default_rng(4)
    out = []
    for algo in algorithms:
        for column in ("d0", "d1"):
            for seed in seeds:
                r = row(MULTI, algo, column, seed, rng)
                graded = {}
                for name in corruptions:
                    for s in (1, 3):
                        graded[(name, s)] = rng.uniform(0.2, 0.6)
                        r[f"target_corruption/m0:{name}:{s}"] = graded[(name, s)]
                r["target_missing/m0"] = rng.uniform(0.1, 0.3)
                for s in (1, 3):
                    r[f"target_corruption_severity/{s}"] = float(np.mean(
                        [v for (_, sev), v in graded.items() if sev == s]))
                every = [*graded.values(), r["target_missing/m0"]]
                r["target_corruption_acc"] = float(np.mean(every))  # missing counts once
                out.append(r)
    return out


def test_the_robustness_mean_panel_is_the_tables_mean_with_missing_and_error_bars():
    rows = robustness_rows(["gaussian_noise", "scaling"])
    view = ExperimentView(rows, error="se")
    accuracy, clean = severity_curves(view)
    means = severity_means(view)
    fig = figure_severity_curves(accuracy, clean, means=means, error="se")
    assert_readable(fig)
    data = plotted(fig)
    assert list(data) == ["gaussian_noise", "scaling", MEANS_PANEL]
    table = ExperimentView(rows).averages(["target_acc", "target_corruption_acc",
                                           "target_corruption_severity/1",
                                           "target_corruption_severity/3"])
    for (_, _, algo), (clean_cell, overall, sev1, sev3) in table.items():
        _, xs, ys = data[MEANS_PANEL][f"{algo}|mean"]
        assert ys == pytest.approx([100 * c.mean for c in (clean_cell, sev1, sev3)])
        _, spans = data[MEANS_PANEL][f"{algo}|mean|se"]
        assert [(hi - lo) / 2 for lo, hi in spans] == pytest.approx(
            [100 * c.se for c in (clean_cell, sev1, sev3)])
        _, [x_all], [y_all] = data[MEANS_PANEL][f"{algo}|all"]
        assert y_all == pytest.approx(100 * overall.mean)  # the table's mean, missing included
        assert round(x_all) == 4  # after the severities, at the tick "all"
    assert "error bars: ± standard error over n = 3 replicates" in suptitle(fig)
    # overlapping curves stay visible: their own marker and a small shift along the x axis
    lines = {gid: artist for ax in fig.axes for artist in ax.get_lines()
             if (gid := artist.get_gid()) and gid.endswith("|gaussian_noise")}
    assert len({line.get_marker() for line in lines.values()}) == 3
    assert len({line.get_xdata()[0] for line in lines.values()}) == 3
    pyplot().close(fig)


def test_one_graded_corruption_is_not_drawn_twice():
    rows = robustness_rows(["gaussian_noise"], seeds=(0,))
    view = ExperimentView(rows)
    accuracy, clean = severity_curves(view)
    fig = figure_severity_curves(accuracy, clean, means=severity_means(view))
    data = plotted(fig)
    assert list(data) == [MEANS_PANEL]  # the mean of one corruption is that corruption
    spans = [span for value in data[MEANS_PANEL].values() if value[0] == "error"
             for span in value[1]]
    assert spans and all(low == high for low, high in spans)  # one run: no spread
    assert "table means of one run each (n = 1, no error bars)" in suptitle(fig)
    pyplot().close(fig)


# --- curves.png ---------------------------------------------------------------------------

def test_training_curves_have_whole_epoch_ticks():
    rng = np.random.default_rng(5)
    records = [[{"epoch": e, "val": {"acc": rng.uniform()},
                 "target": {"acc": rng.uniform(), "probe_acc": {"m0": rng.uniform()}},
                 "train": {"ce": rng.uniform()}} for e in range(1, 4)]]
    results = [{"run": {"hparams": {}}}]
    fig = figure_curves(results, ["ERM"], records)
    for ax in fig.axes:
        if ax.has_data():
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    pyplot().close(fig)


def test_the_diagnostics_summary_says_over_how_many_comparisons():
    from test_figures import RESULTS

    from merdg.diagnostics.plots import figure_bench_summary

    fig = figure_bench_summary({("a+b", name): [r["headline"] for r in RESULTS]
                                for name in ("ERM", "MERDG")})
    assert "(mean ± sample std over n = 3 comparisons)" in suptitle(fig)
    pyplot().close(fig)
