"""Metrics of a regression task: multimodal sentiment intensity (MOSI, MOSEI, CH-SIMS).

Predictions and labels are on the [-3, 3] scale (CH-SIMS' [-1, 1] labels are multiplied by 3 by
the reader, as MMDG-Bench does). Every metric is a fraction or a plain number (not a percent):

- ``mae``: mean absolute error (lower is better);
- ``acc2``: the accuracy of (prediction > 0) against (label > 0) over every sample, zero labels
  counted as non-positive (``summarize_senti_metrics`` with ``exclude_zero=False`` in
  ``MMSA/models/*_Model.py`` of lihongzhao99/MMDG_Benchmark: neither thuiar/MMSA's "Has0"
  (negative vs non-negative) nor its "Non0" (zeros dropped));
- ``f1``: the F1 score of that binarisation, each class' F1 weighted by its number of *labels*
  (scikit-learn's ``f1_score(y_true, y_pred, average="weighted")``, as thuiar/MMSA calls it;
  MMDG-Bench passes the predictions as ``y_true``, which weighs the same per-class F1 scores by
  the number of *predictions* instead: :func:`regression_metrics` with ``f1_weights="predicted"``
  gives that value);
- ``acc7`` / ``acc5``: the accuracy of the rounded predictions against the rounded labels,
  both clipped to [-3, 3] (7 classes) or [-2, 2] (5 classes); ``numpy.round`` (halves to even)
  as thuiar/MMSA's ``eval_mosei_senti`` (``MMSA/utils/util.py`` of the benchmark prints them);
- ``corr``: Pearson's correlation of predictions and labels (None when either is constant).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["REGRESSION_METRICS", "binary_f1", "regression_metrics"]

REGRESSION_METRICS = ("mae", "acc2", "f1", "acc7", "acc5", "corr")


def binary_f1(truth: np.ndarray, predicted: np.ndarray, weights: str = "true") -> float:
    """F1 of two boolean arrays, the per-class F1 averaged with each class' share of the
    ``"true"`` labels (scikit-learn's ``average="weighted"``) or of the ``"predicted"`` ones.

    A class with no true and no predicted sample has no weight; an F1 with 0 in its denominator
    is 0, as scikit-learn's default ``zero_division``.
    """
    if weights not in ("true", "predicted"):
        raise ValueError(f"weights must be 'true' or 'predicted', got {weights!r}")
    support = truth if weights == "true" else predicted
    total = 0.0
    for positive in (False, True):
        t, p = truth == positive, predicted == positive
        tp = float(np.sum(t & p))
        denominator = float(np.sum(t) + np.sum(p))
        f1 = 2 * tp / denominator if denominator else 0.0
        total += f1 * float(np.sum(support == positive))
    return total / len(truth)


def regression_metrics(predictions: Any, labels: Any,
                       f1_weights: str = "true") -> dict[str, float | None]:
    """The metrics of the module docstring.

    Args:
        predictions: (N,) predicted values (or (N, 1)).
        labels: (N,) true values.
        f1_weights: ``"true"`` (default) or ``"predicted"`` (MMDG-Bench's argument order).

    Raises:
        ValueError: No sample, different lengths, or a non-finite value.
    """
    pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    truth = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(pred) == 0 or len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions for {len(truth)} labels")
    if not (np.isfinite(pred).all() and np.isfinite(truth).all()):
        raise ValueError("regression predictions and labels must be finite")
    positive_pred, positive_truth = pred > 0, truth > 0

    def rounded_accuracy(bound: float) -> float:
        return float(np.mean(np.round(np.clip(pred, -bound, bound))
                             == np.round(np.clip(truth, -bound, bound))))

    constant = np.ptp(pred) == 0 or np.ptp(truth) == 0
    return {"mae": float(np.mean(np.abs(pred - truth))),
            "acc2": float(np.mean(positive_pred == positive_truth)),
            "f1": binary_f1(positive_truth, positive_pred, f1_weights),
            "acc7": rounded_accuracy(3.0), "acc5": rounded_accuracy(2.0),
            "corr": None if constant else float(np.corrcoef(pred, truth)[0, 1])}
