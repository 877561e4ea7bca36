"""Figures of experiment results: accuracy bars per target, accuracy against corruption severity.

Both are laid out by :func:`merdg.plotting.finish_figure` (no overlapping or cut-off text);
``figure_*`` functions return the figure, ``plot_*`` functions write it as PNG and return the
path, or None with a printed note when matplotlib is not installed (the ``plot`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from merdg.plotting import finish_figure, matplotlib_available, pyplot, save_figure
from merdg.run.selection import SELECTION_RULES

__all__ = ["figure_accuracy_bars", "figure_severity_curves", "plot_accuracy_bars",
           "plot_severity_curves"]

NO_MATPLOTLIB = "note: matplotlib is not installed (pip install 'merdg[plot]'); no plot written"


def _color(k: int) -> str:
    return f"C{k % 10}"


def figure_accuracy_bars(tables: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]],
                         selection: str = "source_val"):
    """Source-validation and target accuracy per target and (modalities, algorithm).

    Args:
        tables: ``{"source validation": cells, "target": cells}`` with ``cells`` the
            ``{(modalities, algorithm): {target | "avg": Cell}}`` of
            :func:`merdg.experiments.results.build_tables` (``Cell.mean`` / ``Cell.std``).
        selection: The model-selection rule whose epochs are shown (for the titles).

    Returns:
        A figure with two panels stacked (source validation above, target below); bars are the
        cells' means, error bars their sample std; ``avg`` averages the targets within a
        replicate first.

    Raises:
        ValueError: Nothing to plot, or an unknown rule.
    """
    if selection not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {selection!r}; choose from "
                         f"{list(SELECTION_RULES)}")
    keys = sorted(tables["target"])
    if not keys:
        raise ValueError(f"no result rows with selection {selection!r} to plot")
    targets = sorted({t for cells in tables["target"].values() for t in cells if t != "avg"})
    groups = [*targets, "avg"]
    group_width = 0.22 * len(keys) + 0.5  # inches per target
    fig, axes = pyplot().subplots(2, 1, figsize=(max(8.0, group_width * len(groups) + 3), 7.5),
                                  sharex=True, layout="constrained")
    rule = SELECTION_RULES[selection].split(" (")[0]
    width = 0.8 / len(keys)
    xs = np.arange(len(groups))
    for ax, (name, table) in zip(axes, tables.items()):
        for k, key in enumerate(keys):
            cells = table.get(key, {})
            means = [cells[t].mean * 100 if t in cells else math.nan for t in groups]
            stds = [cells[t].std * 100 if t in cells else 0.0 for t in groups]
            ax.bar(xs + (k - (len(keys) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                   color=_color(k), label=" ".join(key))
        ax.set_title(f"{name} accuracy, epochs chosen by {rule}", fontsize=10)
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks(xs, [t if t == "avg" else f"target {t}" for t in groups])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8,
               title="modalities, algorithm", title_fontsize=8)
    return finish_figure(fig)


def plot_accuracy_bars(tables: Mapping[str, Mapping[tuple[str, str], Mapping[str, Any]]],
                       path: str | Path, selection: str = "source_val") -> Path | None:
    """Write :func:`figure_accuracy_bars` to ``path`` (PNG); None without matplotlib."""
    if not matplotlib_available():
        print(NO_MATPLOTLIB)
        return None
    return save_figure(figure_accuracy_bars(tables, selection), path, finish=False)


def _check_severity_input(accuracy: Mapping[str, Mapping[tuple[str, int], float]],
                          clean: Mapping[str, float]) -> tuple[list[str], list[int]]:
    """Corruptions and severities of the input; every algorithm must have every pair."""
    if not accuracy:
        raise ValueError("no algorithms to plot")
    ordered = [tuple(pair) for per_algo in accuracy.values() for pair in per_algo]
    pairs = set(ordered)
    for algo, per_algo in accuracy.items():
        missing = sorted(pairs - set(per_algo))
        if missing:
            raise ValueError(f"algorithm {algo!r} lacks (corruption, severity) {missing}")
        if algo not in clean:
            raise ValueError(f"algorithm {algo!r} has no clean accuracy (severity 0)")
    severities = sorted({s for _, s in pairs})
    if severities and severities[0] <= 0:
        raise ValueError(f"severities must be >= 1 (0 is the clean accuracy), got {severities}")
    return list(dict.fromkeys(c for c, _ in ordered)), severities


def figure_severity_curves(accuracy: Mapping[str, Mapping[tuple[str, int], float]],
                           clean: Mapping[str, float], title: str = ""):
    """Accuracy against corruption severity, one panel per corruption plus their mean.

    Args:
        accuracy: ``{algorithm: {(corruption, severity): accuracy}}``, accuracies as fractions
            (means over seeds and targets), severities >= 1; panels follow the order in which
            corruptions first appear.
        clean: ``{algorithm: accuracy without corruption}``, drawn at severity 0 of every curve.
        title: Figure title (default: a description of the axes).

    Returns:
        The figure; the last panel averages each severity over the corruptions.

    Raises:
        ValueError: An algorithm lacks a (corruption, severity) pair another one has, or its
            clean accuracy; a severity below 1.
    """
    corruptions, severities = _check_severity_input(accuracy, clean)
    panels = [*corruptions, "mean over corruptions"]
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(4.0 * ncols + 2.5, 3.2 * nrows),
                                  squeeze=False, sharey=True, layout="constrained")
    xs = [0, *severities]
    for k, (algo, per_algo) in enumerate(accuracy.items()):
        curves = {c: [per_algo[c, s] for s in severities] for c in corruptions}
        curves["mean over corruptions"] = list(np.mean([curves[c] for c in corruptions], axis=0))
        for ax, panel in zip(axes.flat, panels):
            ax.plot(xs, [100 * clean[algo], *(100 * v for v in curves[panel])], marker="o",
                    ms=3, color=_color(k), label=algo)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xlabel("severity (0 = clean)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(title or "Accuracy under corruptions of increasing severity", fontsize=11)
    return finish_figure(fig)


def plot_severity_curves(accuracy: Mapping[str, Mapping[tuple[str, int], float]],
                         clean: Mapping[str, float], path: str | Path,
                         title: str = "") -> Path | None:
    """Write :func:`figure_severity_curves` to ``path`` (PNG); None without matplotlib."""
    if not matplotlib_available():
        print(NO_MATPLOTLIB)
        return None
    return save_figure(figure_severity_curves(accuracy, clean, title), path,
                       finish=False)
