"""SupCon and InfoNCE on cases computed by hand."""

import math

import pytest
import torch

from merdg.losses import info_nce_loss, multiview_info_nce_loss, supcon_loss

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def test_supcon_two_samples_two_views_by_hand():
    # sample 0: both views e1; sample 1: both views e2; distinct labels; tau = tau_b = 1.
    # anchor e1: positive e1 (sim 1), negatives e2, e2 (sim 0): -log(e / (e + 2))
    features = torch.stack([torch.stack([E1, E1]), torch.stack([E2, E2])])  # (2, 2, 2)
    loss = supcon_loss(features, torch.tensor([0, 1]), temperature=1.0, base_temperature=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)


def test_supcon_label_positives_and_anchor_without_positive():
    # one view; labels [0, 0, 1]: anchors 0 and 1 have one positive each, anchor 2 has none
    features = torch.stack([E1, E1, E2])[:, None]  # (3, 1, 2)
    loss = supcon_loss(features, torch.tensor([0, 0, 1]), temperature=1.0, base_temperature=1.0)
    assert loss.item() == pytest.approx(2 / 3 * (math.log(math.e + 1) - 1), rel=1e-6)


def test_supcon_temperature_scale_and_default_simclr_positives():
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(5, 2, 8), dim=2)
    y = torch.arange(5)
    # distinct labels = SimCLR (labels None); base_temperature only rescales
    assert torch.allclose(supcon_loss(f, y), supcon_loss(f, None))
    ratio = supcon_loss(f, y, 0.1, 0.07) / supcon_loss(f, y, 0.1, 0.1)
    assert ratio.item() == pytest.approx(0.1 / 0.07 / (0.1 / 0.1), rel=1e-6)
    with pytest.raises(ValueError, match="batch, views, dim"):
        supcon_loss(f[:, 0], y)
    with pytest.raises(ValueError, match="labels for"):
        supcon_loss(f, y[:3])


def test_info_nce_by_hand_and_multiview_mean():
    a = torch.stack([E1, E2])
    # row 0: logits [1, 0] -> -log(e / (e + 1)); same for row 1
    expected = math.log(1 + math.exp(-1))
    assert info_nce_loss(a, a, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # cosine similarity: scaling rows changes nothing
    assert info_nce_loss(3 * a, a, 1.0).item() == pytest.approx(expected, rel=1e-6)
    views = {"x": a, "y": a.flip(0), "z": a}
    pairs = [("x", "y"), ("x", "z"), ("y", "x"), ("y", "z"), ("z", "x"), ("z", "y")]
    mean = sum(info_nce_loss(views[p], views[q], 1.0) for p, q in pairs) / 6
    assert multiview_info_nce_loss(views, 1.0).item() == pytest.approx(mean.item(), rel=1e-6)
    with pytest.raises(ValueError, match=">= 2 views"):
        multiview_info_nce_loss({"x": a})
