"""Selective-prediction metrics on inputs small enough to check by hand."""

import math
import re

import numpy as np
import pytest
import torch

from merdg.evaluation.metrics import (
    aurc,
    auroc,
    energy_score,
    expected_calibration_error,
    fpr_at_tpr,
    max_logit,
    max_softmax_probability,
    selective_prediction_metrics,
)


def test_scores_from_logits():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0], [1000.0, 0.0]])
    assert max_softmax_probability(logits) == pytest.approx([0.5, 0.75, 1.0])
    # logsumexp: log 2, log 4, 1000 (no overflow)
    assert energy_score(logits) == pytest.approx([np.log(2), np.log(4), 1000.0])
    # T = 2: 2 log(1 + 1), 2 log(sqrt(3) + 1), 1000
    assert energy_score(logits, temperature=2.0) == pytest.approx(
        [2 * np.log(2), 2 * np.log(np.sqrt(3) + 1), 1000.0])
    assert max_logit(logits) == pytest.approx([0.0, np.log(3.0), 1000.0])
    # a torch tensor and per-batch parts give the same numbers
    parts = [torch.tensor(logits[:1]), torch.tensor(logits[1:])]
    assert max_softmax_probability(parts) == pytest.approx([0.5, 0.75, 1.0])


def test_aurc_by_hand():
    # sorted by score: correct, wrong, correct -> risks 0/1, 1/2, 1/3
    assert aurc([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    # input order does not matter
    assert aurc([0.7, 0.9, 0.8], [True, True, False]) == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    # perfect ranking of 2 right then 2 wrong: 0, 0, 1/3, 2/4
    assert aurc([4, 3, 2, 1], [1, 1, 0, 0]) == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    assert aurc([1, 2, 3], [1, 1, 1]) == 0.0
    assert aurc([1, 2, 3], [0, 0, 0]) == 1.0


def test_aurc_of_ties_is_the_mean_over_orders():
    # two tied samples, one wrong: orders (right, wrong) -> 0, 1/2 and (wrong, right) -> 1, 1/2
    assert aurc([0.5, 0.5], [1, 0]) == pytest.approx(((0 + 0.5) / 2 + (1 + 0.5) / 2) / 2)
    # brute force over all orders of a tie group inside a longer ranking
    scores = np.array([0.9, 0.6, 0.6, 0.6, 0.2])
    correct = np.array([1, 0, 1, 1, 0])
    values = []
    for perm in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        order = correct[[0, *(1 + np.array(perm)), 4]]
        risks = np.cumsum(1 - order) / np.arange(1, 6)
        values.append(risks.mean())
    assert aurc(scores, correct) == pytest.approx(np.mean(values))


def test_auroc_by_hand():
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # pairs (pos, neg): (0.9, 0.5) win, (0.3, 0.5) loss -> 1/2
    assert auroc([0.9, 0.5, 0.3], [1, 0, 1]) == pytest.approx(0.5)
    # a tie between a positive and a negative counts 1/2: pairs (0.7,0.7)=1/2, (0.7,0.1)=1
    assert auroc([0.7, 0.7, 0.1], [1, 0, 0]) == pytest.approx(0.75)
    # every score equal: 1/2
    assert auroc([0.3] * 5, [1, 0, 1, 0, 0]) == pytest.approx(0.5)


def test_auroc_matches_pairwise_count_on_random_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    correct = rng.uniform(size=200) < 0.6
    pos, neg = scores[correct], scores[~correct]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(scores, correct) == pytest.approx(wins / (len(pos) * len(neg)))


def test_fpr_at_95_tpr_by_hand():
    # 20 correct scored 1..20, 10 wrong scored 0.5, 1.5, ..., 9.5
    correct_scores = np.arange(1, 21, dtype=float)
    wrong_scores = np.arange(10, dtype=float) + 0.5
    scores = np.concatenate([correct_scores, wrong_scores])
    correct = np.array([1] * 20 + [0] * 10)
    # 95% of 20 = 19 correct accepted: threshold 2 -> wrong accepted: 2.5 .. 9.5 = 8 of 10
    assert fpr_at_tpr(scores, correct) == pytest.approx(0.8)
    # 100%: threshold 1 -> 1.5 .. 9.5 = 9 of 10
    assert fpr_at_tpr(scores, correct, tpr=1.0) == pytest.approx(0.9)
    # 50% = 10 correct: threshold 11 -> no wrong one accepted
    assert fpr_at_tpr(scores, correct, tpr=0.5) == 0.0


def test_fpr_at_95_tpr_accepts_a_tie_group_together():
    # the 2nd correct one ties with the only wrong one: reaching 95% accepts both
    assert fpr_at_tpr([0.9, 0.5, 0.5], [1, 1, 0]) == 1.0
    # 3 correct, TPR 2/3 at the first threshold, the tie (0.4, 0.4) brings it to 1
    assert fpr_at_tpr([0.9, 0.8, 0.4, 0.4, 0.1], [1, 1, 1, 0, 0]) == pytest.approx(0.5)


def test_degenerate_inputs_give_defined_values_or_nan():
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    assert math.isnan(fpr_at_tpr([0.1, 0.2], [0, 0]))
    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    everything_right = selective_prediction_metrics(logits, [0, 1])
    assert everything_right["aurc_msp"] == 0.0 and everything_right["aurc_energy"] == 0.0
    assert math.isnan(everything_right["auroc_msp"])
    assert math.isnan(everything_right["fpr95_energy"])
    everything_wrong = selective_prediction_metrics(logits, [1, 0])
    assert everything_wrong["aurc_msp"] == 1.0
    assert math.isnan(everything_wrong["auroc_energy"])


def test_ece_by_hand():
    # one bin (0.8, 0.867] holding 0.85 x4 with 3 correct: |0.75 - 0.85| = 0.1
    assert expected_calibration_error([0.85] * 4, [1, 1, 1, 0]) == pytest.approx(0.1)
    # two bins: {0.95, 0.95} all right -> |1 - 0.95| = 0.05; {0.55} wrong -> 0.55
    ece = expected_calibration_error([0.95, 0.95, 0.55], [1, 1, 0])
    assert ece == pytest.approx(2 / 3 * 0.05 + 1 / 3 * 0.55)
    # bins are (lo, hi]: 2/15 belongs to the 2nd bin with 0.1, not the 3rd with 0.14
    ece = expected_calibration_error([2 / 15, 0.1, 0.14], [1, 0, 0])
    assert ece == pytest.approx((abs(1 - (2 / 15 + 0.1)) + abs(0 - 0.14)) / 3)
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])


def test_selective_prediction_metrics_by_hand():
    # 4 samples, 2 classes; predictions: 0 (right), 0 (wrong), 1 (right), 1 (wrong)
    logits = np.array([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]])
    labels = np.array([0, 1, 1, 0])
    out = selective_prediction_metrics(logits, labels)
    assert set(out) == {"aurc_msp", "aurc_energy", "auroc_msp", "auroc_energy", "fpr95_msp",
                        "fpr95_energy", "ece"}
    # MSP ranks the samples by margin: 3 > 2 > 1 > 0.5 -> right, right, wrong, wrong
    assert out["aurc_msp"] == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)
    assert out["auroc_msp"] == 1.0 and out["fpr95_msp"] == 0.0
    # energy = logsumexp: 3.049, 1.313, 2.127, 0.974 -> right, right, wrong, wrong as well
    assert out["auroc_energy"] == 1.0
    msp = 1 / (1 + np.exp(-np.array([3.0, 1.0, 2.0, 0.5])))
    bins = np.ceil(msp * 15).astype(int)  # no confidence lies on an edge here
    gaps = [abs(np.mean(labels[bins == b] == logits[bins == b].argmax(1)) - msp[bins == b].mean())
            * (bins == b).sum() for b in set(bins)]
    assert out["ece"] == pytest.approx(sum(gaps) / 4)
    # streaming: per-batch torch parts give the same columns
    parts = selective_prediction_metrics([torch.tensor(logits[:3]), torch.tensor(logits[3:])],
                                         [torch.tensor(labels[:3]), torch.tensor(labels[3:])])
    assert parts == pytest.approx(out)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="not finite"):
        selective_prediction_metrics(np.array([[np.nan, 0.0]]), [0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        selective_prediction_metrics(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ValueError, match="2 rows of logits but 3 labels"):
        selective_prediction_metrics(np.zeros((2, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        selective_prediction_metrics(np.zeros(3), [0, 1, 1])
    with pytest.raises(ValueError, match="no batches"):
        selective_prediction_metrics([], [])
    with pytest.raises(ValueError, match="3 scores but 2"):
        aurc([0.1, 0.2, 0.3], [1, 0])


# --- boundaries, exact messages and input forms ----------------------------------------------

def test_input_errors_are_one_line_naming_the_problem():
    from merdg.evaluation.metrics import stack_batches

    with pytest.raises(ValueError, match=r"^no batches to evaluate \(empty sequence\)$"):
        stack_batches([])
    for bad in (np.zeros((0, 3)), np.zeros((3, 0)), np.zeros(3)):
        with pytest.raises(ValueError, match=r"^logits must have shape \(N, C\) with N, C >= 1, "
                           r"got " + re.escape(str(bad.shape)) + "$"):
            max_logit(bad)
    x = np.zeros((4, 2))
    x[2, 1], x[3, 0] = np.inf, np.nan
    with pytest.raises(ValueError, match=r"^2 of 4 rows of logits are not finite \(first: row "
                       r"2\)$"):
        max_logit(x)
    with pytest.raises(ValueError, match=r"^3 scores but 2 correctness flags$"):
        aurc([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match=r"^no predictions to evaluate$"):
        aurc(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match=r"^2 scores are not finite$"):
        aurc([0.1, np.nan, np.inf], [1, 0, 1])
    with pytest.raises(ValueError, match=r"^correctness flags must be booleans or 0/1$"):
        aurc([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match=r"^temperature must be > 0, got 0$"):
        energy_score(np.zeros((1, 2)), temperature=0)
    with pytest.raises(ValueError, match=r"^num_bins must be >= 1, got 0$"):
        expected_calibration_error([0.5], [1], num_bins=0)
    for tpr in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^tpr must be in \(0, 1\], got {tpr}$"):
            fpr_at_tpr([0.1, 0.2], [1, 0], tpr=tpr)
    with pytest.raises(ValueError, match=r"^3 rows of logits but 2 labels$"):
        selective_prediction_metrics(np.zeros((3, 5)), np.array([0, 1]))


def test_scores_and_flags_of_any_shape_are_flattened():
    scores = np.array([[0.9], [0.2], [0.6]])
    assert aurc(scores, [True, False, True]) == pytest.approx(aurc([0.9, 0.2, 0.6], [1, 0, 1]))
    assert auroc([0.9, 0.2, 0.6], np.array([[1], [0], [1]])) == 1.0


def test_bfloat16_and_float32_tensors_are_read_in_float64():
    logits = torch.tensor([[0.5, 1.5], [2.0, -1.0]], dtype=torch.bfloat16)
    assert max_logit(logits).dtype == np.float64
    assert max_logit(logits).tolist() == [1.5, 2.0]
    parts = [torch.tensor([[0.1, 0.2]]), torch.tensor([[0.3, 0.4]], dtype=torch.bfloat16)]
    assert max_logit(parts).shape == (2,)


def test_degenerate_auroc_and_fpr_give_nan_without_numpy_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for flags in ([1, 1, 1], [0, 0, 0]):
            assert math.isnan(auroc([0.1, 0.5, 0.9], flags))
            assert math.isnan(fpr_at_tpr([0.1, 0.5, 0.9], flags))


def test_boundary_values_are_accepted():
    # tpr = 1 accepts every correct prediction: here the lowest score, so every wrong one too
    assert fpr_at_tpr([0.9, 0.8, 0.1], [1, 0, 1], tpr=1.0) == 1.0
    # one bin: |accuracy - mean confidence|; a confidence of exactly 0 is allowed
    conf, flags = [0.0, 0.5, 1.0], [0, 1, 1]
    assert expected_calibration_error(conf, flags, num_bins=1) == pytest.approx(abs(2 / 3 - 0.5))
    assert energy_score(np.array([[0.0, 0.0]]), temperature=0.5)[0] == pytest.approx(
        0.5 * math.log(2.0))


def test_ece_bins_are_lo_exclusive_hi_inclusive_by_hand():
    # 3 bins (0, 1/3], (1/3, 2/3], (2/3, 1]; 0.5 and 2/3 share the middle bin, 1/3 the first
    conf = [1 / 3, 0.5, 2 / 3, 0.9, 1.0]
    flags = [1, 0, 1, 1, 0]
    bins = [[0], [1, 2], [3, 4]]
    expected = sum(abs(sum(flags[i] for i in b) - sum(conf[i] for i in b)) for b in bins) / 5
    assert expected_calibration_error(conf, flags, num_bins=3) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"^confidences must lie in \[0, 1\], got "
                       r"\[-0.1, 0.5\]$"):
        expected_calibration_error([-0.1, 0.5], [1, 0])
    with pytest.raises(ValueError, match=r"^confidences must lie in \[0, 1\], got \[0.5, 1.2\]$"):
        expected_calibration_error([0.5, 1.2], [1, 0])


def test_selective_prediction_metrics_pass_the_bins_on():
    logits = np.array([[2.0, 0.0], [0.0, 0.3], [1.0, 0.9], [0.0, 3.0]])
    labels = np.array([0, 0, 0, 1])
    one = selective_prediction_metrics(logits, labels, num_bins=1)["ece"]
    msp = max_softmax_probability(logits)
    correct = np.array([1, 0, 1, 1])
    assert one == pytest.approx(abs(correct.mean() - msp.mean()))
    assert selective_prediction_metrics(logits, labels)["ece"] == pytest.approx(
        expected_calibration_error(msp, correct))


def test_one_class_logits_and_column_labels():
    assert max_logit(np.array([[0.3], [0.7]])).tolist() == [0.3, 0.7]
    assert max_softmax_probability(np.array([[0.3], [0.7]])).tolist() == [1.0, 1.0]
    logits = np.array([[2.0, 0.0], [0.0, 0.3], [1.0, 0.9]])
    flat = selective_prediction_metrics(logits, np.array([0, 0, 0]))
    column = selective_prediction_metrics(logits, np.array([[0], [0], [0]]))
    assert flat == pytest.approx(column, nan_ok=True)
