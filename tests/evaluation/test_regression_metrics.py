"""Regression metrics (MOSI / MOSEI / CH-SIMS) on hand-checkable values and against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from merdg.evaluation.regression import binary_f1, regression_metrics


def test_acc2_counts_zero_labels_as_non_positive_and_mae_is_the_mean_error():
    pred = np.array([0.5, -0.2, 0.1, -1.0, 2.0])
    truth = np.array([1.0, 0.0, 0.0, -2.0, 0.0])
    m = regression_metrics(pred, truth)
    # (pred > 0) vs (truth > 0): T/T, F/F, T/F, F/F, T/F -> 3 of 5
    assert m["acc2"] == pytest.approx(3 / 5)
    assert m["mae"] == pytest.approx(np.mean([0.5, 0.2, 0.1, 1.0, 2.0]))


def test_f1_is_weighted_by_true_labels_and_the_benchmarks_order_by_predictions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        truth = rng.integers(0, 2, 17).astype(bool)
        pred = rng.integers(0, 2, 17).astype(bool)
        assert binary_f1(truth, pred) == pytest.approx(
            f1_score(truth, pred, average="weighted"))
        # MMDG-Bench calls f1_score(preds > 0, truth > 0): the predictions are y_true
        assert binary_f1(truth, pred, "predicted") == pytest.approx(
            f1_score(pred, truth, average="weighted"))
    with pytest.raises(ValueError, match="weights"):
        binary_f1(truth, pred, "both")


def test_acc7_acc5_round_half_to_even_after_clipping_and_corr_is_pearson():
    pred = np.array([2.5, -3.7, 0.5, 1.49, -2.6])
    truth = np.array([2.0, -3.0, 0.0, 1.0, -3.0])
    m = regression_metrics(pred, truth)
    # round(clip(., -3, 3)): 2, -3, 0, 1, -3 vs 2, -3, 0, 1, -3: all equal
    assert m["acc7"] == 1.0
    # clip to [-2, 2] first: 2, -2, 0, 1, -2 vs 2, -2, 0, 1, -2
    assert m["acc5"] == 1.0
    assert m["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])
    assert regression_metrics(np.ones(3), np.array([1.0, 2.0, 3.0]))["corr"] is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        regression_metrics(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        regression_metrics(np.array([np.nan]), np.zeros(1))


def test_the_clean_evaluation_of_a_regression_split_selects_on_acc2():
    from merdg.evaluators.clean import CleanAccuracy, split_metrics
    from merdg.evaluators.predictions import Predictions

    out = np.array([[0.5], [-0.2], [0.1], [-1.0], [2.0]], np.float32)
    truth = np.array([1.0, 0.0, 0.0, -2.0, 0.0], np.float32)
    signs = (np.sign(truth) + 1).astype(np.int64)
    probes = {"a": signs.copy()}
    split = split_metrics(Predictions(out, (np.sign(out[:, 0]) + 1).astype(np.int64), signs,
                                      probes, float(np.abs(out[:, 0] - truth).sum()), truth))
    expected = regression_metrics(out[:, 0], truth)
    # acc (what the selection rules and trial choice read) is Acc-2, loss (their tie-break) L1
    assert split["acc"] == pytest.approx(expected["acc2"])
    assert split["loss"] == pytest.approx(expected["mae"]) == split["mae"]
    assert split["probe_acc"]["a"] == 1.0
    columns = CleanAccuracy().epoch_columns({"val": {**split, "n": 5}, "target": split})
    assert columns["target_acc"] == pytest.approx(0.6)
    assert {"target_mae", "target_f1", "target_acc7", "target_acc5", "target_corr",
            "val_mae"} <= set(columns)
