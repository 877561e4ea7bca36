"""Gradient reversal and cross-modal translators."""

import pytest
import torch

from merdg.models.baseline_modules import CrossModalTranslators, LayerNormEncoder, grad_reverse
from merdg.models.encoders import MLPEncoder


def test_gradient_reversal_sign_and_scale():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0])).sum().backward()
    assert x.grad.tolist() == pytest.approx([-0.3, -0.6])


def test_translators_pairs_norm_tracking_and_imputation():
    torch.manual_seed(0)
    tr = CrossModalTranslators({"b": 3, "a": 2}, hidden=8)
    assert tr.pairs == [("a", "b"), ("b", "a")]
    z = {"a": torch.randn(5, 2), "b": 4 * torch.nn.functional.normalize(torch.randn(5, 3))}
    tr.track_norms(z)  # first update: the plain batch mean
    assert tr.embedding_norms[1].item() == pytest.approx(4.0)
    tr.eval()
    imputed = tr.impute({"a": z["a"]}, missing=["b"])
    assert set(imputed) == {"a", "b"} and imputed["b"].shape == (5, 3)
    assert imputed["b"].norm(dim=1).tolist() == pytest.approx([4.0] * 5, rel=1e-5)
    assert torch.equal(imputed["a"], z["a"])
    with pytest.raises(ValueError, match="no modality is left"):
        tr.impute({}, missing=["a", "b"])


def test_layernorm_encoder_keeps_out_dim():
    enc = LayerNormEncoder(MLPEncoder((6,), hidden=8, out_dim=4))
    z = enc(torch.randn(3, 6))
    assert enc.out_dim == 4 and z.mean(dim=1).abs().max() < 1e-5
