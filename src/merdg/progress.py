"""Progress bars where someone watches them: on a terminal, or in a notebook. Standard error
redirected to a file (a log, a batch system's output) gets no bar frames, only plain,
timestamped lines (docs/protocol.md)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_line", "timestamp", "watched"]


def watched() -> bool:
    """Whether standard error is a terminal, or the process is a notebook's kernel (where
    ``tqdm.auto`` draws a widget)."""
    try:
        terminal = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        terminal = False
    return terminal or "ipykernel" in sys.modules


def progress_bar(iterable: Iterable[Any] | None = None, *, shown: bool = True,
                 **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (keywords as ``tqdm``'s), drawn only when ``shown``
    and :func:`watched`."""
    return tqdm(iterable, disable=not (shown and watched()), **kwargs)


def timestamp(seconds: float | None = None) -> str:
    """A local time (``seconds`` since the epoch; default now) as the plain lines write it:
    ``2026-12-06 08:21:55`` (``log.txt`` adds milliseconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def progress_line(message: str, *, shown: bool = True) -> None:
    """``message`` on standard error, after a :func:`timestamp`, where no bar is drawn (not
    :func:`watched`): the plain counterpart of a bar's step, e.g. one line per finished job."""
    if shown and not watched():
        print(f"{timestamp()} {message}", file=sys.stderr, flush=True)
