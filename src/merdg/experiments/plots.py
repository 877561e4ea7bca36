"""Figures of experiment results: the metrics of every results table per column and (modality
set, algorithm) (the figures of evaluators, e.g. accuracy against corruption severity, are
theirs: :mod:`merdg.evaluators`).

A figure says what the tables say: one row of panels per table (multi-source, single-source
and open-set results apart; open-set tables plot the H-score and the known- and unknown-class
accuracy), bars at the cells' means with error bars of the spread the tables show (``"std"`` or
``"se"``, named with the number of seeds in the figure title), and a cell of one run drawn as a
point, without an error bar. Each drawn cell is an artist whose ``gid`` is ``"<modalities>
<algorithm>|<column>"`` (its error bar ``"...|<column>|std"`` or ``"|se"``), so that tests read
the plotted values back.

Figures are laid out by :func:`merdg.plotting.finish_figure` (no overlapping or cut-off text);
``figure_*`` functions return the figure, ``plot_*`` functions write it as PNG and return the
path, or None with a printed note when matplotlib is not installed (the ``plot`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merdg.experiments.results import table_targets
from merdg.plotting import (
    NO_MATPLOTLIB,
    finish_figure,
    matplotlib_available,
    pyplot,
    save_figure,
)

__all__ = ["ERROR_WORDS", "Panel", "error_words", "figure_accuracy", "plot_accuracy_panels"]

ERROR_WORDS = {"std": "sample std", "se": "standard error"}


@dataclass(frozen=True)
class Panel:
    """One panel: one metric of one results table.

    Attributes:
        title: What it shows (``"toy: target accuracy"``).
        cells: ``{(modalities, algorithm): {column | "avg": Cell}}`` of
            :func:`merdg.experiments.results.build_tables` (cells have ``mean``, ``std``,
            ``se`` and ``n``; fractions).
        ylabel: The y axis (percent).
    """

    title: str
    cells: Mapping[tuple[str, str], Mapping[str, Any]]
    ylabel: str = "accuracy (%)"


def _color(k: int) -> str:
    return f"C{k % 10}"


def error_words(panels: Sequence[Sequence[Panel]], error: str) -> str:
    """What the error bars are, with the seeds behind them: ``"bars: mean ± sample std over
    n = 3 seeds; a point: one run (n = 1, no spread)"``."""
    if error not in ERROR_WORDS:
        raise ValueError(f"error must be one of {', '.join(ERROR_WORDS)}, got {error!r}")
    ns = sorted({c.n for row in panels for p in row for cells in p.cells.values()
                 for c in cells.values() if c.n > 1})
    singles = any(c.n == 1 for row in panels for p in row for cells in p.cells.values()
                  for c in cells.values())
    parts = []
    if ns:
        seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"
        parts.append(f"bars: mean ± {ERROR_WORDS[error]} over n = {seeds} seeds")
    if singles:
        parts.append("a point: one run (n = 1, no spread)")
    return "; ".join(parts)


def _draw_panel(ax, panel: Panel, keys: Sequence[tuple[str, str]], error: str) -> None:
    """Bars (n > 1, with error bars) and points (n = 1) of every (modalities, algorithm) of
    the panel, grouped by column."""
    columns = table_targets(dict(panel.cells))
    mine = [key for key in keys if key in panel.cells]
    width = 0.8 / max(len(mine), 1)
    for j, key in enumerate(mine):
        k = keys.index(key)
        label = " ".join(key)
        for g, column in enumerate(columns):
            cell = panel.cells[key].get(column)
            if cell is None or not math.isfinite(cell.mean):
                continue
            x = g + (j - (len(mine) - 1) / 2) * width
            mean = 100 * cell.mean
            if cell.n > 1:
                ax.bar([x], [mean], width, color=_color(k), label=label, gid=f"{label}|{column}")
                spread = 100 * (cell.std if error == "std" else cell.se)
                ax.vlines([x], [mean - spread], [mean + spread], color="black", lw=1,
                          gid=f"{label}|{column}|{error}")
            else:
                ax.plot([x], [mean], "o", color=_color(k), markeredgecolor="black", ms=5,
                        label=label, gid=f"{label}|{column}")
    ax.set_xticks(np.arange(len(columns)), [c if c == "avg" else f"target {c}"
                                            for c in columns])
    ax.set_title(panel.title, fontsize=10)
    ax.set_ylabel(panel.ylabel)
    ax.set_ylim(bottom=0)  # bars start at 0; points share the scale
    ax.grid(axis="y", alpha=0.3)


def figure_accuracy(panels: Sequence[Sequence[Panel]], error: str = "std", title: str = ""):
    """The panels, one row per results table.

    Args:
        panels: Rows of :class:`Panel` (one row per table: e.g. source-validation and target
            accuracy, or H-score, known- and unknown-class accuracy).
        error: What the error bars are: ``"std"`` (sample standard deviation over seeds) or
            ``"se"`` (standard error), as the tables.
        title: Figure title; the error bars' meaning is appended.

    Returns:
        The figure; one legend for every panel (a (modality set, algorithm) keeps its color).

    Raises:
        ValueError: Nothing to plot, or an unknown ``error``.
    """
    words = error_words(panels, error)
    keys = sorted({key for row in panels for p in row for key in p.cells})
    if not keys:
        raise ValueError("no result cells to plot")
    ncols = max(len(row) for row in panels)
    groups = max(len(table_targets(dict(p.cells))) for row in panels for p in row)
    width = max(6.0, (0.22 * len(keys) + 0.5) * groups * ncols + 3)
    fig, axes = pyplot().subplots(len(panels), ncols, figsize=(width, 3.6 * len(panels) + 0.8),
                                  squeeze=False, layout="constrained")
    for row, row_axes in zip(panels, axes):
        for panel, ax in zip(row, row_axes):
            _draw_panel(ax, panel, keys, error)
        for ax in row_axes[len(row):]:
            ax.set_visible(False)
    by_label: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    fig.legend(list(by_label.values()), list(by_label), loc="outside right upper", fontsize=8,
               title="modalities, algorithm", title_fontsize=8)
    fig.suptitle("; ".join(p for p in (title, words) if p), fontsize=10)
    return finish_figure(fig)


def plot_accuracy_panels(panels: Sequence[Sequence[Panel]], path: str | Path,
                         error: str = "std", title: str = "") -> Path | None:
    """Write :func:`figure_accuracy` to ``path`` (PNG); None without matplotlib."""
    if not matplotlib_available():
        print(NO_MATPLOTLIB)
        return None
    return save_figure(figure_accuracy(panels, error, title), path, finish=False)
