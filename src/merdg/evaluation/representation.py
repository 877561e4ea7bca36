r"""Statistics of frozen features: diversity of one modality, dependence between two.

Every function takes features ``z`` of shape (n_samples, dim) (rows are samples) and returns
Python floats (or a tensor of per-dimension values). They are computed in float64 on whatever
samples they are given; :mod:`merdg.diagnostics.analysis` feeds them a whole domain at a time.

Diversity of one modality's features:

- per-dimension standard deviation (unbiased);
- the MER-DG terms themselves, evaluated with :mod:`merdg.losses.mer` (not re-derived):
  :math:`L_\text{spec} = -\log\det(C + \epsilon I)/D` on the correlation matrix :math:`C`, and the
  variance floor :math:`L_\text{marg}`; :func:`spectral_floor` gives the smallest value
  :math:`L_\text{spec}` can take for a given number of samples;
- the effective rank [1] of the covariance matrix, :math:`\exp(-\sum_i p_i \log p_i)` with
  :math:`p_i = \lambda_i / \sum_j \lambda_j` over its eigenvalues: the number of equally strong
  directions the features spread over (1 for collapsed features, ``dim`` for isotropic ones).

Dependence between two modalities' features of the same samples:

- linear CKA [2], by default with the unbiased HSIC estimator [3] (debiased CKA [4]), which is
  near 0 for independent features at any sample size, where the plain estimator is about
  :math:`d/(n+d)` for independent d-dimensional features;
- canonical correlations [5] between the top principal components of each side (SVCCA [6]).

References:
    - [1] Roy & Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO
      2007, https://infoscience.epfl.ch/record/110188
    - [2] Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019,
      https://arxiv.org/abs/1905.00414
    - [3] Song et al., "Feature Selection via Dependence Maximization", JMLR 2012 (unbiased HSIC,
      eq. 5), https://jmlr.org/papers/v13/song12a.html
    - [4] Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn the Same Things?", ICLR
      2021 (debiased CKA), https://arxiv.org/abs/2010.15327
    - [5] Hotelling, "Relations between two sets of variates", Biometrika 1936.
    - [6] Raghu et al., "SVCCA", NeurIPS 2017, https://arxiv.org/abs/1706.05806
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from merdg.losses.mer import marginal_entropy_loss, spectral_entropy_loss

__all__ = [
    "canonical_correlations",
    "effective_rank",
    "feature_std",
    "linear_cka",
    "marginal_term",
    "remove_class_means",
    "spectral_floor",
    "spectral_term",
]


def _as_samples(z: Tensor, name: str = "features", min_rows: int = 2) -> Tensor:
    """Validate a (n_samples, dim) feature matrix and return it in float64."""
    if not isinstance(z, Tensor) or z.ndim != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a (n_samples, dim) tensor, got {shape}")
    if z.shape[0] < min_rows:
        raise ValueError(f"{name} has {z.shape[0]} samples; at least {min_rows} are needed")
    if not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).sum())
        raise ValueError(f"{name} holds {bad} NaN/Inf entries of {z.numel()}")
    return z.detach().to(torch.float64)


def _centered(z: Tensor) -> Tensor:
    return z - z.mean(dim=0, keepdim=True)


def feature_std(z: Tensor) -> Tensor:
    """Unbiased standard deviation of each feature dimension, shape (dim,)."""
    return _as_samples(z).std(dim=0, unbiased=True)


def spectral_term(z: Tensor, eps: float = 1e-4) -> float:
    """MER-DG's L_spec on ``z``: ``-logdet(corr(z) + eps I) / dim`` (lower = more diverse).

    The exact training-time formula (:func:`merdg.losses.mer.spectral_entropy_loss`), evaluated
    on all rows of ``z`` at once.
    """
    return float(spectral_entropy_loss(_as_samples(z), eps=eps))


def marginal_term(z: Tensor, eps: float = 1e-4) -> float:
    """MER-DG's variance floor L_marg on ``z`` (mean over dims of ``max(0, 1 - std)``)."""
    return float(marginal_entropy_loss(_as_samples(z), eps=eps))


def spectral_floor(n: int, dim: int, eps: float = 1e-4) -> float:
    r"""The smallest value L_spec can take on ``n`` samples of ``dim`` features.

    The standardized, centered ``n x dim`` matrix has rank :math:`r \le \min(n-1, d)` and its
    correlation matrix (``N - 1`` divisor, as in training) has trace :math:`d\,n/(n-1)`. The
    log-det is largest when the :math:`r` non-zero eigenvalues are equal, so

    .. math::

        L_\text{spec} \ge -\frac{1}{d}\Bigl[r \log\Bigl(\frac{d\,n}{(n-1)\,r} + \epsilon\Bigr)
            + (d - r)\log \epsilon\Bigr].

    (The official standardization divides by ``std + eps``, which lowers the trace slightly, so
    the bound holds and is tight up to a relative ``2 eps / std``.) With ``n <= dim`` the
    :math:`(d - r)` null eigenvalues equal :math:`\epsilon` whatever the features are: at the
    synthetic benchmark's batch of 48 and ``dim = 128`` the floor is 5.45.
    """
    if n < 2 or dim < 1:
        raise ValueError(f"need n >= 2 samples and dim >= 1, got n={n}, dim={dim}")
    r = min(n - 1, dim)
    eigen = dim * n / ((n - 1) * r)
    return -(r * math.log(eigen + eps) + (dim - r) * math.log(eps)) / dim


def _covariance_eigenvalues(z: Tensor) -> Tensor:
    x = _centered(_as_samples(z))
    cov = x.T @ x / (x.shape[0] - 1)  # (D, D)
    return torch.linalg.eigvalsh(cov).clamp_min(0.0)


def effective_rank(z: Tensor) -> float:
    """``exp`` of the Shannon entropy of the normalized covariance eigenvalues (Roy & Vetterli).

    Between 1 (all variance along one direction) and ``dim`` (equal variance in every
    direction); 0 for constant features. At most ``n_samples - 1``.
    """
    eig = _covariance_eigenvalues(z)
    total = eig.sum()
    if total <= 0:
        return 0.0
    p = eig[eig > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _hsic_unbiased_linear(x: Tensor, y: Tensor) -> Tensor:
    """Song et al.'s unbiased HSIC of linear kernels K = x x^T, L = y y^T, in feature space.

    ``tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1``, all over ``n(n-3)``, where
    ``~`` zeroes the diagonal; every term is computed without forming the n x n kernels.
    """
    n = x.shape[0]
    kd, ld = (x * x).sum(1), (y * y).sum(1)  # kernel diagonals, (n,)
    trace_kl = (x.T @ y).square().sum() - (kd * ld).sum()
    k_row = x @ x.sum(0) - kd  # K~ 1, (n,)
    l_row = y @ y.sum(0) - ld  # L~ 1, (n,)
    sum_k, sum_l = k_row.sum(), l_row.sum()
    middle = sum_k * sum_l / ((n - 1) * (n - 2))
    return (trace_kl + middle - 2.0 / (n - 2) * (k_row * l_row).sum()) / (n * (n - 3))


def _hsic_biased_linear(x: Tensor, y: Tensor) -> Tensor:
    """``||x_c^T y_c||_F^2`` (the biased HSIC of linear kernels, up to a factor (n-1)^-2)."""
    return (_centered(x).T @ _centered(y)).square().sum()


def linear_cka(x: Tensor, y: Tensor, debiased: bool = True) -> float:
    """Linear centered kernel alignment between two feature sets of the same samples.

    Args:
        x: Features (n_samples, dim_x).
        y: Features (n_samples, dim_y) of the same samples, in the same order.
        debiased: Use the unbiased HSIC estimator (needs n >= 4); the plain estimator is
            biased upwards when ``n`` is not much larger than the dims.

    Returns:
        1 for features equal up to rotation and isotropic scaling, about 0 for independent
        features (the debiased value can be slightly negative). 0 if either side is constant.
    """
    x, y = _as_samples(x, "x", 4 if debiased else 2), _as_samples(y, "y", 4 if debiased else 2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    hsic = _hsic_unbiased_linear if debiased else _hsic_biased_linear
    xx, yy = hsic(x, x), hsic(y, y)
    if xx <= 0 or yy <= 0:
        return 0.0
    return float(hsic(x, y) / torch.sqrt(xx * yy))


def _principal_components(z: Tensor, k: int) -> Tensor:
    """Centered scores on the top-``k`` principal directions, (n, k)."""
    u, s, _ = torch.linalg.svd(_centered(z), full_matrices=False)
    keep = s > s.max() * 1e-10  # drop null directions (rank-deficient or constant features)
    return (u * s)[:, keep][:, :k]


def canonical_correlations(x: Tensor, y: Tensor, components: int = 10) -> Tensor:
    """Canonical correlations between the top principal components of ``x`` and of ``y``.

    Each side is reduced to its ``components`` strongest principal directions (fewer if its
    rank is smaller), then the canonical correlations are the singular values of
    ``Q_x^T Q_y`` (orthonormal bases of the centered scores).

    Args:
        x: Features (n_samples, dim_x).
        y: Features (n_samples, dim_y) of the same samples.
        components: Principal components kept per side. For independent features the top
            correlations are about ``sqrt(components / n)``, so keep ``components`` well below n.

    Returns:
        Correlations in [0, 1], descending, shape (min(k_x, k_y),).
    """
    x, y = _as_samples(x, "x", 3), _as_samples(y, "y", 3)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    px, py = _principal_components(x, components), _principal_components(y, components)
    if px.shape[1] == 0 or py.shape[1] == 0:
        return torch.zeros(0, dtype=torch.float64)
    qx, qy = torch.linalg.qr(px).Q, torch.linalg.qr(py).Q
    return torch.linalg.svdvals(qx.T @ qy).clamp(0.0, 1.0)


def remove_class_means(z: Tensor, y: Tensor) -> Tensor:
    """``z`` minus the mean of its class: what remains once the label is accounted for.

    Dependence between two modalities' residuals measures co-variation *beyond* the shared
    label, the cross-modal co-occurrence MER-DG's paper blames for fusion overfitting.
    """
    z = _as_samples(z)
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels of shape {tuple(y.shape)} for {z.shape[0]} samples")
    out = z.clone()
    for c in torch.unique(y):
        rows = y == c
        out[rows] -= z[rows].mean(dim=0, keepdim=True)
    return out
