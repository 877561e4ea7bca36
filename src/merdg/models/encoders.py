"""Encoders, one per modality, built by name from the :data:`ENCODERS` registry.

Every encoder maps a batch of one modality to an embedding of shape (batch, ``out_dim``). An
encoder is specified as a JSON-serializable dict ``{"name": ..., **kwargs}``, so run records can
rebuild it; datasets declare a default spec per modality (hparam ``encoders``).

Every encoder also lists its blocks in forward order with ``block_names()`` (submodule names,
one str or tuple of str per block): freezing ``"all-but-last"``
(:func:`merdg.models.transfer.freeze`) keeps only the last block trainable.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from merdg.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")

__all__ = ["ENCODERS", "MLPEncoder", "PooledConvEncoder", "TemporalConvEncoder",
           "build_encoder", "check_encoder_spec"]


def check_encoder_spec(spec: Mapping[str, Any], where: str = "encoder spec") -> None:
    """Check that ``spec`` names a registered encoder and only options its constructor takes
    (before any data is loaded or any weight is built).

    Raises:
        ValueError: No name, or options the encoder does not take (the valid ones listed).
        KeyError: Unknown encoder name (the registered ones listed).
    """
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"{where} {spec!r} has no 'name'; registered: {ENCODERS.names()}")
    factory = ENCODERS.get(spec["name"])
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a factory without a signature: its call checks
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n in params if n != "input_shape"]
    unknown = sorted(set(spec) - {"name", *valid})
    if unknown:
        raise ValueError(f"{where}: encoder {spec['name']!r} has no option "
                         f"{', '.join(map(repr, unknown))}; its options: {', '.join(valid)}")


def build_encoder(spec: Mapping[str, Any], input_shape: Sequence[int]) -> nn.Module:
    """Build an encoder from ``{"name": registered name, **constructor kwargs}``.

    Args:
        spec: The encoder's name and keyword arguments.
        input_shape: One sample's shape (without the batch dim).

    Returns:
        An ``nn.Module`` with an ``out_dim`` attribute.
    """
    check_encoder_spec(spec)
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        encoder = ENCODERS.get(spec["name"])(tuple(input_shape), **kwargs)
    except TypeError as err:
        raise TypeError(f"encoder {spec['name']!r} rejected options {kwargs}: {err}") from err
    if not isinstance(getattr(encoder, "out_dim", None), int):
        raise TypeError(f"encoder {spec['name']!r} must set an integer attribute out_dim")
    return encoder


def conv_bn_blocks(layers: nn.Sequential, name: str) -> list[tuple[str, str]]:
    """``[(f"{name}.i", f"{name}.i+1"), ...]``: each convolution of ``layers`` with the
    BatchNorm that follows it."""
    return [(f"{name}.{i}", f"{name}.{i + 1}") for i, layer in enumerate(layers)
            if isinstance(layer, nn.modules.conv._ConvNd)]


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """MLP for feature vectors: (N, *input_shape) is flattened, then [Linear-ReLU] x layers.

    Args:
        input_shape: One sample's shape; flattened to prod(input_shape) inputs.
        hidden: Width of the hidden layers.
        out_dim: Embedding width.
        layers: Number of Linear-ReLU blocks (>= 1); the last maps to ``out_dim``.
        dropout: Dropout after each hidden block.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        hidden: int = 256,
        out_dim: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        widths = [math.prod(input_shape)] + [hidden] * (layers - 1) + [out_dim]
        blocks: list[nn.Module] = [nn.Flatten()]
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            blocks += [nn.Linear(w_in, w_out), nn.ReLU()]
            if dropout > 0 and i < layers - 1:
                blocks.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*blocks)
        self.out_dim = out_dim

    def block_names(self) -> list[str]:
        """One block per Linear layer (``net.1``, ``net.3``, ...), in forward order."""
        return [f"net.{i}" for i, layer in enumerate(self.net) if isinstance(layer, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (N, out_dim)


@ENCODERS.register("tcn")
class TemporalConvEncoder(nn.Module):
    """1-D temporal CNN for sequences of shape (N, T, C): conv blocks, then mean over time.

    Each block is Conv1d(kernel, stride 2 after the first) - BatchNorm1d - ReLU; the output is the
    time-averaged last feature map, optionally followed by dropout. With ``mask_padding`` (set
    by the manifest for ``length_policy=pad``), steps that are zero in every channel are padding:
    they are zeroed after each block and left out of the time average.

    Args:
        input_shape: (T, C) of one sample.
        channels: Output channels of each block; the embedding width is the last one.
        kernel_size: Temporal kernel size (odd).
        dropout: Dropout on the pooled embedding.
        mask_padding: Treat all-zero steps as padding.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 5,
        dropout: float = 0.0,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"tcn expects samples of shape (T, C), got {input_shape}")
        blocks: list[nn.Module] = []
        c_in = input_shape[1]
        for i, c_out in enumerate(channels):
            stride = 1 if i == 0 else 2
            blocks += [
                nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2),
                nn.BatchNorm1d(c_out),
                nn.ReLU(),
            ]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.mask_padding = mask_padding
        self.out_dim = int(channels[-1])

    def block_names(self) -> list[tuple[str, str]]:
        """One (convolution, BatchNorm) pair per block, in forward order."""
        return conv_bn_blocks(self.blocks, "blocks")

    def forward(self, x: Tensor) -> Tensor:
        if self.mask_padding:
            return self._masked_forward(x)
        h = self.blocks(x.transpose(1, 2))  # (N, T, C) -> (N, C, T) -> (N, C', T')
        return self.dropout(h.mean(dim=2))  # (N, C')

    def _masked_forward(self, x: Tensor) -> Tensor:
        """Forward with all-zero steps as padding: after each block the padded steps are set to
        0 (what the convolution's own zero padding would read), and the time average covers
        the valid steps only. BatchNorm's batch statistics still see the padded steps."""
        valid = (x.abs().amax(dim=2) > 0).to(x.dtype)  # (N, T)
        h = x.transpose(1, 2)  # (N, C, T)
        for layer in self.blocks:
            h = layer(h)
            if isinstance(layer, nn.Conv1d):
                valid = valid[:, ::layer.stride[0]]  # the step at each output's centre
            elif isinstance(layer, nn.ReLU):
                h = h * valid.unsqueeze(1)
        pooled = h.sum(dim=2) / valid.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.dropout(pooled)  # (N, C')


@ENCODERS.register("cnn1d")
class PooledConvEncoder(nn.Module):
    """1-D CNN for windows of shape (N, T, C): MMDG-Bench's HUST encoder (``sharedNet1`` /
    ``sharedNet2`` in ``HUSTmotor/models/ERM_Model.py`` of lihongzhao99/MMDG_Benchmark).

    Each block is Conv1d(kernel k_i, stride 1, no padding) - BatchNorm1d - ReLU - MaxPool1d(2,
    stride 1), the last block's pooling an adaptive max-pool to ``pool`` steps; the embedding is
    the flattened last feature map, ``channels[-1] * pool`` wide (32 x 4 = 128 by default). The
    defaults are the benchmark's: channels 8, 16, 32, 32 with kernels 32, 8, 3, 3 (1024 steps
    -> 993 -> 992 -> 985 -> 984 -> 982 -> 981 -> 979 -> 4).

    Args:
        input_shape: (T, C) of one sample.
        channels: Output channels of each block.
        kernels: Kernel size of each block (as many as ``channels``).
        pool: Steps the adaptive max-pool keeps.
    """

    def __init__(self, input_shape: tuple[int, ...],
                 channels: Sequence[int] = (8, 16, 32, 32),
                 kernels: Sequence[int] = (32, 8, 3, 3), pool: int = 4) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"cnn1d expects samples of shape (T, C), got {tuple(input_shape)}")
        if len(channels) != len(kernels) or not channels:
            raise ValueError(f"cnn1d: {len(channels)} channels for {len(kernels)} kernels; give "
                             "one kernel size per block")
        steps, c_in = input_shape
        shortest = sum(k - 1 for k in kernels) + len(kernels) - 1 + pool
        if steps < shortest:
            raise ValueError(f"cnn1d: windows of {steps} steps are too short for kernels "
                             f"{list(kernels)} and pool {pool} (at least {shortest})")
        blocks: list[nn.Module] = []
        for i, (c_out, k) in enumerate(zip(channels, kernels)):
            last = i == len(channels) - 1
            blocks += [nn.Conv1d(c_in, c_out, k), nn.BatchNorm1d(c_out), nn.ReLU(),
                       nn.AdaptiveMaxPool1d(pool) if last else nn.MaxPool1d(2, stride=1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = int(channels[-1]) * int(pool)

    def block_names(self) -> list[tuple[str, str]]:
        """One (convolution, BatchNorm) pair per block, in forward order."""
        return conv_bn_blocks(self.blocks, "blocks")

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(x.transpose(1, 2))  # (N, T, C) -> (N, C, T) -> (N, C', pool)
        return h.flatten(1)  # (N, C' * pool)
