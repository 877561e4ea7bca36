"""Layout helpers that keep the text of merdg's matplotlib figures readable.

Every figure merdg writes is built with ``layout="constrained"`` (room for titles, axis labels,
tick labels and legends placed outside the axes) and finished by :func:`finish_figure`, which
draws it and then, until no text collides:

- rotates the x tick labels of an axes whose labels overlap by 90 degrees, and widens the figure
  when even vertical labels do not fit side by side;
- wraps an axes title wider than its axes, and a figure title wider than the figure.

Needs the optional ``plot`` extra (``pip install 'merdg[plot]'``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

__all__ = ["DPI", "NO_MATPLOTLIB", "finish_figure", "matplotlib_available", "pyplot",
           "save_figure"]

NO_MATPLOTLIB = "note: matplotlib is not installed (pip install 'merdg[plot]'); no plot written"

DPI = 110
PAD_PX = 3.0  # pixels kept free between neighbouring tick labels
MAX_WIDTH_IN = 60.0  # figures never grow wider than this (inches)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _drawn_xtick_labels(ax) -> list[Any]:
    """The x tick labels matplotlib draws: visible, non-empty, at ticks inside the view."""
    if not ax.get_visible() or not ax.axison or not ax.xaxis.get_visible():
        return []
    lo, hi = sorted(ax.xaxis.get_view_interval())
    eps = 1e-9 * max(1.0, abs(hi - lo))
    labels = []
    for tick in ax.xaxis.get_major_ticks():
        if lo - eps <= tick.get_loc() <= hi + eps:
            labels += [t for t in (tick.label1, tick.label2)
                       if t.get_visible() and t.get_text().strip()]
    return labels


def _crowding(ax, renderer) -> float:
    """Width the x tick labels need side by side over the width they have (> 1: overlap)."""
    boxes = sorted((t.get_window_extent(renderer) for t in _drawn_xtick_labels(ax)),
                   key=lambda b: b.x0)
    overlap = any(a.x1 + PAD_PX > b.x0 for a, b in zip(boxes, boxes[1:]))
    if not overlap:
        return 0.0
    needed = sum(b.width + PAD_PX for b in boxes)
    return needed / max(ax.get_window_extent(renderer).width, 1.0)


def _wrap(text: Any, width_px: float, renderer) -> bool:
    """Wrap a title wider than ``width_px`` at word boundaries; True when it changed."""
    if not text.get_text() or not text.get_visible():
        return False
    extent = text.get_window_extent(renderer)
    if extent.width <= width_px:
        return False
    longest = max(len(line) for line in text.get_text().split("\n"))
    chars = max(8, int(longest * width_px / extent.width) - 1)
    wrapped = "\n".join(textwrap.fill(line, chars) for line in text.get_text().split("\n"))
    if wrapped == text.get_text():
        return False
    text.set_text(wrapped)
    return True


def _wrap_titles(fig, renderer) -> bool:
    changed = False
    for ax in fig.axes:
        width = ax.get_window_extent(renderer).width
        for title in (ax.title, ax._left_title, ax._right_title):
            changed |= _wrap(title, width, renderer)
    if fig._suptitle is not None:
        # kept clear of a legend beside the panels: left-aligned over the room the legend
        # leaves (centred over the whole figure it ran under the legend's top)
        right = max((ax.get_window_extent(renderer).x1 for ax in fig.axes
                     if ax.get_visible()), default=0.0)
        beside = max((box.width for box in (legend.get_window_extent(renderer)
                                            for legend in fig.legends)
                      if box.x0 >= right - 1), default=0.0)  # legends right of the panels
        if beside and fig._suptitle.get_horizontalalignment() == "center":
            fig._suptitle.set_horizontalalignment("left")
            fig._suptitle.set_x(PAD_PX / fig.bbox.width)
            changed = True
        room = fig.bbox.width - 3 * PAD_PX - beside if beside else fig.bbox.width - 2 * PAD_PX
        if room < fig.bbox.width / 2:  # a wide legend: widen the figure rather than stack lines
            width, height = fig.get_size_inches()
            wanted = 2 * (beside + 3 * PAD_PX) / fig.dpi
            if wanted > width and width < MAX_WIDTH_IN:
                fig.set_size_inches(min(wanted, MAX_WIDTH_IN), height)
                return True
        changed |= _wrap(fig._suptitle, max(room, fig.bbox.width / 3), renderer)
    return changed


def finish_figure(fig, dpi: int = DPI, max_rounds: int = 6) -> Any:
    """Lay ``fig`` out at ``dpi`` so that no tick label, title or legend text overlaps another.

    Args:
        fig: A figure built with ``layout="constrained"`` (the layout is redone at each draw).
        dpi: The resolution the figure will be saved at (text extents depend on it).
        max_rounds: Draw-and-fix rounds at most.

    Returns:
        The same figure.
    """
    fig.set_dpi(dpi)
    for _ in range(max_rounds):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        if _wrap_titles(fig, renderer):
            continue
        crowded = [(ax, _crowding(ax, renderer)) for ax in fig.axes]
        crowded = [(ax, need) for ax, need in crowded if need > 0]
        if not crowded:
            break
        widen = 1.0
        for ax, need in crowded:
            if all(t.get_rotation() == 90 for t in _drawn_xtick_labels(ax)):
                widen = max(widen, need * 1.1)
            else:
                ax.tick_params(axis="x", labelrotation=90)
        if widen > 1.0:
            width, height = fig.get_size_inches()
            fig.set_size_inches(min(width * widen, MAX_WIDTH_IN), height)
    return fig


def save_figure(fig, path: str | Path, dpi: int = DPI, finish: bool = True) -> Path:
    """Write ``fig`` to ``path`` as PNG and close it; returns the path.

    Args:
        fig: The figure.
        path: Output file.
        dpi: Resolution.
        finish: Lay the figure out with :func:`finish_figure` first (False: it already was, at
            this dpi).
    """
    if finish:
        finish_figure(fig, dpi)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
