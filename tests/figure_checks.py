"""Checks that a matplotlib figure's text is readable: no two texts overlap, none is cut off.

Independent of :mod:`merdg.plotting` (which lays figures out), so a layout bug there cannot hide
itself here. Texts considered: every visible, non-empty ``Text`` artist of the figure (titles,
figure title, axis labels, legend texts, annotations, offset texts) and the tick labels that
matplotlib draws (those of ticks inside the axis' view interval).
"""

from __future__ import annotations

import itertools

from matplotlib.text import Text

TOLERANCE_PX = 0.5  # extents are shrunk by this much before comparing (rounding of glyphs)


def _axis_texts(fig) -> tuple[set[int], list[Text]]:
    """ids of every tick label artist, and the tick labels actually drawn."""
    all_ids, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            eps = 1e-9 * max(1.0, abs(hi - lo))
            shown = ax.get_visible() and ax.axison and axis.get_visible()
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                labels = (tick.label1, tick.label2)
                all_ids.update(id(t) for t in labels)
                loc = tick.get_loc()
                if shown and loc is not None and lo - eps <= loc <= hi + eps:
                    drawn += [t for t in labels if t.get_visible()]
    return all_ids, drawn


def drawn_texts(fig) -> list[Text]:
    """The visible, non-empty texts of ``fig`` after drawing it with its canvas (Agg)."""
    fig.canvas.draw()
    tick_ids, tick_labels = _axis_texts(fig)
    others = [t for t in fig.findobj(Text) if id(t) not in tick_ids and t.get_visible()]
    hidden_axes = [ax for ax in fig.axes if not ax.get_visible()]
    others = [t for t in others if not any(t in ax.findobj(Text) for ax in hidden_axes)]
    return [t for t in [*tick_labels, *others] if t.get_text().strip()]


def _describe(text: Text) -> str:
    return f"{text.get_text()!r} ({type(text).__name__})"


def text_problems(fig) -> list[str]:
    """One line per pair of overlapping texts and per text reaching outside the figure."""
    renderer = fig.canvas.get_renderer()
    texts = drawn_texts(fig)
    boxes = [t.get_window_extent(renderer).padded(-TOLERANCE_PX) for t in texts]
    problems = []
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes), 2):
        if box_a.overlaps(box_b):
            problems.append(f"{_describe(a)} overlaps {_describe(b)}")
    frame = fig.bbox
    for text, box in zip(texts, boxes):
        if (box.x0 < frame.x0 or box.y0 < frame.y0 or box.x1 > frame.x1
                or box.y1 > frame.y1):
            problems.append(f"{_describe(text)} reaches outside the figure")
    return problems


def assert_readable(fig) -> None:
    """Fail with the list of problems when any text overlaps another or is cut off."""
    problems = text_problems(fig)
    assert not problems, "\n".join(problems)
