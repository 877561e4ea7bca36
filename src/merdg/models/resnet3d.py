"""3D ResNets of the paper's video encoders, with mmaction2 0.x parameter names.

Own implementation of the architectures of mmaction2 0.x (``mmaction/models/backbones/
resnet3d.py``: ``ResNet3d``, ``Bottleneck3d``; ``resnet3d_slowfast.py``: ``ResNet3dPathway``,
``ResNet3dSlowFast``; ``resnet3d_slowonly.py``: ``ResNet3dSlowOnly``), written so that the
module tree gives the same ``state_dict`` names and shapes as the public OpenMMLab checkpoints:

- every convolution is wrapped like mmcv's ``ConvModule``: ``<name>.conv.weight`` (no bias)
  and ``<name>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}``;
- a residual block is ``conv1`` (1x1x1, or 3x1x1 when the stage is "inflated"), ``conv2``
  (1x3x3, carries the spatial stride), ``conv3`` (1x1x1, no activation), optional
  ``downsample`` (1x1x1 conv + BN); stages are ``layer1`` .. ``layer4``;
- the slow pathway of SlowFast has lateral connections from the fast pathway:
  ``conv1_lateral`` and ``layer{1,2,3}_lateral``, convolutions without BN (kernel
  ``fusion_kernel`` x 1 x 1, temporal stride ``speed_ratio``) whose output is concatenated to
  the slow features, so the first block of each slow stage takes the extra channels.

SlowFast R101 8x8 (``slowfast_r101_8x8x1_256e_kinetics400_rgb.py``): resample_rate 4,
speed_ratio 4, channel_ratio 8, fusion_kernel 7; slow: depth 101, conv1 1x7x7, inflate
(0, 0, 1, 1); fast: depth 101, 8 base channels, conv1 5x7x7, inflate (1, 1, 1, 1).
SlowOnly R50 flow (``slowonly_r50_8x8x1_256e_kinetics400_flow.py``): depth 50, 2 input
channels, conv1 1x7x7, inflate (0, 0, 1, 1), no pool2, no laterals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["STAGE_BLOCKS", "Bottleneck3d", "ConvModule3d", "ResNet3dPathway",
           "SlowFastBackbone"]

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
EXPANSION = 4


class ConvModule3d(nn.Module):
    """Conv3d (no bias) + optional BatchNorm3d + optional ReLU, named like mmcv's ConvModule."""

    def __init__(self, c_in: int, c_out: int, kernel: Sequence[int],
                 stride: Sequence[int] = (1, 1, 1), padding: Sequence[int] = (0, 0, 0),
                 norm: bool = True, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, tuple(kernel), tuple(stride), tuple(padding),
                              bias=False)
        self.bn = nn.BatchNorm3d(c_out) if norm else None
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return torch.relu_(x) if self.act else x


class Bottleneck3d(nn.Module):
    """ResNet bottleneck (mmaction2 ``Bottleneck3d``, style "pytorch", inflate style 3x1x1).

    Args:
        c_in: Input channels.
        planes: Bottleneck width; the output has ``4 * planes`` channels.
        spatial_stride: Stride of ``conv2`` (and of the downsample branch).
        inflate: Temporal kernel 3 in ``conv1`` (else 1).
        downsample: Projection of the shortcut when shapes change.
    """

    def __init__(self, c_in: int, planes: int, spatial_stride: int = 1, inflate: bool = True,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        kt = 3 if inflate else 1
        self.conv1 = ConvModule3d(c_in, planes, (kt, 1, 1), padding=(kt // 2, 0, 0))
        self.conv2 = ConvModule3d(planes, planes, (1, 3, 3), (1, spatial_stride, spatial_stride),
                                  (0, 1, 1))
        self.conv3 = ConvModule3d(planes, planes * EXPANSION, (1, 1, 1), act=False)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu_(self.conv3(self.conv2(self.conv1(x))) + identity)


def make_stage(c_in: int, planes: int, blocks: int, spatial_stride: int,
               inflate: bool) -> nn.Sequential:
    """``blocks`` bottlenecks; the first changes stride/width (with a downsample branch)."""
    downsample = None
    if spatial_stride != 1 or c_in != planes * EXPANSION:
        downsample = ConvModule3d(c_in, planes * EXPANSION, (1, 1, 1),
                                  (1, spatial_stride, spatial_stride), act=False)
    layers = [Bottleneck3d(c_in, planes, spatial_stride, inflate, downsample)]
    layers += [Bottleneck3d(planes * EXPANSION, planes, 1, inflate) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet3dPathway(nn.Module):
    """One 3D ResNet pathway (mmaction2 ``ResNet3dPathway``; with ``lateral=False`` it is
    ``ResNet3dSlowOnly``).

    Args:
        depth: 50, 101 or 152 (selects the blocks per stage unless ``stage_blocks`` is given).
        in_channels: Input channels (3 RGB, 2 flow).
        base_channels: Width of the stem; stage ``i`` has bottleneck width ``base * 2**i``.
        conv1_kernel: Stem kernel (t, h, w); stride (1, 2, 2).
        inflate: Per stage, 3x1x1 (1) or 1x1x1 (0) first convolution of each block.
        lateral: Build the lateral convolutions that receive the fast pathway.
        speed_ratio / channel_ratio / fusion_kernel: SlowFast's alpha, 1/beta and the lateral
            kernel size.
        stage_blocks: Blocks per stage (overrides ``depth``; small values for tests).
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, base_channels: int = 64,
                 conv1_kernel: Sequence[int] = (1, 7, 7), inflate: Sequence[int] = (0, 0, 1, 1),
                 lateral: bool = False, speed_ratio: int = 8, channel_ratio: int = 8,
                 fusion_kernel: int = 5, stage_blocks: Sequence[int] | None = None) -> None:
        super().__init__()
        blocks = tuple(stage_blocks) if stage_blocks is not None else STAGE_BLOCKS[depth]
        if len(blocks) != 4 or len(inflate) != 4:
            raise ValueError(f"need 4 stages, got blocks {blocks} and inflate {tuple(inflate)}")
        self.lateral = lateral
        self.conv1 = ConvModule3d(in_channels, base_channels, conv1_kernel, (1, 2, 2),
                                  [(k - 1) // 2 for k in conv1_kernel])
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        if lateral:
            self.conv1_lateral = _lateral(base_channels, channel_ratio, speed_ratio, fusion_kernel)
        c_in = base_channels
        for i, n in enumerate(blocks):
            planes = base_channels * 2 ** i
            extra = c_in * 2 // channel_ratio if lateral else 0  # channels from the fast path
            stage = make_stage(c_in + extra, planes, n, 1 if i == 0 else 2, bool(inflate[i]))
            self.add_module(f"layer{i + 1}", stage)
            c_in = planes * EXPANSION
            if lateral and i < 3:
                self.add_module(f"layer{i + 1}_lateral",
                                _lateral(c_in, channel_ratio, speed_ratio, fusion_kernel))
        self.out_channels = c_in

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))

    def forward(self, x: Tensor) -> Tensor:
        """Whole pathway without laterals: (N, C, T, H, W) -> (N, out_channels, T, H/32, W/32)."""
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x


def _lateral(channels: int, channel_ratio: int, speed_ratio: int, kernel: int) -> ConvModule3d:
    """Fast -> slow lateral: (channels / ratio) -> 2 * (channels / ratio), time stride alpha."""
    return ConvModule3d(channels // channel_ratio, channels * 2 // channel_ratio, (kernel, 1, 1),
                        (speed_ratio, 1, 1), ((kernel - 1) // 2, 0, 0), norm=False, act=False)


class SlowFastBackbone(nn.Module):
    """SlowFast (Feichtenhofer et al., ICCV 2019, arXiv 1812.03982), mmaction2's
    ``ResNet3dSlowFast``: attributes ``slow_path`` and ``fast_path``.

    The slow pathway sees every ``resample_rate``-th frame, the fast pathway every
    ``resample_rate // speed_ratio``-th frame (mmaction2 subsamples with nearest-neighbour
    interpolation at scale ``1 / rate``, which picks frames ``0, rate, 2 rate, ...``: the same
    as slicing). :meth:`trunk` runs the stems and stages 1-3 with the laterals; :meth:`stage4`
    runs both ``layer4``.

    Args:
        depth: Depth of both pathways (101 in the paper).
        width: Slow pathway base channels (64); the fast pathway has ``width // channel_ratio``.
        stage_blocks: Blocks per stage for both pathways (overrides ``depth``; tests).
    """

    def __init__(self, depth: int = 101, width: int = 64, resample_rate: int = 4,
                 speed_ratio: int = 4, channel_ratio: int = 8, fusion_kernel: int = 7,
                 in_channels: int = 3, stage_blocks: Sequence[int] | None = None) -> None:
        super().__init__()
        if width % channel_ratio:
            raise ValueError(f"width {width} must be divisible by channel_ratio {channel_ratio}")
        self.resample_rate, self.speed_ratio = resample_rate, speed_ratio
        self.slow_path = ResNet3dPathway(depth, in_channels, width, (1, 7, 7), (0, 0, 1, 1),
                                         lateral=True, speed_ratio=speed_ratio,
                                         channel_ratio=channel_ratio, fusion_kernel=fusion_kernel,
                                         stage_blocks=stage_blocks)
        self.fast_path = ResNet3dPathway(depth, in_channels, width // channel_ratio, (5, 7, 7),
                                         (1, 1, 1, 1), lateral=False, stage_blocks=stage_blocks)

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, T, H, W) -> (slow, fast) features after stage 3 (with laterals)."""
        slow = self.slow_path.stem(x[:, :, ::self.resample_rate])
        fast = self.fast_path.stem(x[:, :, ::self.resample_rate // self.speed_ratio])
        slow = torch.cat([slow, self.slow_path.conv1_lateral(fast)], dim=1)
        for i in range(1, 4):
            slow = getattr(self.slow_path, f"layer{i}")(slow)
            fast = getattr(self.fast_path, f"layer{i}")(fast)
            slow = torch.cat([slow, getattr(self.slow_path, f"layer{i}_lateral")(fast)], dim=1)
        return slow, fast

    def stage4(self, slow: Tensor, fast: Tensor) -> tuple[Tensor, Tensor]:
        return self.slow_path.layer4(slow), self.fast_path.layer4(fast)
