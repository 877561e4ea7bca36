r"""The MER-DG loss: modality-entropy regularization of one encoder's features.

For one modality's batch :math:`z \in \mathbb{R}^{N \times D}` the official code computes

.. math::

    L_\text{marg} &= \frac{1}{D} \sum_j \max\bigl(0,\;
        \gamma - \sqrt{\operatorname{Var}_{N-1}(z_{:,j}) + \epsilon_m}\bigr)

    L_\text{spec} &= -\frac{1}{D}
        \log\bigl|\det\bigl(\tfrac{1}{N-1} x^\top x + \epsilon_s I_D\bigr)\bigr|,
    \quad x = \frac{z - \bar z}{\max(\sigma_N(z) + \epsilon_s,\, \epsilon_s)}

    \mathrm{MER}(z) &= \alpha_\text{marg} L_\text{marg} + \alpha_\text{spec} L_\text{spec}

with :math:`\sigma_N` the *biased* per-feature std while the correlation uses an :math:`N-1`
divisor (so its diagonal is :math:`N/(N-1)`, not 1). Defaults: :math:`\gamma = 1`,
:math:`\epsilon_m = \epsilon_s = 10^{-4}`, :math:`\alpha_\text{marg} = \alpha_\text{spec} = 1`.
Minimizing :math:`L_\text{spec}` maximizes the log-det of the correlation matrix, a Gaussian
entropy proxy; :math:`L_\text{marg}` is the VICReg variance floor.

When :math:`N < D` the :math:`D \times D` log-det is computed through the :math:`N \times N` Gram
matrix with the exact identity
:math:`\det(\epsilon I_D + x^\top x / c) = \epsilon^{D-N} \det(\epsilon I_N + x x^\top / c)`.

References:
    - [0] Yarici & AlRegib, "Modality-Entropy Regularization for Multimodal Domain
      Generalization", ICML 2026, https://arxiv.org/abs/2605.01967 (official code
      ``EPIC-rgb-flow-audio/losses.py``; see ``docs/mer-loss.md``).
    - [1] Bardes et al., "VICReg", ICLR 2022, https://arxiv.org/abs/2105.04906
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from merdg import dist

__all__ = [
    "NonFiniteFeaturesError",
    "MERTerms",
    "MERLoss",
    "mer_loss",
    "mer_terms",
    "marginal_entropy_loss",
    "spectral_entropy_loss",
    "correlation_logdet",
]

# The Gram (N x N) path is taken when it is smaller than the D x D path.
_AUTO = "auto"
# the official values of mer_terms' keyword arguments
_TERM_DEFAULTS: dict[str, Any] = {"alpha_marg": 1.0, "alpha_spec": 1.0, "std_target": 1.0,
                                  "marg_eps": 1e-4, "spec_eps": 1e-4, "unbiased": True,
                                  "path": _AUTO}


class MERTerms(NamedTuple):
    """The MER-DG loss of one tensor and its two weighted-sum ingredients (unweighted).

    Attributes:
        loss: ``alpha_marg * marginal + alpha_spec * spectral`` (scalar).
        marginal: L_marg, the variance-floor hinge averaged over features (scalar).
        spectral: L_spec, minus the log-det of the correlation matrix divided by D (scalar).
    """

    loss: Tensor
    marginal: Tensor
    spectral: Tensor


class NonFiniteFeaturesError(ValueError):
    """Features given to MER-DG hold NaN or Inf.

    Attributes:
        modalities: The modalities whose features are not finite (empty for one tensor).
    """

    def __init__(self, message: str, modalities: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.modalities = modalities


def _check_features(z: Tensor, finite: bool = True) -> None:
    """Type, shape and dtype of one modality's features; NaN/Inf too when ``finite``."""
    if not isinstance(z, Tensor):
        raise TypeError(f"MER-DG expects a torch.Tensor, got {type(z).__name__}")
    if z.ndim != 2:
        raise ValueError(
            f"MER-DG expects features of shape (batch, dim), got shape {tuple(z.shape)}; "
            "pool or flatten encoder outputs first (see merdg.FeatureTap's `pool`)"
        )
    if not z.dtype.is_floating_point:
        raise TypeError(f"MER-DG expects floating-point features, got dtype {z.dtype}")
    if finite and not bool(torch.isfinite(z).all()):
        raise NonFiniteFeaturesError(_non_finite_message(z))


def _non_finite_message(z: Tensor) -> str:
    bad = int((~torch.isfinite(z)).sum())
    return (f"MER-DG received non-finite features: {bad} of {z.numel()} entries of the "
            f"{tuple(z.shape)} batch are NaN or Inf")


def _upcast(z: Tensor) -> Tensor:
    """Half-precision inputs (autocast outputs) are computed in float32; float64 stays float64."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def marginal_entropy_loss(z: Tensor, std_target: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Variance floor: mean over features of ``max(0, std_target - sqrt(var_unbiased + eps))``.

    Args:
        z: Features with shape (batch_size, dim), batch_size >= 2 (already gathered), or a
            stack of such batches, (modalities, batch_size, dim).
        std_target: The hinge's target standard deviation (official: 1.0).
        eps: Added to the unbiased variance inside the square root (official: 1e-4).

    Returns:
        Scalar tensor (one per batch of a stack: (modalities,)).
    """
    std = torch.sqrt(z.var(dim=-2, unbiased=True) + eps)  # (..., D)
    return torch.relu(std_target - std).mean(dim=-1)


def _standardize(z: Tensor, eps: float) -> Tensor:
    """Center, then divide by the biased std + eps (clamped at eps), as the official code."""
    x = z - z.mean(dim=-2, keepdim=True)  # (..., N, D)
    std = x.std(dim=-2, unbiased=False, keepdim=True) + eps  # (..., 1, D)
    return x / std.clamp_min(eps)


def _logdet_spd(m: Tensor) -> Tensor:
    """log det of symmetric positive-definite matrices (..., K, K) (Cholesky; slogdet for those
    where it fails)."""
    chol, info = torch.linalg.cholesky_ex(m)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=-1)
    failed = info != 0
    if bool(failed.any()):
        logdet = torch.where(failed, torch.linalg.slogdet(m).logabsdet, logdet)
    return logdet


def correlation_logdet(x: Tensor, eps: float, divisor: float, path: str = _AUTO) -> Tensor:
    """``log det(x^T x / divisor + eps I_D)`` for x of shape (N, D), exactly, by the cheaper path.

    Args:
        x: Standardized features with shape (batch_size, dim), or a stack of them
            (modalities, batch_size, dim).
        eps: The ridge added to the diagonal.
        divisor: The scalar dividing ``x^T x`` (official: N - 1).
        path: ``"auto"`` (Gram when N < D), ``"gram"`` (N x N) or ``"covariance"`` (D x D).

    Returns:
        Scalar tensor (one per batch of a stack).
    """
    n, d = x.shape[-2:]
    if path == _AUTO:
        path = "gram" if n < d else "covariance"
    if path == "covariance":
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return _logdet_spd(x.mT @ x / divisor + eps * eye)
    if path == "gram":
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        # det(eps I_D + X^T X / c) = eps^(D - N) det(eps I_N + X X^T / c)  (Sylvester)
        return (d - n) * math.log(eps) + _logdet_spd(x @ x.mT / divisor + eps * eye)
    raise ValueError(f"path must be 'auto', 'gram' or 'covariance', got {path!r}")


def spectral_entropy_loss(
    z: Tensor, eps: float = 1e-4, unbiased: bool = True, path: str = _AUTO
) -> Tensor:
    """Minus the log-det of the feature correlation matrix (+ eps I), divided by D.

    Args:
        z: Features with shape (batch_size, dim), batch_size >= 2 (already gathered), or a
            stack of such batches, (modalities, batch_size, dim).
        eps: Used three times as in the official code: std + eps, clamp_min(eps), + eps I.
        unbiased: Divide ``x^T x`` by N - 1 (official) instead of N.
        path: See :func:`correlation_logdet`; ``"auto"`` picks the cheaper exact path.

    Returns:
        Scalar tensor (one per batch of a stack); 0 when dim < 2 (as the official code).
    """
    n, d = z.shape[-2:]
    if d < 2:
        return z.sum(dim=(-2, -1)) * 0.0
    x = _standardize(z, eps)
    divisor = n - 1 if unbiased else n
    return -correlation_logdet(x, eps, divisor, path) / d


def mer_terms(
    z: Tensor,
    *,
    alpha_marg: float = 1.0,
    alpha_spec: float = 1.0,
    std_target: float = 1.0,
    marg_eps: float = 1e-4,
    spec_eps: float = 1e-4,
    unbiased: bool = True,
    gather_distributed: bool = True,
    path: str = _AUTO,
) -> MERTerms:
    """The MER-DG loss of one modality's features and its two terms.

    Args:
        z: Features with shape (batch_size, dim). float16/bfloat16 inputs are computed in float32.
        alpha_marg: Weight of the variance floor L_marg (official: 1.0).
        alpha_spec: Weight of the log-det term L_spec (official: 1.0).
        std_target: Target std of the variance floor (official: 1.0).
        marg_eps: Epsilon inside the variance floor's square root (official: 1e-4).
        spec_eps: Epsilon of the log-det term (official: 1e-4; see
            :func:`spectral_entropy_loss`).
        unbiased: N - 1 divisor for the correlation matrix (official) rather than N.
        gather_distributed: Under ``torch.distributed``, compute the statistics on the batch
            gathered from all ranks (gradients flow back to each rank's rows). No effect otherwise.
        path: Log-det path, ``"auto"`` (default), ``"gram"`` or ``"covariance"``.

    Returns:
        :class:`MERTerms`. With fewer than 2 samples (after gathering) every term is 0, as in the
        official code: batch statistics are undefined for one sample, and a zero that keeps the
        graph connected lets a final short batch pass without an error.

    Raises:
        TypeError: ``z`` is not a floating-point tensor.
        ValueError: ``z`` is not 2-D or holds NaN/Inf.
    """
    _check_features(z)
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = _upcast(z)
        if gather_distributed:
            z = dist.gather(z)
        return _terms(z, alpha_marg, alpha_spec, std_target, marg_eps, spec_eps, unbiased, path)


def _terms(z: Tensor, alpha_marg: float, alpha_spec: float, std_target: float, marg_eps: float,
           spec_eps: float, unbiased: bool, path: str) -> MERTerms:
    """:class:`MERTerms` of checked, upcast and gathered features (N, D), or of a stack of
    them (M, N, D) with one value per batch in each term (every operation acts on the last
    two dimensions, batch by batch: the numbers are those of each batch alone)."""
    if z.shape[-2] < 2:
        zero = z.sum(dim=(-2, -1)) * 0.0
        return MERTerms(zero, zero, zero)
    marginal = marginal_entropy_loss(z, std_target, marg_eps)
    spectral = spectral_entropy_loss(z, spec_eps, unbiased, path)
    return MERTerms(alpha_marg * marginal + alpha_spec * spectral, marginal, spectral)


def mer_loss(z: Tensor, *, return_terms: bool = False, **kwargs) -> Tensor | MERTerms:
    """The MER-DG loss of one modality's batch (official defaults).

    Args:
        z: Features with shape (batch_size, dim).
        return_terms: Return :class:`MERTerms` (loss, marginal, spectral) instead of the scalar.
        **kwargs: Keyword arguments of :func:`mer_terms` (alpha_marg, alpha_spec, std_target,
            marg_eps, spec_eps, unbiased, gather_distributed, path).

    Returns:
        The scalar loss, or :class:`MERTerms` when ``return_terms``.

    Examples:
        >>> import torch, merdg
        >>> z = torch.randn(16, 128, dtype=torch.float64)
        >>> merdg.mer_loss(z).shape
        torch.Size([])
    """
    terms = mer_terms(z, **kwargs)
    return terms if return_terms else terms.loss


class MERLoss(nn.Module):
    """MER-DG over several modalities: ``reduce_m weight_m * MER(z_m)``.

    Args:
        alpha_marg: Weight of the variance floor (official: 1.0).
        alpha_spec: Weight of the log-det term (official: 1.0).
        reduction: ``"sum"`` over modalities (official) or ``"mean"``.
        weights: Optional per-modality multipliers; modalities not listed get 1.0.
        **kwargs: Other keyword arguments of :func:`mer_terms`.

    Inputs:
        features: Mapping ``{modality: (batch_size, dim_m) tensor}``, visited in sorted order.

    Examples:
        >>> mer = MERLoss()
        >>> feats = {"video": torch.randn(16, 128), "audio": torch.randn(16, 128)}
        >>> loss = mer(feats)  # add lambda * loss to the task loss (official lambda = 3.0)
    """

    def __init__(
        self,
        alpha_marg: float = 1.0,
        alpha_spec: float = 1.0,
        reduction: str = "sum",
        weights: Mapping[str, float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        self.weights = dict(weights or {})
        unknown = sorted(set(kwargs) - {*_TERM_DEFAULTS, "gather_distributed"})
        if unknown:
            raise TypeError(f"MERLoss got unknown keyword arguments {unknown}; those of "
                            f"mer_terms are {sorted({*_TERM_DEFAULTS, 'gather_distributed'})}")
        self.kwargs = dict(alpha_marg=alpha_marg, alpha_spec=alpha_spec, **kwargs)

    def terms(self, features: Mapping[str, Tensor]) -> dict[str, MERTerms]:
        """Per-modality :class:`MERTerms` (unweighted by ``weights``), keys sorted.

        Modalities whose features share a shape (after gathering), dtype and device are
        computed in one batched pass (one variance, one batched matrix product and Cholesky
        factorization for all of them), each with the numbers of its own computation.

        Raises:
            NonFiniteFeaturesError: Features of some modalities hold NaN/Inf (named in the
                message and in its ``modalities``); checked once, on the gathered batch.
            ValueError, TypeError: Features that are not a 2-D floating-point tensor.
        """
        if not features:
            raise ValueError("MERLoss received no features: pass {modality: (N, D) tensor}")
        names = sorted(features)
        for m in names:
            try:
                _check_features(features[m], finite=False)
            except (ValueError, TypeError) as err:
                raise type(err)(f"modality {m!r}: {err}") from err
        settings = dict(self.kwargs)
        gather = settings.pop("gather_distributed", True)
        device_type = features[names[0]].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            ready = {m: _upcast(features[m]) for m in names}
            if gather:
                ready = {m: dist.gather(z) for m, z in ready.items()}
            groups: dict[tuple[Any, ...], list[str]] = defaultdict(list)
            for m in names:
                z = ready[m]
                groups[(tuple(z.shape), z.dtype, z.device)].append(m)
            terms: dict[str, MERTerms] = {}
            for group in groups.values():
                terms.update(self._group_terms(group, ready, settings))
        return {m: terms[m] for m in names}

    @staticmethod
    def _group_terms(group: list[str], ready: Mapping[str, Tensor],
                     settings: dict[str, Any]) -> dict[str, MERTerms]:
        """The terms of modalities whose features have one shape: (N, D) alone, or stacked
        (M, N, D)."""
        z = ready[group[0]] if len(group) == 1 else torch.stack([ready[m] for m in group])
        if not bool(torch.isfinite(z).all()):
            bad = tuple(m for m in group if not bool(torch.isfinite(ready[m]).all()))
            raise NonFiniteFeaturesError(
                "; ".join(f"modality {m!r}: {_non_finite_message(ready[m])}" for m in bad), bad)
        terms = _terms(z, **{**_TERM_DEFAULTS, **settings})
        if len(group) == 1:
            return {group[0]: terms}
        parts = zip(terms.loss.unbind(0), terms.marginal.unbind(0), terms.spectral.unbind(0))
        return {m: MERTerms(*part) for m, part in zip(group, parts)}

    def reduce(self, terms: Mapping[str, MERTerms]) -> Tensor:
        """Combine per-modality terms into the scalar loss (weights, then sum or mean)."""
        total = sum(self.weights.get(m, 1.0) * t.loss for m, t in terms.items())
        return total / len(terms) if self.reduction == "mean" else total

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        return self.reduce(self.terms(features))
