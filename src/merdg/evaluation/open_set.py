"""Open-set multimodal DG: known/unknown class splits, unknown rejection, H-score.

The setting of MOOSA (Dong, Chatzi & Fink, "Towards Multimodal Open-Set Domain Generalization
and Adaptation through Self-supervision", ECCV 2024, arXiv 2407.01518): the source domains hold
the *known* classes only; the target holds them plus *unknown* classes, which the model must
reject. A model has one output per known class; a target sample is predicted "unknown" when its
confidence score falls below a threshold.

Class splits. MOOSA's loaders (github.com/donghao51/MOOSA, commit 0c7ce03) keep these labels in
the sources and hold out one class as unknown in the target:

- EPIC-Kitchens: known ``0, 1, 2, 4, 5, 6, 7``, unknown ``3`` (verb ``close``)
  (``EPIC-rgb-flow-audio/dataloader_video_flow_audio_EPIC_MOOSA.py``, lines 8-11);
- HAC: known ``0, 1, 2, 4, 5, 6``, unknown ``3``
  (``HAC-rgb-flow-audio/dataloader_video_flow_audio_HAC_MOOSA.py``, lines 10-13).

Labels there are the raw ``verb_class`` of the MM-SADA pickles and the raw csv label of HAC,
the same indices merdg's readers use (:class:`~merdg.datasets.epic_kitchens.EpicKitchens`,
:class:`~merdg.datasets.hac.HAC`, attribute ``OPEN_SET_KNOWN_CLASSES``). MOOSA then moves the
highest known label into the unknown's slot (EPIC 7 -> 3, HAC 6 -> 3) to get contiguous model
outputs; :func:`open_set_labels` maps the known classes to ``0..K-1`` in increasing order
instead, a relabelling that changes no metric.

Metrics (MOOSA's training scripts, ``train_video_flow_audio_{EPIC,HAC}_MOOSA.py``, test split):

- ``known_acc``: share of known-class target samples predicted as their class *and* accepted
  (a rejected known sample counts as wrong), over samples (not averaged per class);
- ``unknown_acc``: share of unknown-class target samples rejected;
- ``h_score``: their harmonic mean ``2 a b / (a + b)`` (0 when both are 0).

Threshold. MOOSA's script tries 10 evenly spaced thresholds between the smallest and largest
target MSP and reports the best H-score, i.e. it picks the threshold *on the target labels*
(reproduced by :func:`oracle_threshold_sweep` only to compare with published numbers). merdg
chooses it on source data only (:func:`select_threshold`): the threshold that accepts a share
``accept_rate`` (default 0.95) of the source-validation samples, all of which are known
classes, the rule of the FPR@95TPR operating point of OOD detection (Hendrycks & Gimpel, arXiv
1610.02136).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from merdg.datasets.base import UNKNOWN
from merdg.evaluation.metrics import SCORES, ArrayLike, stack_batches

__all__ = ["UNKNOWN", "evaluate_open_set", "h_score", "known_classes_of", "open_set_labels",
           "open_set_metrics", "oracle_threshold_sweep", "parse_known_classes", "reject",
           "resolve_known_classes", "select_threshold"]

DEFAULT_ACCEPT_RATE = 0.95
MIN_KNOWN_CLASSES = 2  # one known class: a single-output classifier, nothing to learn


# ---------------------------------------------------------------------------------------------
# Class splits


def known_classes_of(dataset: Any, name: str | None = None) -> tuple[int, ...]:
    """The published known classes of a dataset (class or instance), from its
    ``OPEN_SET_KNOWN_CLASSES`` attribute.

    Raises:
        ValueError: The dataset has no published split (one line, naming ``--known-classes``).
    """
    known = getattr(dataset, "OPEN_SET_KNOWN_CLASSES", None)
    if known is None:
        label = name or getattr(dataset, "__name__", type(dataset).__name__)
        raise ValueError(f"dataset {label} has no published open-set class split; choose the "
                         "known classes with --known-classes (class names or indices, "
                         "comma-separated)")
    return tuple(int(k) for k in known)


def parse_known_classes(text: str | Sequence[str | int],
                        class_names: Sequence[str]) -> tuple[int, ...]:
    """Known class indices from ``"0,1,2"``, ``"take,put"`` or a list of names/indices.

    Args:
        text: Comma-separated class names or indices (or a sequence of them).
        class_names: The dataset's class names; index ``i`` is label ``i``.

    Returns:
        Sorted, distinct indices; at least two classes and at least one class left unknown.

    Raises:
        ValueError: An unknown name, an index out of range, a repeated class, fewer than two
            classes, or every class (nothing left unknown).
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    items = [s for s in items if str(s).strip() != ""]
    if not items:
        raise ValueError("--known-classes is empty; give class names or indices, e.g. 0 1 2")
    indices = []
    for item in items:
        item = str(item).strip()
        if item in class_names:
            indices.append(class_names.index(item))
        elif item.lstrip("-").isdigit():
            index = int(item)
            if not 0 <= index < len(class_names):
                raise ValueError(f"--known-classes: index {index} outside "
                                 f"0..{len(class_names) - 1}")
            indices.append(index)
        else:
            raise ValueError(f"--known-classes: unknown class {item!r}; classes: "
                             f"{list(class_names)}")
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f"--known-classes: classes {repeated} given more than once")
    if len(indices) == len(class_names):
        raise ValueError("--known-classes lists every class; open-set evaluation needs at "
                         "least one unknown class")
    if len(indices) < MIN_KNOWN_CLASSES:
        raise ValueError(f"--known-classes lists one class ({items[0]}); open-set training "
                         f"needs at least {MIN_KNOWN_CLASSES} known classes (with one, the "
                         "classifier has a single output and always predicts it)")
    return tuple(sorted(indices))


def resolve_known_classes(dataset: Any, known_classes: Sequence[str] | None,
                          name: str | None = None) -> tuple[int, ...]:
    """The known classes of an open-set run: ``known_classes`` (``--known-classes``, names or
    indices) when given, else the dataset's published split.

    Args:
        dataset: The dataset (its ``class_names`` and ``OPEN_SET_KNOWN_CLASSES``).
        known_classes: The run's ``known_classes`` setting, or None.
        name: The dataset's registered name, for the error message.

    Raises:
        ValueError: One line: a bad class list, or no list and no published split.
    """
    if known_classes is not None:
        return parse_known_classes(known_classes, dataset.class_names)
    known = known_classes_of(dataset, name)
    out_of_range = [k for k in known if not 0 <= k < len(dataset.class_names)]
    if (out_of_range or len(known) >= len(dataset.class_names)
            or len(set(known)) < MIN_KNOWN_CLASSES):
        raise ValueError(f"dataset {name or type(dataset).__name__}: its published open-set "
                         f"split {list(known)} does not fit its {len(dataset.class_names)} "
                         "classes; choose the known classes with --known-classes")
    return known


def open_set_labels(labels: ArrayLike, known_classes: Sequence[int]) -> np.ndarray:
    """Dataset labels -> ``0..K-1`` (position among the sorted known classes) or ``UNKNOWN``."""
    y = stack_batches(labels).reshape(-1).astype(np.int64)
    known = sorted(int(k) for k in known_classes)
    table = {k: i for i, k in enumerate(known)}
    return np.array([table.get(int(v), UNKNOWN) for v in y], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Threshold and rejection


def select_threshold(source_scores: ArrayLike, accept_rate: float = DEFAULT_ACCEPT_RATE) -> float:
    """The highest threshold accepting (``score >= threshold``) at least ``accept_rate`` of the
    source-validation samples: the ``ceil(accept_rate * n)``-th largest score.

    Raises:
        ValueError: ``accept_rate`` outside (0, 1], no scores, or a non-finite score.
    """
    if not 0.0 < accept_rate <= 1.0:
        raise ValueError(f"accept_rate must be in (0, 1], got {accept_rate}")
    s = stack_batches(source_scores).astype(np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("no source scores to choose the open-set threshold from")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} source scores are not finite")
    rank = math.ceil(accept_rate * s.size - 1e-9)
    return float(np.sort(s)[::-1][rank - 1])


def reject(predictions: ArrayLike, scores: ArrayLike, threshold: float) -> np.ndarray:
    """Predictions with ``UNKNOWN`` where ``score < threshold``."""
    p = stack_batches(predictions).reshape(-1).astype(np.int64)
    s = stack_batches(scores).astype(np.float64).reshape(-1)
    if p.shape != s.shape:
        raise ValueError(f"{p.size} predictions but {s.size} scores")
    return np.where(s >= threshold, p, UNKNOWN)


# ---------------------------------------------------------------------------------------------
# Metrics


def h_score(known_acc: float, unknown_acc: float) -> float:
    """Harmonic mean of known- and unknown-class accuracy (0 when both are 0; NaN if either
    is NaN)."""
    if math.isnan(known_acc) or math.isnan(unknown_acc):
        return math.nan
    total = known_acc + unknown_acc
    return 0.0 if total == 0 else 2.0 * known_acc * unknown_acc / total


def open_set_metrics(predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """``{"h_score", "known_acc", "unknown_acc"}`` from open-set predictions and labels.

    Args:
        predictions: ``0..K-1`` or ``UNKNOWN`` per target sample (see :func:`reject`).
        labels: ``0..K-1`` or ``UNKNOWN`` per target sample (see :func:`open_set_labels`).

    Returns:
        Fractions; ``known_acc`` (``unknown_acc``) is NaN when the target has no known
        (unknown) sample, and so is ``h_score`` then.
    """
    p = stack_batches(predictions).reshape(-1).astype(np.int64)
    y = stack_batches(labels).reshape(-1).astype(np.int64)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions but {y.size} labels")
    known = y != UNKNOWN
    known_acc = float((p[known] == y[known]).mean()) if known.any() else math.nan
    unknown_acc = float((p[~known] == UNKNOWN).mean()) if (~known).any() else math.nan
    return {"h_score": h_score(known_acc, unknown_acc), "known_acc": known_acc,
            "unknown_acc": unknown_acc}


def _score(name: str, logits: ArrayLike) -> np.ndarray:
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose from {list(SCORES)}")
    return SCORES[name](logits)


def evaluate_open_set(target_logits: ArrayLike, target_labels: ArrayLike,
                      source_logits: ArrayLike, score: str = "msp",
                      accept_rate: float = DEFAULT_ACCEPT_RATE) -> dict[str, float]:
    """Open-set metrics of the target with a threshold chosen on source validation only.

    Args:
        target_logits: ``(N, K)`` logits over the K known classes (or per-batch parts).
        target_labels: ``0..K-1`` or ``UNKNOWN`` (see :func:`open_set_labels`).
        source_logits: ``(M, K)`` logits of the source-validation samples (known classes).
        score: A key of :data:`merdg.evaluation.metrics.SCORES` (``msp``, ``energy``, ...).
        accept_rate: Share of source-validation samples the threshold accepts.

    Returns:
        ``{"h_score", "known_acc", "unknown_acc", "open_set_threshold"}``.
    """
    threshold = select_threshold(_score(score, source_logits), accept_rate)
    target_scores = _score(score, target_logits)
    predictions = reject(stack_batches(target_logits).argmax(axis=1), target_scores, threshold)
    return {**open_set_metrics(predictions, target_labels), "open_set_threshold": threshold}


def oracle_threshold_sweep(target_logits: ArrayLike, target_labels: ArrayLike,
                           num_thresholds: int = 10) -> dict[str, float]:
    """MOOSA's reported numbers: the best H-score over ``num_thresholds`` evenly spaced MSP
    thresholds between the target's smallest and largest MSP. Peeks at the target labels; use
    only to compare with published MOOSA results.

    Returns:
        ``{"h_score", "known_acc", "unknown_acc", "open_set_threshold"}`` at the first
        threshold with the highest H-score (MOOSA keeps the first best, ``>``).
    """
    scores = _score("msp", target_logits)
    predictions = stack_batches(target_logits).argmax(axis=1)
    lo, hi = float(scores.min()), float(scores.max())
    best: dict[str, float] | None = None
    for k in range(num_thresholds):
        threshold = lo + (hi - lo) * k / max(num_thresholds - 1, 1)
        out = open_set_metrics(reject(predictions, scores, threshold), target_labels)
        if best is None or out["h_score"] > best["h_score"]:
            best = {**out, "open_set_threshold": threshold}
    return best
