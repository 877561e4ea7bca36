"""Preprocessing shared by the on-disk readers: fixed-length time axes, input errors that name
their files, and standardization fitted on the source domains only.

Sequences are resampled, zero-padded or cropped to a fixed length (the length policy) so that
one modality's samples stack into one tensor; :func:`fit_standardization` computes the statistics
a dataset's ``fit_normalization(sources)`` applies to every domain, target included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LENGTH_POLICIES",
    "NORMALIZATION_MODES",
    "DataError",
    "Standardization",
    "crop_time",
    "fit_standardization",
    "fit_time_axis",
    "pad_time",
    "raise_problems",
    "resample_time",
]

NORMALIZATION_MODES = ("channel", "global", "none")
LENGTH_POLICIES = ("resample", "pad", "crop")


class DataError(ValueError):
    """Missing, truncated, corrupt or invalid input data; the message names every file and
    sample at fault."""


def raise_problems(problems: Sequence[str], what: str) -> None:
    """Raise one :class:`DataError` listing every problem (nothing when there are none)."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"{len(problems)} problem(s) in {what}:\n{lines}")


def resample_time(x: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of ``x`` (T, ...) along time to (length, ...); endpoints are kept.

    Only the two frames around each output position are read, so large frames (depth maps)
    stay cheap. A float32 input gives a float32 output (no float64 temporaries).
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if x.shape[0] < 1:
        raise ValueError("cannot resample an empty sequence")
    pos = np.linspace(0.0, x.shape[0] - 1, length)  # (length,)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[0] - 1)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    frac = (pos - lo).astype(dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return x[lo] * (1 - frac) + x[hi] * frac


def pad_time(x: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad ``x`` (T, ...) at the end, or crop it at the end, to (length, ...)."""
    if x.shape[0] >= length:
        return x[:length]
    pad = np.zeros((length - x.shape[0], *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


def crop_time(x: np.ndarray, length: int) -> np.ndarray:
    """The middle ``length`` frames of ``x`` (T, ...), T >= length (the extra frame of an odd
    excess is dropped at the end)."""
    if x.shape[0] < length:
        raise ValueError(f"cannot crop {x.shape[0]} frames to {length}")
    start = (x.shape[0] - length) // 2
    return x[start:start + length]


def fit_time_axis(x: np.ndarray, length: int, mode: str) -> np.ndarray:
    """``x`` (T, ...) brought to ``length`` frames by the length policy ``mode``: "resample"
    (linear interpolation), "pad" (zero-pad at the end, longer sequences cut at the end) or
    "crop" (the middle ``length`` frames; T must be >= length)."""
    if mode == "resample":
        return resample_time(x, length)
    if mode == "pad":
        return pad_time(x, length)
    if mode == "crop":
        return crop_time(x, length)
    raise ValueError(f"length policy must be one of {LENGTH_POLICIES}, got {mode!r}")


@dataclass
class Standardization:
    """``(x - mean) / std`` with statistics broadcastable to one batch of samples.

    Attributes:
        mean: Shape (1, ...) broadcastable to (N, ...).
        std: Same shape as ``mean``; channels with (near-)zero spread get std 1.
        mode: "channel", "global" or "none".
    """

    mean: Tensor
    std: Tensor
    mode: str

    def apply(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def fit_standardization(x: Tensor, mode: str, min_std: float = 1e-6) -> Standardization:
    """Statistics of ``x`` (N, ...), the samples of the source domains.

    Args:
        x: Samples of one modality, shape (N, ...).
        mode: ``"channel"``: one mean/std per entry of the last axis (the channels of a (T, C)
            sequence, the features of a (D,) vector), reduced over samples and every other axis;
            ``"global"``: one scalar mean/std (clips, images); ``"none"``: identity.
        min_std: Channels whose std is below this are divided by 1 instead.

    Returns:
        The fitted :class:`Standardization` (float32).
    """
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"normalization must be one of {NORMALIZATION_MODES}, got {mode!r}")
    shape = (1,) * x.ndim
    if mode == "none":
        return Standardization(torch.zeros(shape), torch.ones(shape), mode)
    if x.shape[0] == 0:
        raise ValueError("cannot fit normalization statistics on zero samples")
    dims = tuple(range(x.ndim - 1)) if mode == "channel" else tuple(range(x.ndim))
    var, mean = torch.var_mean(x.double(), dim=dims, unbiased=False, keepdim=True)
    std = var.sqrt()
    std = torch.where(std < min_std, torch.ones_like(std), std)
    if mode == "global":
        mean, std = mean.reshape(shape), std.reshape(shape)
    return Standardization(mean.float(), std.float(), mode)
