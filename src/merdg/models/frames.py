"""Frame-sequence encoder: a 2-D CNN on every frame, then temporal convolution and pooling.

The default encoder of ``(T, H, W)`` (and ``(C, T, H, W)``) arrays in manifest data sets, e.g.
grayscale mouth or face crops of an audio-visual corpus or low-resolution depth clips. Each frame
is encoded on its own by a small 2-D CNN whose feature map is average-pooled to a coarse
``grid x grid`` layout (so *where* things are in the frame survives, unlike a global average),
the per-frame features are mixed over time by a 1-D convolution, and the result is averaged over
time. This is the "2-D CNN per frame + temporal model" design common in lip reading
(e.g. T. Stafylakis, G. Tzimiropoulos, "Combining Residual Networks with LSTMs for Lipreading",
Interspeech 2017, arXiv 1703.04105, section 2) scaled down to train on a CPU.

With ``mask_padding=True`` (set by the manifest for ``length_policy=pad``) frames that are
exactly zero everywhere are padding: they are not encoded, their features are zero for the
temporal convolution, and the time average covers the other frames only.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from merdg.models.encoders import ENCODERS

__all__ = ["FrameSequenceEncoder", "valid_steps"]


def valid_steps(x: Tensor, time_dim: int) -> Tensor:
    """(N, T) float mask of the steps of ``x`` that are not all-zero padding (``time_dim``: the
    time axis of ``x``, which has a batch axis first)."""
    other = [d for d in range(1, x.ndim) if d != time_dim]
    return (x.abs().amax(dim=other) > 0).to(x.dtype)


@ENCODERS.register("frames")
class FrameSequenceEncoder(nn.Module):
    """Per-frame 2-D CNN, temporal 1-D convolution, mean over time.

    Per frame: blocks Conv2d(3x3, stride 2) - BatchNorm2d - ReLU, adaptive average pooling to
    ``grid x grid``, Linear to ``frame_dim`` - ReLU. Over time: Conv1d(``temporal_kernel``) -
    BatchNorm1d - ReLU on the (N, frame_dim, T) sequence, then the (masked) mean over time and
    optional dropout. The embedding width is ``frame_dim``.

    Args:
        input_shape: (T, H, W) (one channel) or (C, T, H, W).
        channels: Output channels of the per-frame blocks.
        grid: Side of the pooled per-frame layout.
        frame_dim: Width of the per-frame features and of the embedding.
        temporal_kernel: Kernel size of the temporal convolution (odd).
        mask_padding: Treat all-zero frames as padding (see the module docstring).
        dropout: Dropout on the pooled embedding.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        channels: Sequence[int] = (8, 16, 32),
        grid: int = 3,
        frame_dim: int = 128,
        temporal_kernel: int = 3,
        mask_padding: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) not in (3, 4):
            raise ValueError(f"frames expects samples of shape (T, H, W) or (C, T, H, W), got "
                             f"{input_shape}")
        if not channels:
            raise ValueError("frames needs at least one per-frame block")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and >= 1, got {temporal_kernel}")
        self.add_channel_dim = len(input_shape) == 3
        c_in = 1 if self.add_channel_dim else input_shape[0]
        blocks: list[nn.Module] = []
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.frame_cnn = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(grid), nn.Flatten(),
                                       nn.Linear(c_in * grid * grid, frame_dim), nn.ReLU())
        self.temporal = nn.Sequential(
            nn.Conv1d(frame_dim, frame_dim, temporal_kernel, padding=temporal_kernel // 2,
                      bias=False),
            nn.BatchNorm1d(frame_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.mask_padding = mask_padding
        self.frame_dim = frame_dim
        self.out_dim = int(frame_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.add_channel_dim:
            x = x.unsqueeze(1)  # (N, T, H, W) -> (N, 1, T, H, W)
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)  # (N*T, C, H, W)
        if self.mask_padding:
            valid = valid_steps(x, time_dim=2)  # (N, T)
            keep = valid.flatten().nonzero().flatten()
            feats = frames.new_zeros(n * t, self.frame_dim)
            feats[keep] = self.frame_cnn(frames[keep]).to(feats.dtype)  # padding: not encoded
        else:
            valid = None
            feats = self.frame_cnn(frames)  # (N*T, frame_dim)
        seq = feats.reshape(n, t, -1).transpose(1, 2)  # (N, frame_dim, T)
        seq = self.temporal(seq)  # (N, frame_dim, T)
        if valid is None:
            return self.dropout(seq.mean(dim=2))
        weights = valid.unsqueeze(1)  # (N, 1, T)
        pooled = (seq * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)
        return self.dropout(pooled)  # (N, frame_dim)

