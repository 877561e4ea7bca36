"""Progress bars where someone watches them: on a terminal, or in a notebook. Standard error
redirected to a file (a log, a batch system's output) gets no bar frames, only the plain log
lines (docs/protocol.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "watched"]


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
