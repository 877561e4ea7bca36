"""Model selection rules: which epoch of a run is reported.

- ``source_val`` (default, honest): the epoch with the best accuracy on the held-out part of the
  *source* domains; ties go to the later epoch (SimMMDG's ``>=``).
- ``oracle``: the epoch with the best *target* accuracy. This is what the official MER-DG code
  logs (``BestTestAcc``); it peeks at the test domain and is reported separately, labeled.
- ``last``: the final epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["SELECTION_RULES", "select_epoch"]

SELECTION_RULES = {
    "source_val": "training-domain validation (best source-val accuracy, ties: later epoch)",
    "oracle": "oracle (best target accuracy; peeks at the target domain)",
    "last": "last epoch",
}


def select_epoch(records: Sequence[dict[str, Any]], rule: str = "source_val") -> dict[str, Any]:
    """The record chosen by ``rule`` among one run's per-epoch records."""
    if not records:
        raise ValueError("no epoch records to select from")
    if rule == "last":
        return records[-1]
    key = {"source_val": lambda r: r["val"]["acc"], "oracle": lambda r: r["target"]["acc"]}
    if rule not in key:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {list(SELECTION_RULES)}")
    best = records[0]
    for rec in records[1:]:
        if key[rule](rec) >= key[rule](best):
            best = rec
    return best
