"""Shared training-loop pieces: moving averages, jigsaw permutations, GMP, MBCD, CMRF helpers."""

import itertools
import math

import pytest
import torch
from torch import nn

from merdg.algorithms.building_blocks import (
    MovingAverage,
    jigsaw_column_index,
    leave_one_out_ratios,
    lookahead_forward,
    modality_drop_probabilities,
    modulate_gradients,
    nth_permutation,
    project_conflict,
    sample_mix_coefficients,
    sample_permutations,
    suppression_coefficient,
    weighted_sum,
)


def _set(module: nn.Linear, value: float) -> None:
    with torch.no_grad():
        module.weight.fill_(value)
        module.bias.fill_(value)


def test_ema_update_math():
    student = nn.Linear(2, 1)
    _set(student, 1.0)
    ema = MovingAverage(student, "ema", beta=0.9)
    _set(student, 2.0)
    ema.update()
    assert torch.allclose(ema.average.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 2.0))
    assert not any(p.requires_grad for p in ema.parameters())
    ema.train()
    assert not ema.average.training  # always evaluated
    assert "average.weight" in ema.state_dict() and "_source" not in dict(ema.named_modules())


def test_ema_warmup_ramps_the_decay_up_to_beta_and_tracks_the_initial_share():
    student = nn.Linear(1, 1)
    _set(student, 0.0)
    ema = MovingAverage(student, "ema", beta=0.95, warmup=True)
    # TensorFlow's num_updates rule: min(beta, (1 + t) / (10 + t)) at the (t + 1)-th update
    expected = [min(0.95, (1 + t) / (10 + t)) for t in range(200)]
    assert [ema.decay(t) for t in range(200)] == pytest.approx(expected)
    assert ema.decay(0) == pytest.approx(0.1) and ema.decay(199) == 0.95
    average, share = 0.0, 1.0
    for t in range(200):
        _set(student, float(t + 1))
        ema.update()
        average = expected[t] * average + (1 - expected[t]) * (t + 1)
        share *= expected[t]
        assert ema.init_share() == pytest.approx(share, rel=1e-9, abs=1e-300)
    assert ema.average.weight.item() == pytest.approx(average)
    plain = MovingAverage(student, "ema", beta=0.95)  # off by default: the constant decay
    assert plain.decay(0) == 0.95


def test_sma_copies_until_start_then_averages_uniformly():
    student = nn.Linear(1, 1)
    sma = MovingAverage(student, "sma", start_step=2)
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        _set(student, value)
        sma.update()
        if value == 2.0:
            assert sma.average.weight.item() == pytest.approx(2.0)  # follows the student
    assert sma.average.weight.item() == pytest.approx((2 + 3 + 4 + 5) / 4)  # mean from step 2
    with pytest.raises(ValueError, match="ema"):
        MovingAverage(student, "swa")


def test_moving_average_averages_batchnorm_buffers():
    student = nn.BatchNorm1d(2)
    ema = MovingAverage(student, "ema", beta=0.5)
    student(torch.randn(8, 2) * 3 + 5)
    ema.update()
    assert torch.allclose(ema.average.running_mean, 0.5 * student.running_mean)
    assert ema.average.num_batches_tracked.item() == 1  # integer buffers are copied


def test_nth_permutation_matches_itertools_and_sampling():
    assert [nth_permutation(4, i) for i in range(24)] == list(itertools.permutations(range(4)))
    perms = sample_permutations(12, 128, seed=0)  # 12! permutations, no enumeration
    assert len(set(perms)) == 128 and all(sorted(p) == list(range(12)) for p in perms)
    assert perms == sample_permutations(12, 128, seed=0)
    assert len(sample_permutations(3, 128, seed=0)) == math.factorial(3)
    with pytest.raises(ValueError, match="out of range"):
        nth_permutation(3, 6)


def test_jigsaw_column_index_builds_the_permuted_puzzles():
    # chunks a = cols [0, 1], b = [2], c = [3, 4]
    index = jigsaw_column_index([2, 1, 2], [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
    feat = torch.tensor([[10.0, 11.0, 20.0, 30.0, 31.0]])
    assert feat[0, index].tolist() == [[10, 11, 20, 30, 31], [30, 31, 10, 11, 20],
                                       [20, 30, 31, 10, 11]]


def test_gmp_ratios_coefficients_and_projection_by_hand():
    conf = {"a": torch.tensor(0.6), "b": torch.tensor(0.3)}
    ratios = leave_one_out_ratios(conf)
    assert ratios["a"].item() == pytest.approx(2.0, rel=1e-4)
    assert ratios["b"].item() == pytest.approx(0.5, rel=1e-4)
    inverse = leave_one_out_ratios(conf, inverse=True)
    assert inverse["b"].item() == pytest.approx(2.0, rel=1e-4)
    assert leave_one_out_ratios({"a": torch.tensor(0.3)})["a"].item() == 1.0
    assert suppression_coefficient(torch.tensor(2.0), 0.5).item() == pytest.approx(
        1 - math.tanh(1.0))
    assert suppression_coefficient(torch.tensor(0.5), 0.5).item() == 1.0
    assert suppression_coefficient(torch.tensor(5.0), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    projected = project_conflict(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert projected.tolist() == pytest.approx([0.5, 0.5])  # orthogonal to (-1, 1)


def test_modulate_gradients_projects_the_stronger_task():
    g_cls, g_dom = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    one = torch.tensor(1.0)
    # no suppression (ratios <= 1); conflict; semantic ratio >= domain ratio: project g_cls
    out = modulate_gradients(g_cls, g_dom, one, one, 0.5, 0.5)
    assert out.tolist() == pytest.approx([0.5 - 1.0, 0.5 + 1.0])
    # domain task stronger: project g_dom onto the normal of g_cls
    out = modulate_gradients(g_cls, g_dom, torch.tensor(0.5), one, 0.5, 0.5)
    assert out.tolist() == pytest.approx([1.0, 1.0])
    # no conflict: only scaling (semantic ratio 2 -> 1 - tanh(0.5 * 2))
    out = modulate_gradients(g_cls, torch.tensor([1.0, 1.0]), torch.tensor(2.0), one, 0.5, 0.5)
    k = 1 - math.tanh(1.0)
    assert out.tolist() == pytest.approx([k + 1.0, 1.0])


def test_mbcd_drop_probabilities():
    p = modality_drop_probabilities({"a": torch.tensor(8.0), "b": torch.tensor(4.0)}, base=0.0)
    assert p["a"].item() == pytest.approx(math.tanh(1.0)) and p["b"].item() == 0.0
    p = modality_drop_probabilities({"a": torch.tensor(8.0), "b": torch.tensor(4.0),
                                     "c": torch.tensor(8.0)}, base=0.2)
    r = (2.0 + 1.0) / 2  # a over b and over c
    assert p["a"].item() == pytest.approx(0.2 + 0.8 * math.tanh(r - 1))
    assert p["b"].item() == 0.0
    equal = modality_drop_probabilities({"a": torch.tensor(3.0), "b": torch.tensor(3.0)}, 0.5)
    assert equal["a"].item() == 0.0  # not more confident than the others: never dropped


def test_lookahead_forward_is_the_output_after_one_sgd_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    loss = net(x).pow(2).mean()
    ahead = lookahead_forward(net, x, loss, lr=0.1)
    moved = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    moved.load_state_dict(net.state_dict())
    loss.backward(retain_graph=True)
    with torch.no_grad():
        for p, q in zip(moved.parameters(), net.parameters()):
            p -= 0.1 * q.grad
    assert torch.allclose(ahead, moved(x), atol=1e-6)
    # first order: the gradient w.r.t. the weights is the gradient at the moved point
    net.zero_grad()
    ahead.sum().backward()
    moved.zero_grad()
    moved(x).sum().backward()
    assert torch.allclose(net[0].weight.grad, moved[0].weight.grad, atol=1e-6)


def test_cmrf_mix_coefficients():
    torch.manual_seed(0)
    hi, lo = sample_mix_coefficients(1000, 0.1)
    assert hi.shape == (1000, 1) and (hi >= 0.5).all() and (lo <= 0.5).all()
    assert hi.mean() > 0.9  # Beta(0.1, 0.1) is U-shaped: mixes stay near their own modality
    hi, lo = sample_mix_coefficients(3, 0.0)
    assert hi.tolist() == [[1.0]] * 3 and lo.tolist() == [[0.0]] * 3


def test_weighted_sum_needs_every_weight():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert weighted_sum(terms, {"a": 1.0, "b": 0.5}).item() == 3.5
    with pytest.raises(KeyError, match="no weight"):
        weighted_sum(terms, {"a": 1.0})
