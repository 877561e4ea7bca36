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

Two rules choose a trial (``ExperimentConfig.selection``; DomainBed's model-selection methods,
``domainbed/model_selection.py`` in facebookresearch/DomainBed, of which merdg also has the
test-domain oracle as an epoch rule, :mod:`merdg.run.selection`):

- ``source_val`` (training-domain validation, DomainBed's ``IIDAccuracySelectionMethod``): the
  trial whose search run is best on the held-out part of the source domains
  (:func:`choose_trial`);
- ``lodo`` (leave-one-domain-out cross-validation, DomainBed's
  ``LeaveOneOutSelectionMethod``): for a task with target T and sources S, each trial k is
  trained once more per source h in S as an *inner run*: sources S - {h}, target h, seed k.
  Its score is the mean over h of the inner run's accuracy on h, each at the epoch that run's
  own source validation selects (:func:`lodo_scores`); the best trial is then trained on all
  of S with seeds ``0 .. seeds - 1`` (the reported runs). T is never trained on, normalized
  with or evaluated in the search. Differences from DomainBed: DomainBed scores every
  (trial, step) and reports the outer run at the chosen step; merdg chooses only the trial and
  selects every run's epoch on source validation, in the inner runs as in the reported ones,
  so a trial is scored the way its reported runs will be used.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["PROTOCOLS", "TRIAL_RULES", "choose_trial", "choose_trial_lodo", "lodo_scores",
           "search_runs"]

PROTOCOLS = ("fair", "grid")
TRIAL_RULES = {
    "source_val": "chosen on source validation",
    "lodo": "chosen by leave-one-domain-out cross-validation on the source domains",
}


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


def lodo_scores(rows: Iterable[dict[str, Any]], held_out: Sequence[str]) -> dict[int, float]:
    """``{trial: mean accuracy on the held-out source}`` from one task's inner runs.

    Args:
        rows: ``source_val`` rows of the task's inner runs (each run's ``target`` is the source
            domain it held out; ``target_acc`` is measured at the epoch its own source
            validation selects).
        held_out: The task's source domains: a trial is scored only when it has an inner run
            for every one of them.

    Raises:
        ValueError: Two inner runs of one trial hold out the same domain.
    """
    per_trial: dict[int, dict[str, float]] = defaultdict(dict)
    for row in rows:
        k, domain = row["hparams_seed"], row["target"]
        if domain in per_trial[k]:
            raise ValueError(f"two inner runs of trial {k} hold out {domain!r} "
                             f"({row.get('path', '?')}); keep one per trial and domain")
        per_trial[k][domain] = row["target_acc"]
    return {k: sum(accs[h] for h in held_out) / len(held_out)
            for k, accs in sorted(per_trial.items()) if set(held_out) <= set(accs)}


def choose_trial_lodo(rows: Iterable[dict[str, Any]], held_out: Sequence[str]) -> int | None:
    """The trial with the best :func:`lodo_scores` (ties: the lower trial index); None when no
    trial has an inner run for every held-out domain yet."""
    scores = lodo_scores(rows, held_out)
    if not scores:
        return None
    return min(scores, key=lambda k: (-scores[k], k))
