"""RNA, translation, entropy weighting and NEL's terms on hand-checkable inputs."""

import math

import pytest
import torch

from merdg.losses import (
    entropy_weighted_cross_entropy,
    mean_shift_embeddings,
    prediction_entropy,
    relative_norm_alignment_loss,
    translation_loss,
    von_neumann_entropy_loss,
)


def test_rna_ratio_by_hand_and_pair_order():
    a = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # norms 2
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # norms 1
    c = torch.tensor([[4.0, 0.0], [0.0, 4.0]])  # norms 4
    assert relative_norm_alignment_loss({"a": a, "b": b}).item() == pytest.approx(1.0)
    assert relative_norm_alignment_loss({"b": b, "a": a}).item() == pytest.approx(0.25)
    # pairs a/b, a/c, b/c: (2-1)^2, (0.5-1)^2, (0.25-1)^2
    expected = (1 + 0.25 + 0.5625) / 3
    assert relative_norm_alignment_loss({"a": a, "b": b, "c": c}).item() == pytest.approx(expected)
    assert relative_norm_alignment_loss({"a": a, "b": a}).item() == 0.0
    with pytest.raises(ValueError, match=">= 2"):
        relative_norm_alignment_loss({"a": a})


def test_translation_loss_by_hand():
    pred = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    target = torch.tensor([[0.0, 5.0], [2.0, 0.0]])
    # row 0: |(.6, .8) - (0, 1)| = sqrt(.4); row 1: 0
    assert translation_loss(pred, target).item() == pytest.approx(math.sqrt(0.4) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        translation_loss(pred, target[:, :1])


def test_entropy_weighting_by_hand():
    assert prediction_entropy(torch.zeros(2, 4)).tolist() == pytest.approx([math.log(4)] * 2)
    y = torch.tensor([0])
    sure = torch.tensor([[10.0, 0.0]])  # near-zero entropy, CE ~ 0
    unsure = torch.tensor([[0.0, 0.0]])  # entropy log 2, CE log 2
    h_sure = prediction_entropy(sure).item()
    w_sure = 1 / (1 + math.exp(h_sure - math.log(2)))  # softmax over (-h_sure, -log 2)
    ce_sure = torch.nn.functional.cross_entropy(sure, y).item()
    expected = w_sure * ce_sure + (1 - w_sure) * math.log(2)
    assert entropy_weighted_cross_entropy([sure, unsure], y).item() == pytest.approx(expected)
    # identical heads: weights 1/2 each, so the plain CE
    same = torch.randn(5, 3)
    labels = torch.randint(0, 3, (5,))
    plain = torch.nn.functional.cross_entropy(same, labels)
    assert torch.allclose(entropy_weighted_cross_entropy([same, same], labels), plain)


def test_mean_shift_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    # k = 1: 0 <-> 1 are mutual nearest neighbours, 2's nearest is 1
    shifted = mean_shift_embeddings(e, k=1)
    expected = torch.nn.functional.normalize(0.5 * e + 0.5 * e[[1, 0, 1]], dim=1)
    assert torch.allclose(shifted, expected)
    assert torch.allclose(mean_shift_embeddings(e[:1], k=8), e[:1])  # one sample: itself


def test_von_neumann_entropy_by_hand():
    # C = I/2 -> spectrum (1/2, 1/2) -> sum p log p = log(1/2)
    assert von_neumann_entropy_loss(torch.eye(2)).item() == pytest.approx(math.log(0.5), abs=1e-6)
    # rank one: one eigenvalue survives the 1e-6 cut -> 0
    rank_one = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert von_neumann_entropy_loss(rank_one).item() == pytest.approx(0.0, abs=1e-6)
    # N < D uses the Gram matrix; same value as the D x D path
    torch.manual_seed(0)
    wide = torch.randn(4, 10, dtype=torch.float64)
    p = torch.linalg.eigvalsh(wide.T @ wide / 4)
    p = p[p > 1e-6] / p[p > 1e-6].sum()
    assert von_neumann_entropy_loss(wide).item() == pytest.approx((p * p.log()).sum().item())
    # minimizing it spreads the spectrum (gradient flows)
    z = torch.randn(8, 3, requires_grad=True)
    von_neumann_entropy_loss(z).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_mean_shift_of_two_and_three_samples_by_hand():
    e = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # not unit rows: normalized first
    unit = torch.nn.functional.normalize(e, dim=1)
    expected = torch.nn.functional.normalize(0.5 * unit + 0.5 * unit[[1, 0]], dim=1)
    assert torch.allclose(mean_shift_embeddings(e, k=8), expected)  # k capped at N - 1 = 1
    three = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # k = 2 (capped from 8): each sample's two others, weight 0.5 / 2 each
    shifted = mean_shift_embeddings(three * 5.0)
    expected = torch.nn.functional.normalize(0.5 * three + 0.25 * (1 - three), dim=1)
    assert torch.allclose(shifted, expected)


def test_mean_shift_default_k_is_eight():
    torch.manual_seed(0)
    e = torch.randn(12, 5)
    assert torch.allclose(mean_shift_embeddings(e), mean_shift_embeddings(e, k=8))
    assert not torch.allclose(mean_shift_embeddings(e), mean_shift_embeddings(e, k=9))


def test_von_neumann_entropy_in_half_precision_and_the_eigenvalue_cut():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    full = von_neumann_entropy_loss(z)
    assert von_neumann_entropy_loss(z.bfloat16()).dtype == torch.float32
    assert von_neumann_entropy_loss(z.bfloat16()).item() == pytest.approx(full.item(), abs=0.02)
    # eigenvalues of E^T E / N: 1 and 5e-7 (cut), with N = 4 rows
    e = torch.tensor([[2.0, 0.0], [0.0, 2 * math.sqrt(5e-7)], [0.0, 0.0], [0.0, 0.0]],
                     dtype=torch.float64)
    assert von_neumann_entropy_loss(e).item() == pytest.approx(0.0, abs=1e-9)
    e[1, 1] = 2 * math.sqrt(0.25)  # eigenvalues 1 and 1/4
    p = torch.tensor([0.8, 0.2], dtype=torch.float64)
    assert von_neumann_entropy_loss(e).item() == pytest.approx((p * p.log()).sum().item(),
                                                               rel=1e-8)
