"""The hyperparameter-search protocols and the rule that chooses a trial.

``hparams_seed`` 0 is the default configuration; k > 0 draws every hparam that declares a
search space (:mod:`merdg.hparams`). Per task (modality set, algorithm, target):

- ``fair`` (default; MMDG-Bench, arXiv 2605.06643, ``tools/search_hparams.py`` in
  lihongzhao99/MMDG_Benchmark): the default plus ``trials`` random trials, trial k trained
  once with seed k (its *search run*); the trial chosen by :func:`choose_trial` is retrained
  with seeds ``trials + 1 .. trials + seeds - 1``; tables report mean and std over the
  ``seeds`` runs of the chosen trial. With ``trials = 0`` this is a plain comparison over
  seeds ``0 .. seeds - 1`` (``merdg bench``).
- ``grid`` (DomainBed): every trial with every seed ``0 .. seeds - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["PROTOCOLS", "choose_trial", "search_runs"]

PROTOCOLS = ("fair", "grid")


def search_runs(rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each trial's search run: its run with the lowest seed (``{hparams_seed: row}``)."""
    first: dict[int, dict[str, Any]] = {}
    for row in rows:
        k = row["hparams_seed"]
        if k not in first or row["seed"] < first[k]["seed"]:
            first[k] = row
    return first


def choose_trial(rows: Iterable[dict[str, Any]]) -> int:
    """The ``hparams_seed`` chosen among one task's runs (rows of the ``source_val`` rule).

    The trial whose search run has the best source-validation accuracy; ties go to the lower
    source-validation loss, then to the lower trial index (both measured at the epoch the
    source-validation rule selects within the run).

    Raises:
        ValueError: No rows.
    """
    first = search_runs(rows)
    if not first:
        raise ValueError("no runs to choose a trial from")

    def rank(row: dict[str, Any]) -> tuple[float, float, int]:
        loss = row.get("val_loss")
        return (-row["val_acc"], math.inf if loss is None else loss, row["hparams_seed"])

    return min(first.values(), key=rank)["hparams_seed"]
