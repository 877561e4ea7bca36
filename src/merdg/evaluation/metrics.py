"""Selective prediction (misclassification detection) and calibration metrics from logits.

A confidence score ranks the target predictions; a good score puts the wrong ones last. As
MMDG-Bench (arXiv 2605.06643; code: github.com/lihongzhao99/MMDG_Benchmark,
``Action recognition/test_untils/test_HAC_misd.py``) and Hendrycks & Gimpel (arXiv 1610.02136,
Sec. 2-3) do, the **positive class is a correct prediction** and a
higher score means "more likely correct". Scores:

- ``msp``: maximum softmax probability (Hendrycks & Gimpel, arXiv 1610.02136);
- ``energy``: the negative free energy ``T * logsumexp(logits / T)`` with ``T = 1`` (Liu et al.,
  "Energy-based Out-of-distribution Detection", arXiv 2010.03759, Sec. 2-3);
- ``max_logit``: the largest logit (Hendrycks et al., arXiv 1911.11132).

Metrics of ``(scores, correct)`` (all fractions, not percents):

- :func:`aurc`: area under the risk-coverage curve (Geifman et al., "Bias-Reduced Uncertainty
  Estimation for Deep Neural Classifiers", arXiv 1805.08206): the mean, over coverages
  ``i/n`` for ``i = 1..n``, of the error rate among the ``i`` most confident predictions. Lower
  is better; an all-correct model has 0. MMDG-Bench computes the same sum and prints it x1000.
- :func:`auroc`: probability that a correct prediction scores above a wrong one (ties count
  1/2): the area under the ROC curve of separating correct from wrong predictions.
- :func:`fpr_at_tpr`: share of wrong predictions accepted at the highest threshold that accepts
  at least 95% of the correct ones (FPR@95TPR). Lower is better.
- :func:`expected_calibration_error`: ECE with 15 equal-width confidence bins (Guo et al., "On
  Calibration of Modern Neural Networks", arXiv 1706.04599, Sec. 2; bins ``(lo, hi]`` as in
  its code, github.com/gpleiss/temperature_scaling, ``temperature_scaling.py``).

Ties of scores are handled exactly: accepting by a threshold accepts all tied samples together
(the ROC and FPR@95TPR have points at distinct scores only), and AURC is the expected value over
the orders of tied samples (a sorted-order sum would depend on the input order).

Degenerate inputs: with no wrong (or no correct) prediction, AUROC and FPR@95TPR are NaN (there
is nothing to separate; a NaN is written rather than a misleading 0 or 1); AURC is defined (0
when all are correct, 1 when all are wrong) and so is the ECE.

Streaming: the functions accept the logits of one evaluation as one ``(N, C)`` array or tensor
or as a sequence of per-batch ``(B_i, C)`` arrays/tensors (concatenated in order); labels
likewise. Under ``torch.distributed`` gather every rank's logits first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["FPR_POINTS", "SCORES", "aurc", "auroc", "energy_score", "expected_calibration_error",
           "fpr_at_tpr", "max_logit", "max_softmax_probability", "selective_prediction_metrics",
           "stack_batches"]

ArrayLike = Any  # np.ndarray | torch.Tensor | Sequence of them (per-batch parts)

ECE_BINS = 15
TPR_LEVEL = 0.95
FPR_POINTS = ("first", "nearest")  # which ROC point FPR@95TPR reads (fpr_at_tpr)


def _to_numpy(part: Any) -> np.ndarray:
    if isinstance(part, torch.Tensor):
        part = part.detach().cpu()
        return part.double().numpy() if part.is_floating_point() else part.numpy()
    return np.asarray(part)


def stack_batches(parts: ArrayLike) -> np.ndarray:
    """One array from an array/tensor or from a sequence of per-batch arrays/tensors (rows
    concatenated in order)."""
    if isinstance(parts, (np.ndarray, torch.Tensor)):
        return _to_numpy(parts)
    parts = list(parts)
    if not parts:
        raise ValueError("no batches to evaluate (empty sequence)")
    if all(np.isscalar(p) for p in parts):  # a plain list of numbers
        return np.asarray(parts)
    return np.concatenate([_to_numpy(p) for p in parts], axis=0)


def _logits(logits: ArrayLike) -> np.ndarray:
    """``(N, C)`` float64 logits, checked."""
    x = stack_batches(logits).astype(np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, C) with N, C >= 1, got {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(x)} rows of logits are not finite "
                         f"(first: row {int(np.argmax(bad))})")
    return x


def _scores_correct(scores: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = stack_batches(scores).astype(np.float64).reshape(-1)
    c = stack_batches(correct).reshape(-1)
    if s.shape != c.shape:
        raise ValueError(f"{s.size} scores but {c.size} correctness flags")
    if s.size == 0:
        raise ValueError("no predictions to evaluate")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are not finite")
    if not np.isin(c, (0, 1)).all():
        raise ValueError("correctness flags must be booleans or 0/1")
    return s, c.astype(bool)


# ---------------------------------------------------------------------------------------------
# Scores


def max_softmax_probability(logits: ArrayLike) -> np.ndarray:
    """``max_c softmax(logits)_c`` per row, shape (N,)."""
    x = _logits(logits)
    shifted = x - x.max(axis=1, keepdims=True)
    return 1.0 / np.exp(shifted).sum(axis=1)  # exp(0) / sum(exp(shifted))


def energy_score(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T * logsumexp(logits / T)`` per row, shape (N,)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = _logits(logits) / temperature
    top = x.max(axis=1)
    return temperature * (top + np.log(np.exp(x - top[:, None]).sum(axis=1)))


def max_logit(logits: ArrayLike) -> np.ndarray:
    """Largest logit per row, shape (N,)."""
    return _logits(logits).max(axis=1)


SCORES: dict[str, Callable[[ArrayLike], np.ndarray]] = {
    "msp": max_softmax_probability, "energy": energy_score, "max_logit": max_logit}


# ---------------------------------------------------------------------------------------------
# Metrics of (scores, correct)


def _tie_groups(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct score, from the highest: number of samples and of correct ones."""
    values, inverse = np.unique(-scores, return_inverse=True)  # ascending -score = descending
    size = np.bincount(inverse, minlength=len(values))
    hits = np.bincount(inverse, weights=correct.astype(np.float64), minlength=len(values))
    return size, hits


def aurc(scores: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve (lower is better; see the module docstring).

    ``(1/n) * sum_{i=1..n} errors(top i) / i`` with the samples sorted by decreasing score; a
    group of tied scores contributes the expectation over its orders, ``errors(top i)`` growing
    linearly inside the group.
    """
    s, c = _scores_correct(scores, correct)
    size, hits = _tie_groups(s, c)
    errors = size - hits
    start = np.concatenate([[0], np.cumsum(size)[:-1]])  # samples before each group
    errors_before = np.concatenate([[0.0], np.cumsum(errors)[:-1]])
    group = np.repeat(np.arange(len(size)), size)  # group of each sorted position
    position = np.arange(1, len(s) + 1)  # i = 1..n
    within = position - start[group]  # 1..size inside the group
    expected_errors = errors_before[group] + within * errors[group] / size[group]
    return float(np.mean(expected_errors / position))


def auroc(scores: ArrayLike, correct: ArrayLike) -> float:
    """AUROC of separating correct (positive) from wrong predictions by the score; NaN when
    either class is empty. Ties count 1/2 (Mann-Whitney U / (n_pos * n_neg))."""
    s, c = _scores_correct(scores, correct)
    n_pos, n_neg = int(c.sum()), int((~c).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    # average rank (1-based) of each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[c].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def fpr_at_tpr(scores: ArrayLike, correct: ArrayLike, tpr: float = TPR_LEVEL,
               point: str = "first") -> float:
    """False-positive rate at a true-positive rate of ``tpr`` (FPR@95TPR); NaN when either
    class is empty.

    Args:
        scores: Higher means "more likely positive".
        correct: The positive class (a correct prediction; for OOD detection, an OOD sample).
        tpr: The true-positive rate.
        point: Which ROC point:

            - ``"first"`` (default): the share of negatives with ``score >= t`` at the highest
              threshold ``t`` (a score of the data) accepting at least ``tpr`` of the positives,
              the first ROC point at or above ``tpr``: MMDG-Bench's OOD script
              (``Action recognition/test_untils/test_HAC_ood.py``) and Hendrycks & Gimpel
              (arXiv 1610.02136);
            - ``"nearest"``: the point whose TPR is nearest to ``tpr`` (the first of equally
              near ones) on scikit-learn's ``roc_curve`` with its default
              ``drop_intermediate=True``, which can lie below ``tpr``: MMDG-Bench's
              misclassification script (``test_HAC_misd.py``, ``np.argmin(np.abs(tpr -
              0.95))``). On a few hundred samples the two differ by up to about 0.3.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    if point not in FPR_POINTS:
        raise ValueError(f"point must be one of {FPR_POINTS}, got {point!r}")
    s, c = _scores_correct(scores, correct)
    n_pos, n_neg = int(c.sum()), int((~c).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    size, hits = _tie_groups(s, c)
    true_pos = np.cumsum(hits)  # accepted positives, thresholds from the highest score down
    false_pos = np.cumsum(size - hits)
    if point == "first":
        first = int(np.argmax(true_pos >= tpr * n_pos - 1e-9))
        return float(false_pos[first] / n_neg)
    if len(true_pos) > 2:  # scikit-learn's drop_intermediate: keep the corners only
        corner = np.logical_or(np.diff(false_pos, 2), np.diff(true_pos, 2))
        keep = np.r_[True, corner, True]
        true_pos, false_pos = true_pos[keep], false_pos[keep]
    true_rate = np.r_[0.0, true_pos] / n_pos
    false_rate = np.r_[0.0, false_pos] / n_neg
    return float(false_rate[int(np.argmin(np.abs(true_rate - tpr)))])


def expected_calibration_error(confidences: ArrayLike, correct: ArrayLike,
                               num_bins: int = ECE_BINS) -> float:
    """``sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|`` over equal-width bins
    ``(k/num_bins, (k+1)/num_bins]`` of [0, 1] (a confidence of exactly 0 falls in the first).

    Raises:
        ValueError: A confidence outside [0, 1], or ``num_bins < 1``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    conf, c = _scores_correct(confidences, correct)
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"confidences must lie in [0, 1], got [{conf.min()}, {conf.max()}]")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")  # (lo, hi] per bin
    conf_sum = np.bincount(bins, weights=conf, minlength=num_bins)
    hit_sum = np.bincount(bins, weights=c.astype(np.float64), minlength=num_bins)
    return float(np.abs(hit_sum - conf_sum).sum() / len(conf))


# ---------------------------------------------------------------------------------------------
# One evaluation


def selective_prediction_metrics(logits: ArrayLike, labels: ArrayLike,
                                 num_bins: int = ECE_BINS,
                                 fpr_point: str = "first") -> dict[str, float]:
    """The selective-prediction columns of one evaluation (e.g. the target at one epoch).

    Args:
        logits: Fused logits, ``(N, C)`` or a sequence of per-batch ``(B_i, C)`` parts.
        labels: Class indices, ``(N,)`` or a sequence of per-batch parts, in ``[0, C)``.
        num_bins: ECE bins.
        fpr_point: The ROC point of FPR@95TPR (:func:`fpr_at_tpr`).

    Returns:
        ``{"aurc_msp", "aurc_energy", "auroc_msp", "auroc_energy", "fpr95_msp",
        "fpr95_energy", "ece"}``, fractions; the prediction is the argmax of the logits (first
        maximum on ties) and the ECE uses the MSP as confidence. NaN AUROC/FPR95 when every
        prediction is right or every one is wrong.

    Raises:
        ValueError: Shapes that do not match, non-finite logits, labels outside ``[0, C)``.
    """
    x = _logits(logits)
    y = stack_batches(labels).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} rows of logits but {y.shape[0]} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= x.shape[1]:
        raise ValueError(f"labels must lie in [0, {x.shape[1]}), got [{y.min()}, {y.max()}]")
    correct = x.argmax(axis=1) == y
    scores = {"msp": max_softmax_probability(x), "energy": energy_score(x)}
    out = {}
    for name, score in scores.items():
        out[f"aurc_{name}"] = aurc(score, correct)
        out[f"auroc_{name}"] = auroc(score, correct)
        out[f"fpr95_{name}"] = fpr_at_tpr(score, correct, point=fpr_point)
    out["ece"] = expected_calibration_error(scores["msp"], correct, num_bins)
    return out
