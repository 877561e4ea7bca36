"""The default encoder of frame sequences (issue 15 item 3) learns a moving-pattern task."""

import numpy as np
import pytest
import torch
from torch import nn

from merdg.datasets.manifest import default_encoder
from merdg.models import build_encoder


def moving_patterns(n: int, seed: int, frames: int = 6, height: int = 16, width: int = 20,
                    noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, frames, height, width) clips of a Gaussian blob on noise; class = 2 * (blob in the
    bottom half) + (blob moves left), with random start, speed and height."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    yy, xx = np.mgrid[0:height, 0:width]
    x = rng.normal(0, noise, (n, frames, height, width)).astype(np.float32)
    for i in range(n):
        bottom, left = divmod(int(y[i]), 2)
        dx = (-1 if left else 1) * rng.uniform(1.2, 2.0)
        cy = rng.uniform(0.15, 0.35) * height + bottom * height / 2
        cx = width / 2 - dx * frames / 2 + rng.uniform(-2, 2)
        for k in range(frames):
            x[i, k] += np.exp(-((yy - cy) ** 2 + (xx - cx - dx * k) ** 2) / 6.0)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_default_frame_encoder_learns_moving_patterns():
    torch.manual_seed(0)
    x, y = moving_patterns(256, seed=1)
    x_val, y_val = moving_patterns(128, seed=2)
    spec = default_encoder(tuple(x.shape[1:]))
    assert spec == {"name": "cnn3d", "channels": [8, 16, 32, 64, 64]}
    encoder = build_encoder(spec, x.shape[1:])
    model = nn.Sequential(encoder, nn.Linear(encoder.out_dim, 4))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        model.train()
        for batch in torch.randperm(len(y)).split(32):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    assert accuracy >= 0.9, accuracy  # chance is 0.25


def test_cnn3d_shapes_and_errors():
    deep = build_encoder({"name": "cnn3d", "channels": [2, 4, 4, 4, 8]}, (3, 5, 6))
    assert deep(torch.randn(2, 3, 5, 6)).shape == (2, 8)  # tiny clips survive five blocks
    channels = build_encoder({"name": "cnn3d", "channels": [4]}, (3, 4, 12, 16))
    assert channels(torch.randn(2, 3, 4, 12, 16)).shape == (2, 4)  # (C, T, H, W) clips
    with pytest.raises(ValueError, match=r"cnn3d expects samples of shape \(T, H, W\)"):
        build_encoder({"name": "cnn3d"}, (12, 16))
