"""Diagnostic statistics on inputs whose answer is known by hand."""

import math

import pytest
import torch

from merdg.evaluation import representation as metrics
from merdg.losses.mer import spectral_entropy_loss


def orthogonal_centered(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """(n, k) columns that are centered, orthonormal, and orthogonal to the ones vector."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, k, generator=g, dtype=torch.float64)
    a = torch.cat([torch.ones(n, 1, dtype=torch.float64), a], dim=1)
    q = torch.linalg.qr(a).Q
    return q[:, 1:]  # orthogonal to the constant column, hence centered


def with_covariance(eigenvalues, n=50, seed=0):
    """Features whose sample covariance is exactly diag(eigenvalues), then randomly rotated."""
    k = len(eigenvalues)
    z = orthogonal_centered(n, k, seed) * torch.tensor(eigenvalues, dtype=torch.float64).mul(
        n - 1).sqrt()
    rotation = torch.linalg.qr(torch.randn(k, k, dtype=torch.float64,
                                           generator=torch.Generator().manual_seed(9))).Q
    return z @ rotation + 3.0


@pytest.mark.parametrize("eigenvalues, expected", [
    ([1.0, 1.0, 1.0, 1.0], 4.0),
    ([5.0, 0.0, 0.0, 0.0], 1.0),
    ([2.0, 1.0, 1.0], 2 ** 1.5),  # p = (1/2, 1/4, 1/4): exp(1.5 ln 2)
    ([3.0, 3.0, 0.0], 2.0),
])
def test_effective_rank_of_known_spectra(eigenvalues, expected):
    assert metrics.effective_rank(with_covariance(eigenvalues)) == pytest.approx(expected, 1e-9)


def test_effective_rank_is_scale_free_and_zero_for_constants():
    z = with_covariance([4.0, 1.0, 1.0, 0.5])
    assert metrics.effective_rank(10 * z) == pytest.approx(metrics.effective_rank(z), 1e-9)
    assert metrics.effective_rank(torch.ones(10, 3)) == 0.0


def test_spectral_term_is_the_mer_loss_and_reaches_its_floor():
    n = 20
    # uncorrelated features with biased std 1 (n > d): the official standardization divides by
    # std + eps, so the correlation matrix is n / (n - 1) / (1 + eps)^2 I
    x = orthogonal_centered(n, 5) * math.sqrt(n)
    expected = -math.log(n / (n - 1) / (1 + 1e-4) ** 2 + 1e-4)
    assert metrics.spectral_term(x) == pytest.approx(expected, 1e-9)
    floor = metrics.spectral_floor(n, 5)  # a lower bound, tight up to the eps of the std
    assert 0 <= metrics.spectral_term(x) - floor < 1e-3
    # n < d: duplicated columns spread equally over the n - 1 non-null directions
    u = orthogonal_centered(n, n - 1) * math.sqrt(n)
    dup = torch.cat([u, u], dim=1)
    assert 0 <= metrics.spectral_term(dup) - metrics.spectral_floor(n, 2 * (n - 1)) < 1e-3
    z = torch.randn(n, 2 * (n - 1), dtype=torch.float64)
    assert metrics.spectral_term(z) == pytest.approx(float(spectral_entropy_loss(z)), 1e-12)
    assert metrics.spectral_term(z) > metrics.spectral_floor(n, 2 * (n - 1)) + 0.01


def test_spectral_floor_values():
    # docs/mer-loss.md, reference values: at N = 16, D = 128 the 113 null eigenvalues alone
    # give 8.131; random Gaussian data (reference L_spec 7.877953) sits just above the floor
    assert metrics.spectral_floor(16, 128) == pytest.approx(7.8722, abs=1e-4)
    assert 0 < 7.877953 - metrics.spectral_floor(16, 128) < 0.01
    # the synthetic benchmark's batch of 48 with 128-d projections
    assert metrics.spectral_floor(48, 128) == pytest.approx(5.4528, abs=1e-4)
    assert abs(metrics.spectral_floor(10_000, 64)) < 1e-3
    with pytest.raises(ValueError, match="n >= 2"):
        metrics.spectral_floor(1, 8)


def test_feature_std_and_marginal_term():
    z = torch.randn(200, 6, dtype=torch.float64) * torch.tensor([1, 2, 3, 0.5, 0.1, 4.0])
    assert torch.allclose(metrics.feature_std(z), z.std(0))
    expected = torch.relu(1 - (z.var(0) + 1e-4).sqrt()).mean()
    assert metrics.marginal_term(z) == pytest.approx(float(expected))


def naive_unbiased_hsic(x, y):
    """Song et al. (2012) eq. 5 with explicit n x n kernels."""
    n = x.shape[0]
    k, l_ = x @ x.T, y @ y.T
    k.fill_diagonal_(0)
    l_.fill_diagonal_(0)
    one = torch.ones(n, dtype=x.dtype)
    return (torch.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ k @ l_ @ one)) / (n * (n - 3))


def test_feature_space_hsic_matches_the_kernel_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, dtype=torch.float64, generator=g)
    y = torch.randn(12, 3, dtype=torch.float64, generator=g) + x[:, :3]
    assert float(metrics._hsic_unbiased_linear(x, y)) == pytest.approx(
        float(naive_unbiased_hsic(x, y)), 1e-10)


def test_cka_identical_rotated_and_independent():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 16, dtype=torch.float64, generator=g)
    q = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64, generator=g)).Q
    assert metrics.linear_cka(x, x) == pytest.approx(1.0, 1e-9)
    assert metrics.linear_cka(x, 3 * x @ q + 7) == pytest.approx(1.0, 1e-9)
    y = torch.randn(300, 16, dtype=torch.float64, generator=g)
    assert abs(metrics.linear_cka(x, y)) < 0.03
    # the plain estimator is biased towards d / (n + d) for independent features
    assert metrics.linear_cka(x, y, debiased=False) == pytest.approx(16 / 316, abs=0.03)
    small_x, small_y = x[:40], y[:40]
    assert metrics.linear_cka(small_x, small_y, debiased=False) > 0.2
    assert abs(metrics.linear_cka(small_x, small_y)) < 0.1
    assert metrics.linear_cka(x, torch.ones(300, 2)) == 0.0


def test_cka_grows_with_shared_signal():
    g = torch.Generator().manual_seed(3)
    shared = torch.randn(500, 4, dtype=torch.float64, generator=g)
    values = []
    for weight in (0.0, 0.5, 1.0, 3.0):
        x = torch.cat([weight * shared, torch.randn(500, 8, dtype=torch.float64, generator=g)], 1)
        y = torch.cat([weight * shared, torch.randn(500, 8, dtype=torch.float64, generator=g)], 1)
        values.append(metrics.linear_cka(x, y))
    assert values == sorted(values) and values[0] < 0.03 and values[-1] > 0.8


def test_canonical_correlations():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, 5, dtype=torch.float64, generator=g)
    a = torch.randn(5, 5, dtype=torch.float64, generator=g)
    ones = torch.ones(5, dtype=torch.float64)
    assert torch.allclose(metrics.canonical_correlations(x, x @ a + 1), ones, atol=1e-8)
    s = torch.randn(400, 1, dtype=torch.float64, generator=g)
    x = torch.cat([s, torch.randn(400, 3, dtype=torch.float64, generator=g)], 1)
    y = torch.cat([s + 0.1 * torch.randn(400, 1, dtype=torch.float64, generator=g),
                   torch.randn(400, 3, dtype=torch.float64, generator=g)], 1)
    cc = metrics.canonical_correlations(x, y)
    assert cc[0] > 0.99 and cc[1] < 0.25
    assert len(metrics.canonical_correlations(x, y, components=2)) == 2


def test_remove_class_means():
    z = torch.randn(30, 4, dtype=torch.float64)
    y = torch.arange(30) % 3
    r = metrics.remove_class_means(z + 10 * y[:, None], y)
    for c in range(3):
        assert torch.allclose(r[y == c].mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="labels"):
        metrics.remove_class_means(z, y[:5])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="NaN/Inf"):
        metrics.effective_rank(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(n_samples, dim\)"):
        metrics.spectral_term(torch.zeros(5))
    with pytest.raises(ValueError, match="samples but"):
        metrics.linear_cka(torch.randn(10, 2), torch.randn(9, 2))
    with pytest.raises(ValueError, match="at least 4"):
        metrics.linear_cka(torch.randn(3, 2), torch.randn(3, 2))
