"""Every figure merdg writes keeps its text readable (no overlap, nothing cut off)."""

import itertools

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from figure_checks import assert_readable, text_problems  # noqa: E402
from merdg.diagnostics import plots  # noqa: E402
from merdg.diagnostics.analysis import ALL_SOURCES, SPACES  # noqa: E402
from merdg.evaluators.corruptions import (  # noqa: E402
    figure_severity_curves,
    plot_severity_curves,
)
from merdg.experiments.plots import figure_accuracy  # noqa: E402
from merdg.experiments.report import accuracy_panels, plot_accuracy  # noqa: E402
from merdg.plotting import pyplot  # noqa: E402

# long-ish names, as real datasets have them
MODALITIES = ["accelerometer", "depth_video", "skeleton_joints"]
SOURCES = ["subjects_1_and_2", "subjects_3_and_4", "subjects_7_and_8"]
TARGET = "subjects_5_and_6"
DOMAINS = [*SOURCES, TARGET]


def fake_result(seed: int) -> dict:
    """A diagnosis result with the structure the figures read, filled with random numbers."""
    rng = np.random.default_rng(seed)
    u = lambda: float(rng.uniform(0.2, 0.9))  # noqa: E731
    variants = ["all", *[f"without {m}" for m in MODALITIES], *[f"only {m}" for m in MODALITIES]]
    accuracy = {d: {"heads": {m: u() for m in MODALITIES}, "variants": {v: u() for v in variants}}
                for d in [*DOMAINS, ALL_SOURCES]}
    probe_keys = [*MODALITIES, "concat"]
    probes = {kind: {k: {"selected": {"test_acc": u(), "val_acc": u()}} for k in probe_keys}
              for kind in ("linear", "mlp")}
    diversity = {s: {m: {d: {"effective_rank": 30 * u(), "spectral_term": 4 * u(), "dim": 64}
                         for d in DOMAINS} for m in MODALITIES} for s in SPACES}
    pairs = [f"{a}~{b}" for a, b in itertools.combinations(MODALITIES, 2)]
    dependence = {p: {d: {"cka": u(), "cka_within_class": u(), "cca_mean": u()} for d in DOMAINS}
                  for p in pairs}
    training_batch = {s: {m: {"mean": 2 * u(), "floor": 0.5} for m in MODALITIES} for s in SPACES}
    run = {"modalities": MODALITIES, "sources": SOURCES, "target": TARGET, "num_classes": 27,
           "hparams": {"mer_target": "projection"}}
    headline = {"target_acc": u(), "head_target_acc": u(), "linear_probe_target_acc": u(),
                "mlp_probe_target_acc": u(),
                "effective_rank": {"sources": 20 * u(), "target": 20 * u()},
                "cka": {"sources": u(), "target": u()},
                "batch_spectral_gap": {"embedding": u(), "projection": u()}}
    return {"run": run, "accuracy": accuracy, "probes": probes, "diversity": diversity,
            "dependence": dependence, "training_batch": training_batch, "headline": headline}


def fake_records(seed: int, epochs: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"epoch": e + 1, "val": {"acc": rng.uniform()}, "target": {
        "acc": rng.uniform(), "probe_acc": {m: rng.uniform() for m in MODALITIES}},
        "train": {"ce": rng.uniform(), **{f"mer_spec/{m}": rng.uniform() for m in MODALITIES}}}
        for e in range(epochs)]


LABELS = ["ERM (baseline run)", "MER-DG lambda=0.3", "SimMMDG (official hparams)"]
RESULTS = [fake_result(k) for k in range(len(LABELS))]
RECORDS = [fake_records(k) for k in range(len(LABELS))]

FIGURES = {
    "unimodal": lambda: plots.figure_unimodal(RESULTS, LABELS),
    "reliance": lambda: plots.figure_reliance(RESULTS, LABELS),
    "diversity": lambda: plots.figure_diversity(RESULTS, LABELS),
    "dependence": lambda: plots.figure_dependence(RESULTS, LABELS),
    "curves": lambda: plots.figure_curves(RESULTS, LABELS, RECORDS),
    "bench_summary": lambda: plots.figure_bench_summary(
        {("accelerometer+depth_video", name): [r["headline"] for r in RESULTS]
         for name in ("ERM", "MERDG", "SimMMDG", "MOOSA")}),
}


def test_the_check_catches_overlapping_and_cut_off_text():
    fig, ax = pyplot().subplots(figsize=(2, 2))
    ax.set_xticks(range(6), [f"a rather long tick label {i}" for i in range(6)])
    ax.set_title("a title far wider than this small figure can hold")
    problems = text_problems(fig)
    assert any("overlaps" in p for p in problems)
    assert any("outside the figure" in p for p in problems)
    pyplot().close(fig)
    fig, ax = pyplot().subplots(figsize=(4, 3), layout="constrained")
    ax.set_xticks(range(3), ["a", "b", "c"])
    ax.set_title("short")
    assert text_problems(fig) == []
    pyplot().close(fig)


@pytest.mark.parametrize("name", list(FIGURES))
def test_diagnostics_figures_are_readable(name):
    fig = FIGURES[name]()
    assert_readable(fig)
    pyplot().close(fig)


def bench_rows(algorithms, targets, seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    return [{"dataset": "toy", "modalities": "audio+flow+video", "algorithm": a, "target": t,
             "seed": s, "hparams_seed": 0, "selection": "source_val",
             "val_acc": rng.uniform(0.6, 0.9), "target_acc": rng.uniform(0.3, 0.7)}
            for a in algorithms for t in targets for s in seeds]


ALGORITHMS = ["ERM", "MERDG", "SimMMDG", "MOOSA", "CMRF", "RNA", "MBCD", "NEL", "JAT"]


@pytest.mark.parametrize("targets", [["D1", "D2", "D3"],
                                     ["subjects_1_and_2", "subjects_3_and_4",
                                      "subjects_5_and_6", "subjects_7_and_8"]])
def test_accuracy_bars_are_readable(tmp_path, targets):
    rows = bench_rows(ALGORITHMS, targets)
    fig = figure_accuracy(accuracy_panels(rows))
    assert_readable(fig)
    target_axes = fig.axes[1]
    assert [t.get_text() for t in target_axes.get_xticklabels()] == [
        *(f"target {t}" for t in targets), "avg"]
    pyplot().close(fig)
    path = plot_accuracy(rows, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("seeds", [(0, 1), (0,)])
def test_a_long_title_stays_clear_of_the_legend_beside_the_panels(seeds):
    """Two algorithms, two targets, a title of the length the reports give: the title is
    wrapped clear of the legend (it ran under the legend's title before)."""
    rows = bench_rows(["ERM", "MERDG"], ["d0", "d1"], seeds)
    fig = figure_accuracy(accuracy_panels(rows), title="Epochs chosen by training-domain "
                          "validation")
    assert_readable(fig)
    pyplot().close(fig)
    accuracy, clean = severity_input(["synthetic ERM", "synthetic MERDG"], ["gaussian_noise"],
                                     (1, 3))
    fig = figure_severity_curves(accuracy, clean, title="Target accuracy under corruptions "
                                 "(epochs: training-domain validation; targets, seeds "
                                 "averaged); table means of one run each (n = 1, no error "
                                 "bars)")
    assert_readable(fig)
    pyplot().close(fig)


def severity_input(algorithms, corruptions, severities=(1, 2, 3, 4, 5)):
    rng = np.random.default_rng(1)
    accuracy = {a: {(c, s): float(rng.uniform(0.2, 0.8)) for c in corruptions
                    for s in severities} for a in algorithms}
    clean = {a: float(rng.uniform(0.6, 0.9)) for a in algorithms}
    return accuracy, clean


def test_severity_curves_are_readable(tmp_path):
    corruptions = ["gaussian_noise", "motion_blur", "audio_babble_noise", "frame_drop",
                   "jpeg_compression"]
    accuracy, clean = severity_input(ALGORITHMS, corruptions)
    fig = figure_severity_curves(accuracy, clean)
    assert_readable(fig)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == corruptions  # the table's means need the table
    # severity 0 is the clean accuracy; each curve is shifted a little along the x axis
    line = next(ln for ln in axes[-1].get_lines() if ln.get_label() == "MERDG")
    xs, ys = line.get_data()
    assert list(np.round(xs)) == [0, 1, 2, 3, 4, 5] and xs[1] - 1 != 0
    assert ys[0] == pytest.approx(100 * clean["MERDG"])
    assert ys[3] == pytest.approx(100 * accuracy["MERDG"]["jpeg_compression", 3])
    pyplot().close(fig)
    path = plot_severity_curves(accuracy, clean, tmp_path / "severity.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_severity_curves_reject_incomplete_input():
    accuracy, clean = severity_input(["ERM", "MERDG"], ["fog"])
    del accuracy["MERDG"]["fog", 2]
    with pytest.raises(ValueError, match=r"'MERDG' lacks .*\('fog', 2\)"):
        figure_severity_curves(accuracy, clean)
    accuracy, clean = severity_input(["ERM"], ["fog"])
    with pytest.raises(ValueError, match="no clean accuracy"):
        figure_severity_curves(accuracy, {})
