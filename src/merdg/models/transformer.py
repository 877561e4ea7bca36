"""A Transformer encoder for precomputed feature sequences (the text modality kind).

``sequence_transformer`` is the per-modality encoder of MMDG-Bench's MMSA model
(``Latefusion`` in ``MMSA/models/model.py`` with the MulT-style ``TransformerEncoder`` of
``MMSA/modules/transformer.py``, lihongzhao99/MMDG_Benchmark; MulT: Tsai et al., ACL 2019,
arXiv 1906.00295):

1. a kernel-1 Conv1d (with bias) projects each step's D features to ``dim`` (40);
2. the projection is scaled by sqrt(dim), sinusoidal positions 1..T are added (fairseq's
   layout: sines in the first half of the channels, cosines in the second), then dropout
   (``embed_dropout``, 0.25);
3. ``layers`` (5) pre-LayerNorm Transformer layers of ``heads`` (8) heads and a 4 x dim ReLU
   feed-forward, with dropout ``dropout`` (0.1) on the attention weights, after the ReLU and on
   both residual branches (the benchmark's attention, ReLU and residual dropouts are all 0.1),
   then a final LayerNorm;
4. the output at step 0 (BERT's ``[CLS]`` for text) is the embedding, (N, dim).

With ``mask_padding`` (the default) the padded steps (every feature exactly 0, the zero padding
of the MMSA files) are masked as attention keys; the benchmark passes no mask, so its steps
attend to the padding too (``mask_padding=False`` reproduces that). Step 0 is never masked, so
an all-padding sequence gives finite outputs. MulT detects padding for its positions on the
*projected* input, which its projection's bias makes non-zero: in effect every step gets
positions 1..T, as here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from merdg.models.encoders import ENCODERS

__all__ = ["SequenceTransformerEncoder", "sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """(length, dim) sinusoidal embeddings of positions 1..length (fairseq layout: sin of every
    frequency, then cos; a zero last channel when ``dim`` is odd)."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -scale)  # (half,)
    angles = torch.arange(1, length + 1, dtype=torch.float32)[:, None] * frequencies[None]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (length, 2 half)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1)], dim=1)
    return table


@ENCODERS.register("sequence_transformer")
class SequenceTransformerEncoder(nn.Module):
    """Feature sequence (N, T, D) -> (N, ``dim``): projection, Transformer, output at step 0
    (module docstring).

    Args:
        input_shape: (T, D) of one sample.
        dim: Model width (MMDG-Bench ``proj_dim`` 40).
        layers: Transformer layers (``nlevels`` 5).
        heads: Attention heads (``num_heads`` 8); must divide ``dim``.
        embed_dropout: Dropout after the positions are added (0.25).
        dropout: Attention, ReLU and residual dropout (0.1 each).
        mask_padding: Mask the all-zero steps as attention keys (the benchmark: no mask).
    """

    def __init__(self, input_shape: tuple[int, ...], dim: int = 40, layers: int = 5,
                 heads: int = 8, embed_dropout: float = 0.25, dropout: float = 0.1,
                 mask_padding: bool = True) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"sequence_transformer expects samples of shape (T, D), got "
                             f"{tuple(input_shape)}")
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"sequence_transformer: dim {dim} must be a positive multiple of "
                             f"heads {heads}")
        if layers < 1:
            raise ValueError(f"sequence_transformer: layers must be >= 1, got {layers}")
        length, features = input_shape
        self.project = nn.Conv1d(features, dim, kernel_size=1)
        self.register_buffer("positions", sinusoidal_positions(length, dim), persistent=False)
        self.scale = math.sqrt(dim)
        self.embed_dropout = nn.Dropout(embed_dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout,
                                           activation="relu", batch_first=True,
                                           norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim),
                                                 enable_nested_tensor=False)
        self.mask_padding = mask_padding
        self.out_dim = int(dim)

    def block_names(self) -> list[str]:
        """The projection, then each Transformer layer (the final LayerNorm with the last)."""
        names: list = ["project"]
        names += [f"transformer.layers.{i}" for i in range(len(self.transformer.layers))]
        names[-1] = (names[-1], "transformer.norm")
        return names

    def forward(self, x: Tensor) -> Tensor:
        padded = None
        if self.mask_padding:
            padded = x.abs().amax(dim=2) == 0  # (N, T): every feature 0
            padded[:, 0] = False  # step 0 is read: never masked
        h = self.project(x.transpose(1, 2)).transpose(1, 2)  # (N, T, D) -> (N, T, dim)
        h = self.embed_dropout(self.scale * h + self.positions[:h.shape[1]])
        h = self.transformer(h, src_key_padding_mask=padded)  # (N, T, dim)
        return h[:, 0]  # (N, dim)
