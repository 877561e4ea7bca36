"""Time-axis resampling, source-only standardization, the array cache and the 3-D CNN encoder."""

import numpy as np
import pytest
import torch

from merdg.datasets.cache import ArrayCache, settings_key
from merdg.datasets.preprocessing import (
    DataError,
    fit_standardization,
    fit_time_axis,
    raise_problems,
    resample_time,
)
from merdg.models import ENCODERS, build_encoder


def test_resample_time_is_linear_and_keeps_endpoints():
    x = np.stack([np.arange(5.0), 10 * np.arange(5.0)], axis=1)  # (5, 2)
    y = resample_time(x, 9)
    assert y.shape == (9, 2) and np.allclose(y[:, 0], np.arange(9) / 2)
    assert np.allclose(resample_time(x, 2), x[[0, -1]])
    assert np.allclose(resample_time(x[:1], 3), np.repeat(x[:1], 3, axis=0))
    clip = np.random.default_rng(0).normal(size=(7, 4, 5))
    assert np.allclose(resample_time(clip, 7), clip)
    with pytest.raises(ValueError):
        resample_time(x, 0)


def test_pad_and_crop():
    x = np.ones((3, 2))
    assert fit_time_axis(x, 5, "pad").tolist() == [[1, 1]] * 3 + [[0, 0]] * 2
    assert fit_time_axis(x, 2, "pad").shape == (2, 2)
    assert fit_time_axis(np.arange(6), 3, "crop").tolist() == [1, 2, 3]  # the middle frames
    with pytest.raises(ValueError, match="cannot crop 3 frames to 5"):
        fit_time_axis(x, 5, "crop")
    with pytest.raises(ValueError, match=r"length policy must be one of \('resample', 'pad', "
                                         r"'crop'\), got 'stretch'"):
        fit_time_axis(x, 2, "stretch")
    assert fit_time_axis(x.astype(np.float32), 7, "resample").dtype == np.float32


def test_standardization_modes():
    x = torch.randn(50, 7, 3) * torch.tensor([1.0, 5.0, 0.0]) + torch.tensor([2.0, -1.0, 4.0])
    channel = fit_standardization(x, "channel")
    assert channel.mean.shape == (1, 1, 3) and channel.std[0, 0, 2] == 1.0  # constant channel
    z = channel.apply(x)
    assert torch.allclose(z.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z[..., :2].std(dim=(0, 1), unbiased=False), torch.ones(2), atol=1e-4)
    scalar = fit_standardization(x, "global")
    assert scalar.mean.shape == (1, 1, 1)
    assert scalar.apply(x).mean().abs() < 1e-5
    assert torch.equal(fit_standardization(x, "none").apply(x), x)
    with pytest.raises(ValueError, match="normalization must be"):
        fit_standardization(x, "minmax")


def test_raise_problems_lists_everything():
    raise_problems([], "nothing")
    with pytest.raises(DataError, match=r"2 problem\(s\) in here:\n  - a\n  - b"):
        raise_problems(["a", "b"], "here")


def test_array_cache_roundtrip_and_key(tmp_path):
    cache = ArrayCache(tmp_path, "x", {"size": 3, "mode": "a"})
    assert cache.load() is None
    calls = []
    arrays = cache.load_or_build(lambda: calls.append(1) or {"data": np.arange(3)})
    again = ArrayCache(tmp_path, "x", {"mode": "a", "size": 3}).load_or_build(lambda: 1 / 0)
    assert calls == [1] and np.array_equal(arrays["data"], again["data"])
    assert settings_key({"size": 4, "mode": "a"}) != settings_key({"size": 3, "mode": "a"})
    # a leftover temporary file of a killed writer is never read
    other = ArrayCache(tmp_path, "y", {"size": 1})
    (tmp_path / f".{other.path.name}.123.abc.tmp").write_bytes(b"partial")
    assert other.load() is None


def test_cnn3d_encoder():
    enc = build_encoder({"name": "cnn3d", "channels": [4, 6]}, (5, 12, 16))
    x = torch.randn(3, 5, 12, 16, requires_grad=True)
    out = enc(x)
    assert out.shape == (3, 6) and enc.out_dim == 6
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    rgb = build_encoder({"name": "cnn3d", "channels": [4]}, (3, 4, 8, 8))
    assert rgb(torch.randn(2, 3, 4, 8, 8)).shape == (2, 4)
    assert "cnn3d" in ENCODERS
    with pytest.raises(ValueError, match="cnn3d expects"):
        build_encoder({"name": "cnn3d"}, (10, 6))
