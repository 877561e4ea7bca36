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


# --- temperature, defaults and half precision against loop implementations -------------------

def loop_info_nce(a, p, t):
    """-mean_i log( exp(cos(a_i, p_i)/t) / sum_j exp(cos(a_i, p_j)/t) ), by loops."""
    total = 0.0
    for i in range(len(a)):
        sims = [float(torch.nn.functional.cosine_similarity(a[i], p[j], dim=0)) / t
                for j in range(len(p))]
        total -= sims[i] - math.log(sum(math.exp(s) for s in sims))
    return total / len(a)


def loop_supcon(features, labels, t, base):
    """The docstring's formula, by loops over the N*V anchors."""
    n, v, _ = features.shape
    views = [(features[i, k], int(labels[i])) for k in range(v) for i in range(n)]
    losses = []
    for i, (zi, yi) in enumerate(views):
        others = [j for j in range(len(views)) if j != i]
        denom = math.log(sum(math.exp(float(zi @ views[j][0]) / t) for j in others))
        pos = [j for j in others if views[j][1] == yi]
        terms = [float(zi @ views[j][0]) / t - denom for j in pos]
        losses.append(-(t / base) * (sum(terms) / len(pos) if pos else 0.0))
    return sum(losses) / len(losses)


def test_info_nce_temperature_and_default_against_loops():
    torch.manual_seed(0)
    a, p = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) * 4
    assert info_nce_loss(a, p, 0.5).item() == pytest.approx(loop_info_nce(a, p, 0.5), rel=1e-9)
    assert info_nce_loss(a, p).item() == pytest.approx(loop_info_nce(a, p, 0.07), rel=1e-9)
    # float32 stays float32 (no CPU autocast to bfloat16 inside the loss)
    single = info_nce_loss(a.float(), p.float(), 0.5)
    assert single.item() == pytest.approx(loop_info_nce(a, p, 0.5), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert info_nce_loss(a.float(), p.float(), 0.5).item() == pytest.approx(
            single.item(), rel=1e-6)
    half = info_nce_loss(a.bfloat16(), p.bfloat16(), 0.5)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(loop_info_nce(a, p, 0.5), rel=0.05)


def test_multiview_info_nce_passes_temperature_over_every_ordered_pair():
    torch.manual_seed(1)
    views = {m: torch.randn(4, 3, dtype=torch.float64) for m in ("c", "a", "b")}
    pairs = [(x, y) for x in "abc" for y in "abc" if x != y]
    expected = sum(loop_info_nce(views[x], views[y], 0.3) for x, y in pairs) / 6
    assert multiview_info_nce_loss(views, 0.3).item() == pytest.approx(expected, rel=1e-9)
    default = sum(loop_info_nce(views[x], views[y], 0.07) for x, y in pairs) / 6
    assert multiview_info_nce_loss(views).item() == pytest.approx(default, rel=1e-9)
    with pytest.raises(ValueError, match=r"^multiview_info_nce_loss needs >= 2 views, got "
                       r"\['a'\]$"):
        multiview_info_nce_loss({"a": views["a"]})
    with pytest.raises(ValueError, match=r"^info_nce_loss expects two \(batch, dim\) tensors of "
                       r"one shape, got \(4, 3\) and \(4, 2\)$"):
        info_nce_loss(views["a"], views["b"][:, :2])
    with pytest.raises(ValueError, match=r"got \(4,\) and \(4,\)$"):
        info_nce_loss(views["a"][:, 0], views["b"][:, 0])


def test_supcon_temperature_defaults_and_half_precision_against_loops():
    torch.manual_seed(2)
    f = torch.nn.functional.normalize(torch.randn(4, 2, 3, dtype=torch.float64), dim=2)
    y = torch.tensor([0, 1, 0, 2])
    assert supcon_loss(f, y, 0.5, 0.25).item() == pytest.approx(loop_supcon(f, y, 0.5, 0.25),
                                                                rel=1e-9)
    assert supcon_loss(f, y).item() == pytest.approx(loop_supcon(f, y, 0.1, 0.07), rel=1e-9)
    simclr = supcon_loss(f)  # labels None: each sample its own class
    assert simclr.item() == pytest.approx(loop_supcon(f, torch.arange(4), 0.1, 0.07), rel=1e-9)
    half = supcon_loss(f.bfloat16(), y, 0.5, 0.25)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(loop_supcon(f, y, 0.5, 0.25), rel=0.05)
    with pytest.raises(ValueError, match=r"^3 labels for 4 samples$"):
        supcon_loss(f, y[:3])
    with pytest.raises(ValueError, match=r"^supcon_loss expects features \(batch, views, dim\), "
                       r"got \(4, 3\)$"):
        supcon_loss(f[:, 0])


def test_multiview_info_nce_of_exactly_two_views_is_the_mean_of_both_directions():
    torch.manual_seed(3)
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    expected = (loop_info_nce(a, b, 0.2) + loop_info_nce(b, a, 0.2)) / 2
    assert multiview_info_nce_loss({"a": a, "b": b}, 0.2).item() == pytest.approx(expected,
                                                                                   rel=1e-9)
