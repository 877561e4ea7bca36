"""A small 3-D CNN for short clips (depth maps, low-resolution video, mouth crops) that trains on a
CPU."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from merdg.models.encoders import ENCODERS, conv_bn_blocks

__all__ = ["Conv3DEncoder"]


@ENCODERS.register("cnn3d")
class Conv3DEncoder(nn.Module):
    """3-D CNN for clips (N, T, H, W) or (N, C, T, H, W): conv blocks, then global average pool.

    Each block is Conv3d(kernel, padding kernel // 2) - BatchNorm3d - ReLU. The first block
    strides only in space (1, 2, 2), keeping the few frames of a short clip; later blocks stride
    2 in time and space. The embedding is the space-time average of the last feature map,
    optionally followed by dropout. Each block doubles the receptive field: with 3x3x3 kernels,
    3 blocks see 15 pixels and 5 blocks 63, so only deeper stacks relate the parts of a 60 x 80
    frame before the average discards where things are.

    With ``mask_padding`` (set by the manifest for ``length_policy=pad``), frames that are zero
    everywhere are padding: after each block the padded time steps are set to 0 (what the
    convolution's own zero padding would read) and the average covers the valid steps only
    (BatchNorm's batch statistics still see the padded steps).

    Args:
        input_shape: (T, H, W) (one channel, e.g. depth) or (C, T, H, W).
        channels: Output channels of each block; the embedding width is the last one.
        kernel_size: Cubic kernel size (odd).
        dropout: Dropout on the pooled embedding.
        mask_padding: Treat all-zero frames as padding.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        channels: Sequence[int] = (8, 16, 32),
        kernel_size: int = 3,
        dropout: float = 0.0,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) not in (3, 4):
            raise ValueError(f"cnn3d expects samples of shape (T, H, W) or (C, T, H, W), got "
                             f"{input_shape}")
        if not channels:
            raise ValueError("cnn3d needs at least one block")
        self.add_channel_dim = len(input_shape) == 3
        c_in = 1 if self.add_channel_dim else input_shape[0]
        blocks: list[nn.Module] = []
        for i, c_out in enumerate(channels):
            stride = (1, 2, 2) if i == 0 else (2, 2, 2)
            blocks += [nn.Conv3d(c_in, c_out, kernel_size, stride=stride,
                                 padding=kernel_size // 2, bias=False),
                       nn.BatchNorm3d(c_out), nn.ReLU()]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.mask_padding = mask_padding
        self.out_dim = int(channels[-1])

    def block_names(self) -> list[tuple[str, str]]:
        """One (convolution, BatchNorm) pair per block, in forward order."""
        return conv_bn_blocks(self.blocks, "blocks")

    def forward(self, x: Tensor) -> Tensor:
        if self.add_channel_dim:
            x = x.unsqueeze(1)  # (N, T, H, W) -> (N, 1, T, H, W)
        if self.mask_padding:
            return self._masked_forward(x)
        h = self.blocks(x)  # (N, C', T', H', W')
        return self.dropout(h.mean(dim=(2, 3, 4)))  # (N, C')

    def _masked_forward(self, x: Tensor) -> Tensor:
        valid = (x.abs().amax(dim=(1, 3, 4)) > 0).to(x.dtype)  # (N, T): not all-zero padding
        h = x
        for layer in self.blocks:
            h = layer(h)
            if isinstance(layer, nn.Conv3d):
                valid = valid[:, ::layer.stride[0]]  # the step at each output's centre
            elif isinstance(layer, nn.ReLU):
                h = h * valid[:, None, :, None, None]
        cells = valid.sum(dim=1, keepdim=True) * h.shape[3] * h.shape[4]  # (N, 1)
        return self.dropout(h.sum(dim=(2, 3, 4)) / cells.clamp(min=1.0))  # (N, C')
