"""The paper's encoders: SlowFast R101 (RGB), SlowOnly R50 (flow), VGGSound ResNet-18 (audio).

As in the official code (``train_mer_dg.py``, ``docs/paper-setting.md``), each encoder is a
pretrained *trunk* (stem and stages 1-3), frozen by default, followed by a trainable *head*
(stage 4 and global average pooling):

============  =========================  ===============================  ==========
encoder       trunk (frozen)             head (trained)                   embedding
============  =========================  ===============================  ==========
slowfast      both stems, layer1-3,      slow + fast ``layer4``, pool,    2304 =
              laterals                   concat [fast | slow], dropout    256 + 2048
slowonly      stem, layer1-3             ``layer4``, pool, dropout        2048
vggsound      stem, layer1-3             ``layer4``, pool                 512
============  =========================  ===============================  ==========

Embedding order [fast 256 | slow 2048] and dropout 0.5 are those of mmaction2's
``SlowFastHead`` / ``I3DHead`` as the official code uses them (their ``fc_cls`` outputs are
never used, so the heads' classifiers are not built here).

BatchNorm in the frozen trunk (``trunk_bn``): the official code puts the video and flow
recognizers in ``train()`` mode, so their frozen BN layers normalize with batch statistics and
keep updating their running statistics (``trunk_bn="train"``, the default of ``slowfast`` and
``slowonly``); the audio network is kept in ``eval()`` (``trunk_bn="eval"``, the default of
``vggsound_resnet``). ``trunk_bn="eval"`` freezes the statistics too.

Freezing is :func:`merdg.models.transfer.freeze_parameters` on every block but the last
(``block_names()``: stems, stages 1-3 and the laterals before the final ``layer4``), exactly
what ``merdg.models.transfer.freeze(net, "all-but-last", bn=...)`` does to any encoder, with
``trunk_bn="train"`` / ``"eval"`` as ``bn="train"`` / ``"frozen"``.

Checkpoints load strictly (:mod:`merdg.models.pretrained`): the OpenMMLab files
``slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth`` and
``slowonly_r50_8x8x1_256e_kinetics400_flow_20200704-6b384243.pth`` (entry ``state_dict``, keys
``backbone.*``; ``cls_head.*`` ignored) and VGGSound's ``H.pth.tar`` (entry
``model_state_dict``, keys ``audnet.*``; ``audnet.fc.*`` ignored). The official release builds
the audio ``layer4`` as a separate module and loads the checkpoint into it with
``strict=False``; the key prefixes differ, so that ``layer4`` silently stays randomly
initialized. ``layer4_init="checkpoint"`` (default) loads it; ``layer4_init="random"``
reproduces the release and says so in the load report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from merdg.models.audio_resnet import AudioResNet
from merdg.models.encoders import ENCODERS
from merdg.models.pretrained import load_checkpoint
from merdg.models.resnet3d import Bottleneck3d, ResNet3dPathway, SlowFastBackbone
from merdg.models.transfer import encoder_blocks, freeze_parameters, hold_batchnorm_eval

__all__ = ["FrozenTrunkEncoder", "SlowFastEncoder", "SlowOnlyEncoder", "VGGSoundEncoder"]

log = logging.getLogger("merdg")


class FrozenTrunkEncoder(nn.Module):
    """Base: ``forward(x) = head(trunk(x))`` with the trunk optionally frozen.

    Subclasses implement :meth:`block_names` (the last block is the trainable head),
    :meth:`trunk` and :meth:`head`, and call :meth:`finish` at the end of ``__init__``.

    Attributes:
        checkpoint_report: Digest of the checkpoint load (recorded with the run).
    """

    out_dim: int

    def finish(self, checkpoint: str | None, trust_checkpoint: bool, freeze_trunk: bool,
               trunk_bn: str, ignore: Sequence[str], not_loaded: Sequence[str] = (),
               not_loaded_reason: str = "") -> None:
        """Load the checkpoint (if any), then freeze the trunk and set its BN mode."""
        if trunk_bn not in ("train", "eval"):
            raise ValueError(f"trunk_bn must be 'train' or 'eval', got {trunk_bn!r}")
        self.freeze_trunk, self.trunk_bn = bool(freeze_trunk), trunk_bn
        self.checkpoint_report: dict[str, Any] = {"path": None,
                                                  "note": "random initialization"}
        if checkpoint:
            report = load_checkpoint(self, checkpoint, ignore, not_loaded, not_loaded_reason,
                                     trust_checkpoint)
            (log.warning if report.not_loaded else log.info)("%s: %s", type(self).__name__,
                                                             report.text())
            self.checkpoint_report = report.summary()
        trunk = [name for block in encoder_blocks(self)[:-1] for name in block]
        if self.freeze_trunk:
            freeze_parameters(self, trunk, bn="frozen" if trunk_bn == "eval" else "train")
        elif trunk_bn == "eval":  # a trainable trunk whose BatchNorm statistics stay fixed
            hold_batchnorm_eval(self, trunk)

    def block_names(self) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def trunk(self, x: Tensor) -> Any:
        raise NotImplementedError

    def head(self, features: Any) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))  # (N, out_dim)


def _check_shape(name: str, input_shape: Sequence[int], ndim: int, layout: str) -> None:
    if len(input_shape) != ndim:
        raise ValueError(f"{name} expects samples of shape {layout}, got {tuple(input_shape)}")


def init_resnet3d(module: nn.Module) -> None:
    """mmaction2's from-scratch initialization: Kaiming-normal (fan_out) convolutions, BN
    weight 1 and bias 0, and the last BN of every bottleneck zeroed (``zero_init_residual``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, Bottleneck3d):
            nn.init.zeros_(m.conv3.bn.weight)


@ENCODERS.register("slowfast")
class SlowFastEncoder(FrozenTrunkEncoder):
    """SlowFast R101 8x8 RGB encoder (Kinetics-400 pretrained in the paper): 2304-d embedding
    [fast 256 | slow 2048], dropout 0.5.

    Args:
        input_shape: (3, T, H, W); T = 32 in the paper (slow 8 frames, fast 32).
        depth: Pathway depth (101).
        width: Slow base channels (64); fast = ``width // channel_ratio``.
        stage_blocks: Blocks per stage (overrides ``depth``; tiny models for tests).
        resample_rate / speed_ratio / channel_ratio / fusion_kernel: tau 4, alpha 4, 1/beta 8,
            lateral kernel 7.
        dropout: Dropout on the pooled embedding (0.5).
        checkpoint: Path of the OpenMMLab checkpoint (None: random initialization).
        trust_checkpoint: Unpickle the file fully (trusted files only).
        freeze_trunk: Freeze stems and stages 1-3 (official: True).
        trunk_bn: ``"train"`` (official) or ``"eval"`` BatchNorm in the frozen trunk.
    """

    def __init__(self, input_shape: tuple[int, ...], depth: int = 101, width: int = 64,
                 stage_blocks: Sequence[int] | None = None, resample_rate: int = 4,
                 speed_ratio: int = 4, channel_ratio: int = 8, fusion_kernel: int = 7,
                 dropout: float = 0.5, checkpoint: str | None = None,
                 trust_checkpoint: bool = False, freeze_trunk: bool = True,
                 trunk_bn: str = "train") -> None:
        super().__init__()
        _check_shape("slowfast", input_shape, 4, "(C, T, H, W)")
        self.backbone = SlowFastBackbone(depth, width, resample_rate, speed_ratio, channel_ratio,
                                         fusion_kernel, input_shape[0], stage_blocks)
        init_resnet3d(self.backbone)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = self.backbone.slow_path.out_channels + self.backbone.fast_path.out_channels
        self.finish(checkpoint, trust_checkpoint, freeze_trunk, trunk_bn, ignore=("cls_head.",))

    def block_names(self) -> list[tuple[str, ...]]:
        """Stems, then each stage of both pathways with the lateral that follows it."""
        slow, fast = "backbone.slow_path", "backbone.fast_path"
        return [(f"{slow}.conv1", f"{fast}.conv1", f"{slow}.conv1_lateral"),
                *[(f"{slow}.layer{i}", f"{fast}.layer{i}", f"{slow}.layer{i}_lateral")
                  for i in (1, 2, 3)],
                (f"{slow}.layer4", f"{fast}.layer4")]

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.backbone.trunk(x)

    def head(self, features: tuple[Tensor, Tensor]) -> Tensor:
        slow, fast = self.backbone.stage4(*features)
        pooled = torch.cat([fast.mean(dim=(2, 3, 4)), slow.mean(dim=(2, 3, 4))], dim=1)
        return self.dropout(pooled)  # (N, fast + slow channels)


@ENCODERS.register("slowonly")
class SlowOnlyEncoder(FrozenTrunkEncoder):
    """SlowOnly R50 8x8 optical-flow encoder (Kinetics-400 flow pretrained in the paper):
    2 input channels (x, y), 2048-d embedding, dropout 0.5.

    Args:
        input_shape: (2, T, H, W); T = 8 in the paper.
        depth / width / stage_blocks: 50, 64; ``stage_blocks`` for tiny models.
        dropout, checkpoint, trust_checkpoint, freeze_trunk, trunk_bn: as :class:`SlowFastEncoder`.
    """

    def __init__(self, input_shape: tuple[int, ...], depth: int = 50, width: int = 64,
                 stage_blocks: Sequence[int] | None = None, dropout: float = 0.5,
                 checkpoint: str | None = None, trust_checkpoint: bool = False,
                 freeze_trunk: bool = True, trunk_bn: str = "train") -> None:
        super().__init__()
        _check_shape("slowonly", input_shape, 4, "(C, T, H, W)")
        self.backbone = ResNet3dPathway(depth, input_shape[0], width, (1, 7, 7), (0, 0, 1, 1),
                                        stage_blocks=stage_blocks)
        init_resnet3d(self.backbone)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = self.backbone.out_channels
        self.finish(checkpoint, trust_checkpoint, freeze_trunk, trunk_bn, ignore=("cls_head.",))

    def block_names(self) -> list[str]:
        return ["backbone.conv1", *[f"backbone.layer{i}" for i in (1, 2, 3, 4)]]

    def trunk(self, x: Tensor) -> Tensor:
        b = self.backbone
        return b.layer3(b.layer2(b.layer1(b.stem(x))))

    def head(self, features: Tensor) -> Tensor:
        return self.dropout(self.backbone.layer4(features).mean(dim=(2, 3, 4)))  # (N, 2048)


@ENCODERS.register("vggsound_resnet")
class VGGSoundEncoder(FrozenTrunkEncoder):
    """VGGSound ResNet-18 audio encoder (1-channel spectrogram input): 512-d embedding.

    Args:
        input_shape: (1, F, T); (1, 257, 1004) in the paper.
        depth / width / stage_blocks: 18, 64; ``stage_blocks`` for tiny models.
        layer4_init: ``"checkpoint"`` loads ``layer4`` from the file; ``"random"`` keeps it at
            VGGSound's random initialization, as the official release (module docstring).
        dropout: Dropout on the pooled embedding (official: none).
        checkpoint: Path of ``H.pth.tar`` (None: random initialization).
        trust_checkpoint, freeze_trunk: as :class:`SlowFastEncoder`.
        trunk_bn: ``"eval"`` (official: the audio trunk stays in eval mode) or ``"train"``.
    """

    def __init__(self, input_shape: tuple[int, ...], depth: int = 18, width: int = 64,
                 stage_blocks: Sequence[int] | None = None, layer4_init: str = "checkpoint",
                 dropout: float = 0.0, checkpoint: str | None = None,
                 trust_checkpoint: bool = False, freeze_trunk: bool = True,
                 trunk_bn: str = "eval") -> None:
        super().__init__()
        _check_shape("vggsound_resnet", input_shape, 3, "(C, F, T)")
        if layer4_init not in ("checkpoint", "random"):
            raise ValueError(f"layer4_init must be 'checkpoint' or 'random', got {layer4_init!r}")
        self.audnet = AudioResNet(depth, input_shape[0], width, stage_blocks)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = self.audnet.out_channels
        skip = ("audnet.layer4.",) if layer4_init == "random" else ()
        self.finish(checkpoint, trust_checkpoint, freeze_trunk, trunk_bn,
                    ignore=("audnet.fc.",), not_loaded=skip,
                    not_loaded_reason="layer4_init=random, as the official release")

    def block_names(self) -> list[tuple[str, ...] | str]:
        return [("audnet.conv1", "audnet.bn1"), *[f"audnet.layer{i}" for i in (1, 2, 3, 4)]]

    def trunk(self, x: Tensor) -> Tensor:
        return self.audnet.trunk(x)

    def head(self, features: Tensor) -> Tensor:
        return self.dropout(self.audnet.layer4(features).mean(dim=(2, 3)))  # (N, 512)
