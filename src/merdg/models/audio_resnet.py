"""The VGGSound audio ResNet (Chen et al., ICASSP 2020, arXiv 2004.14368), own implementation.

Same module tree as ``models/resnet.py`` of github.com/hche11/VGGSound (a torchvision-style
2D ResNet with a 1-channel ``conv1``), so that the ``state_dict`` names and shapes match the
released ``H.pth.tar`` ("avgpool" ResNet-18, 309 classes), whose ``model_state_dict`` holds the
keys of ``AVENet`` (``audnet.`` + the ResNet's names):

``conv1.weight`` (64, 1, 7, 7), ``bn1.*``, ``layer{1..4}.{b}.{conv1,bn1,conv2,bn2}.*``,
``layer{2,3,4}.0.downsample.{0,1}.*`` (1x1 conv + BN), ``fc.{weight,bias}`` (309, 512).

The classifier ``fc`` is not part of this module (the paper's encoder stops at the pooled
512-d feature); checkpoint loading reports it as ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AudioResNet", "BasicBlock2d", "vggsound_init"]

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock2d(nn.Module):
    """Two 3x3 convolutions with BN and a shortcut (torchvision ``BasicBlock`` names)."""

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu_(self.bn1(self.conv1(x)))
        return torch.relu_(self.bn2(self.conv2(out)) + identity)


class AudioResNet(nn.Module):
    """Stem (7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2) and 4 stages of basic blocks.

    Args:
        depth: 18 (the released model) or 34.
        in_channels: Input channels (1: a spectrogram).
        width: Stem width; stage ``i`` has ``width * 2**i`` channels (64 in VGGSound).
        stage_blocks: Blocks per stage (overrides ``depth``; small values for tests).
    """

    def __init__(self, depth: int = 18, in_channels: int = 1, width: int = 64,
                 stage_blocks: Sequence[int] | None = None) -> None:
        super().__init__()
        blocks = tuple(stage_blocks) if stage_blocks is not None else STAGE_BLOCKS[depth]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            stage = [BasicBlock2d(c_in, planes, 1 if i == 0 else 2)]
            stage += [BasicBlock2d(planes, planes) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c_in = planes
        self.out_channels = c_in
        vggsound_init(self)

    def trunk(self, x: Tensor) -> Tensor:
        """(N, 1, F, T) -> stage-3 features (N, 4 * width, F/16, T/16)."""
        x = self.maxpool(torch.relu_(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def vggsound_init(module: nn.Module) -> None:
    """VGGSound's initialization: Kaiming-normal (fan_out) convolutions, BN weight ~ N(1, 0.02),
    BN bias 0. It is also what the official release's audio ``layer4`` starts from."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, mean=1.0, std=0.02)
            nn.init.zeros_(m.bias)
