"""Figures of experiment results: accuracy bars per target (the figures of evaluators, e.g.
accuracy against corruption severity, are theirs: :mod:`merdg.evaluators`).

They are laid out by :func:`merdg.plotting.finish_figure` (no overlapping or cut-off text);
``figure_*`` functions return the figure, ``plot_*`` functions write it as PNG and return the
path, or None with a printed note when matplotlib is not installed (the ``plot`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from merdg.plotting import (
    NO_MATPLOTLIB,
    finish_figure,
    matplotlib_available,
    pyplot,
    save_figure,
)
from merdg.run.selection import SELECTION_RULES

__all__ = ["figure_accuracy_bars", "plot_accuracy_bars"]



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
