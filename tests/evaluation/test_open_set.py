"""Open-set evaluation: class splits, source-only threshold, rejection, H-score."""

import math

import numpy as np
import pytest

from merdg.datasets import DATASETS
from merdg.evaluation.open_set import (
    UNKNOWN,
    evaluate_open_set,
    h_score,
    known_classes_of,
    open_set_labels,
    open_set_metrics,
    oracle_threshold_sweep,
    parse_known_classes,
    reject,
    select_threshold,
)


def test_published_splits_follow_moosa():
    epic, hac = DATASETS.get("epic-kitchens"), DATASETS.get("hac")
    assert known_classes_of(epic) == (0, 1, 2, 4, 5, 6, 7)
    assert [epic.CLASS_NAMES[i] for i in range(8) if i not in known_classes_of(epic)] == ["close"]
    assert known_classes_of(hac) == (0, 1, 2, 4, 5, 6)
    with pytest.raises(ValueError, match="no published open-set class split.*--known-classes"):
        known_classes_of(DATASETS.get("synthetic"), "synthetic")


def test_parse_known_classes():
    names = ["take", "put", "open", "close"]
    assert parse_known_classes("0, 2,1", names) == (0, 1, 2)
    assert parse_known_classes("put,take", names) == (0, 1)
    assert parse_known_classes(["open", 0], names) == (0, 2)
    for text, message in [("", "empty"), ("4", r"index 4 outside 0..3"),
                          ("stir", "unknown class 'stir'"), ("0,take", r"\[0\] given more"),
                          ("0,1,2,3", "at least one unknown")]:
        with pytest.raises(ValueError, match=message):
            parse_known_classes(text, names)


def test_open_set_labels_map_known_classes_in_order():
    assert open_set_labels([0, 3, 7, 4, 2], (0, 1, 2, 4, 5, 6, 7)).tolist() == [
        0, UNKNOWN, 6, 3, 2]


def test_threshold_keeps_the_share_of_source_samples():
    scores = np.arange(1, 21) / 20  # 0.05 .. 1.0
    # 95% of 20 = 19 accepted: the 19th largest score is 0.10
    assert select_threshold(scores) == pytest.approx(0.10)
    assert (scores >= select_threshold(scores)).mean() == pytest.approx(0.95)
    assert select_threshold(scores, 0.5) == pytest.approx(0.55)
    assert select_threshold(scores, 1.0) == pytest.approx(0.05)
    # 95% of 10 = 9.5 -> 10 must be accepted
    assert select_threshold(np.arange(10), 0.95) == 0
    with pytest.raises(ValueError, match=r"accept_rate must be in \(0, 1\]"):
        select_threshold(scores, 0.0)


def test_reject_and_metrics_by_hand():
    predictions = reject([0, 1, 1, 0, 1], [0.9, 0.4, 0.8, 0.3, 0.6], threshold=0.5)
    assert predictions.tolist() == [0, UNKNOWN, 1, UNKNOWN, 1]
    labels = [0, 1, UNKNOWN, UNKNOWN, 0]
    out = open_set_metrics(predictions, labels)
    # known: (0 -> 0 right), (1 rejected: wrong), (0 predicted 1: wrong) -> 1/3
    # unknown: one predicted 1 (accepted), one rejected -> 1/2
    assert out["known_acc"] == pytest.approx(1 / 3)
    assert out["unknown_acc"] == pytest.approx(1 / 2)
    assert out["h_score"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert h_score(0.0, 0.0) == 0.0 and h_score(1.0, 1.0) == 1.0
    no_unknown = open_set_metrics([0, 1], [0, 0])
    assert no_unknown["known_acc"] == 0.5 and math.isnan(no_unknown["unknown_acc"])
    assert math.isnan(no_unknown["h_score"])


def test_evaluate_open_set_uses_source_scores_only():
    # 2 known classes; source MSPs 0.95 x 19 and 0.6 x 1 -> threshold 0.95 at 95% accepted
    source = np.array([[np.log(19.0), 0.0]] * 19 + [[np.log(1.5), 0.0]])
    target = np.array([[np.log(19.0), 0.0],   # known 0, confident -> right
                       [0.0, np.log(19.0)],   # known 1, confident -> right
                       [np.log(1.5), 0.0],    # known 0, MSP 0.6 -> rejected
                       [0.0, 0.0],            # unknown, MSP 0.5 -> rejected
                       [0.0, np.log(19.0)]])  # unknown, confident -> accepted as 1
    labels = [0, 1, 0, UNKNOWN, UNKNOWN]
    out = evaluate_open_set(target, labels, source)
    assert out["open_set_threshold"] == pytest.approx(0.95)
    assert out["known_acc"] == pytest.approx(2 / 3)
    assert out["unknown_acc"] == pytest.approx(1 / 2)
    # the target's labels never move the threshold
    assert evaluate_open_set(target, [1, 0, 1, 0, 1], source)["open_set_threshold"] == \
        out["open_set_threshold"]
    energy = evaluate_open_set(target, labels, source, score="energy")
    assert energy["open_set_threshold"] == pytest.approx(np.log(20.0))
    with pytest.raises(ValueError, match="unknown score 'entropy'"):
        evaluate_open_set(target, labels, source, score="entropy")


def test_oracle_sweep_is_moosa_grid_search():
    # MSPs 0.5 .. 0.95; the unknown samples are the least confident ones
    msp = np.array([0.95, 0.9, 0.85, 0.57, 0.5])
    logits = np.stack([np.log(msp / (1 - msp)), np.zeros(5)], axis=1)
    labels = [0, 0, 0, UNKNOWN, UNKNOWN]
    out = oracle_threshold_sweep(logits, labels)
    # grid 0.5, 0.55, ..., 0.95: 0.6 is the first to reject both unknowns and no known one
    assert out["h_score"] == 1.0
    assert out["open_set_threshold"] == pytest.approx(0.6)
    # below it, 0.55 rejects one unknown: H = 2 * 1 * 0.5 / 1.5
    grid_055 = open_set_metrics(reject([0] * 5, msp, 0.55), labels)
    assert grid_055["h_score"] == pytest.approx(2 / 3)


# --- known classes of a dataset, exact errors, and input forms --------------------------------

class _Split:
    """A dataset-like object with class names and, optionally, a published split."""

    def __init__(self, names, known=None):
        self.class_names = names
        if known is not None:
            self.OPEN_SET_KNOWN_CLASSES = known


def test_resolve_known_classes_prefers_the_setting_then_the_published_split():
    from merdg.evaluation.open_set import resolve_known_classes

    ds = _Split(["a", "b", "c", "d"], known=(0, 2))
    assert resolve_known_classes(ds, None) == (0, 2)
    assert resolve_known_classes(ds, ["d", "1"]) == (1, 3)
    assert resolve_known_classes(ds, "b,c") == (1, 2)
    assert resolve_known_classes(_Split(["a", "b", "c"], known=(0, 1)), None, "mine") == (0, 1)
    for known in [(0, 4), (-1, 1), (0, 1, 2, 3)]:
        with pytest.raises(ValueError, match=rf"^dataset mine: its published open-set split "
                           rf"\[{', '.join(map(str, known))}\] does not fit its 4 classes; "
                           r"choose the known classes with --known-classes$"):
            resolve_known_classes(_Split(["a", "b", "c", "d"], known=known), None, "mine")
    with pytest.raises(ValueError, match=r"^dataset _Split: its published"):
        resolve_known_classes(_Split(["a", "b"], known=(0, 1)), None)
    with pytest.raises(ValueError, match=r"^dataset _Split has no published open-set class "
                       r"split; choose the known classes with --known-classes \(class names "
                       r"or indices, comma-separated\)$"):
        resolve_known_classes(_Split(["a", "b"]), None)
    with pytest.raises(ValueError, match=r"^dataset mine has no published"):
        known_classes_of(_Split(["a"]), "mine")
    with pytest.raises(ValueError, match=r"^dataset _Split has no published"):
        known_classes_of(_Split, None)  # a class: its __name__


def test_parse_known_classes_errors_are_exact():
    names = ["take", "put", "open"]
    with pytest.raises(ValueError, match=r"^--known-classes is empty; give class names or "
                       r"indices, e.g. 0,1,2$"):
        parse_known_classes(" , ", names)
    with pytest.raises(ValueError, match=r"^--known-classes: index -1 outside 0..2$"):
        parse_known_classes("-1", names)
    with pytest.raises(ValueError, match=r"^--known-classes: unknown class '1-'; classes: "):
        parse_known_classes("1-", names)
    assert parse_known_classes([" 2 ", "take"], names) == (0, 2)


def test_outputs_are_integer_arrays_and_inputs_of_any_shape_are_flattened():
    labels = open_set_labels(np.array([[3], [1], [7]]), [1, 3])
    assert labels.tolist() == [1, 0, UNKNOWN] and labels.dtype == np.int64
    rejected = reject(np.array([[2], [1]]), np.array([[0.9], [0.1]]), 0.5)
    assert rejected.tolist() == [2, UNKNOWN] and rejected.dtype == np.int64
    metrics = open_set_metrics(np.array([[0], [UNKNOWN]]), np.array([[0], [UNKNOWN]]))
    assert metrics == {"h_score": 1.0, "known_acc": 1.0, "unknown_acc": 1.0}
    assert select_threshold(np.array([[0.2], [0.9]]), accept_rate=0.5) == 0.9
    with pytest.raises(ValueError, match=r"^2 predictions but 3 scores$"):
        reject([1, 2], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(ValueError, match=r"^2 predictions but 1 labels$"):
        open_set_metrics([1, 2], [1])


def test_missing_sides_give_nan_and_threshold_errors_are_exact():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN by rule, not by a mean of nothing
        only_known = open_set_metrics([0, 1], [0, 0])
        open_set_metrics([UNKNOWN, 0], [UNKNOWN, UNKNOWN])
    assert only_known["known_acc"] == 0.5
    assert math.isnan(only_known["unknown_acc"]) and math.isnan(only_known["h_score"])
    only_unknown = open_set_metrics([UNKNOWN, 0], [UNKNOWN, UNKNOWN])
    assert only_unknown["unknown_acc"] == 0.5 and math.isnan(only_unknown["known_acc"])
    assert math.isnan(h_score(math.nan, 0.5)) and math.isnan(h_score(0.5, math.nan))
    assert h_score(0.0, 0.0) == 0.0
    assert select_threshold([0.3], accept_rate=1.0) == 0.3  # one score is enough
    with pytest.raises(ValueError, match=r"^no source scores to choose the open-set threshold "
                       r"from$"):
        select_threshold(np.zeros(0))
    with pytest.raises(ValueError, match=r"^2 source scores are not finite$"):
        select_threshold([0.1, np.nan, np.inf])
    for rate in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^accept_rate must be in \(0, 1\], got {rate}$"):
            select_threshold([0.1], accept_rate=rate)


def test_evaluate_open_set_passes_the_accept_rate_on():
    source = np.array([[3.0, 0.0], [1.0, 0.0], [0.2, 0.0], [0.0, 0.1]])
    target = np.array([[2.0, 0.0], [0.0, 0.05]])
    loose = evaluate_open_set(target, [0, UNKNOWN], source, accept_rate=1.0)
    strict = evaluate_open_set(target, [0, UNKNOWN], source, accept_rate=0.5)
    assert loose["open_set_threshold"] < strict["open_set_threshold"]
    msp = np.sort(1 / np.exp(source - source.max(1, keepdims=True)).sum(1))[::-1]
    assert strict["open_set_threshold"] == pytest.approx(msp[1])
    assert loose["open_set_threshold"] == pytest.approx(msp[3])


def test_oracle_sweep_with_two_thresholds_uses_both_ends():
    logits = np.array([[3.0, 0.0], [0.0, 0.0]])  # MSPs ~0.95 and 0.5
    out = oracle_threshold_sweep(logits, [0, UNKNOWN], num_thresholds=2)
    msp_hi = 1 / (1 + math.exp(-3.0))
    assert out["open_set_threshold"] == pytest.approx(msp_hi)  # the top end separates them
    assert out["h_score"] == 1.0
