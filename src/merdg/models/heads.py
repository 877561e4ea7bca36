"""Heads of the multimodal network: fusion classifier, projection heads, unimodal probes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

FUSION_HEADS = ("mlp", "linear", "residual")
"""Kinds of fusion head on the concatenated embeddings (:func:`fusion_head`)."""


class FusionClassifier(nn.Sequential):
    """The paper's classifier on concatenated embeddings: Linear-ReLU-Dropout-Linear.

    Official: Linear(sum of embedding dims, 512) - ReLU - Dropout(0.5) - Linear(512, n_classes).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.5):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


class ResidualFusion(nn.Module):
    """MMDG-Bench's MMSA fusion head (``Latefusion`` in ``MMSA/models/model.py`` of
    lihongzhao99/MMDG_Benchmark): Linear(in, hidden) - ReLU, a residual block
    ``h + Linear(Dropout(ReLU(Linear(h))))``, then Linear(hidden, outputs)."""

    def __init__(self, in_dim: int, outputs: int, hidden: int = 40, dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                   nn.Linear(hidden, hidden))
        self.out = nn.Linear(hidden, outputs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)  # (N, hidden)
        return self.out(h + self.block(h))  # (N, outputs)


def fusion_head(kind: str, in_dim: int, outputs: int, hidden: int, dropout: float) -> nn.Module:
    """The fusion head of ``kind`` (:data:`FUSION_HEADS`): ``"mlp"`` (the paper's
    :class:`FusionClassifier`), ``"linear"`` (one Linear layer: MMDG-Bench's HUST models,
    ``Linear(256, 6)``; ``hidden`` and ``dropout`` unused) or ``"residual"``
    (:class:`ResidualFusion`, MMDG-Bench's MMSA head)."""
    if kind == "mlp":
        return FusionClassifier(in_dim, outputs, hidden, dropout)
    if kind == "linear":
        return nn.Linear(in_dim, outputs)
    if kind == "residual":
        return ResidualFusion(in_dim, outputs, hidden, dropout)
    raise ValueError(f"fusion head must be one of {FUSION_HEADS}, got {kind!r}")


class ProjectionHead(nn.Module):
    """Per-modality projection: Linear-Norm-ReLU-Linear-Norm-ReLU-Linear (official MER-DG head).

    Args:
        in_dim: Embedding width.
        hidden: Hidden width (official: 2048).
        out_dim: Output width (official: 128).
        norm: ``"layer"`` (``train_mer_dg.py``, unnormalized output) or ``"batch"`` (SimMMDG's
            ProjectHead).
        l2_normalize: L2-normalize the output (SimMMDG's ProjectHead does).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 2048,
        out_dim: int = 128,
        norm: str = "layer",
        l2_normalize: bool = False,
    ) -> None:
        super().__init__()
        norms = {"layer": nn.LayerNorm, "batch": nn.BatchNorm1d}
        if norm not in norms:
            raise ValueError(f"norm must be 'layer' or 'batch', got {norm!r}")
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden), norms[norm](hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), norms[norm](hidden), nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )
        self.l2_normalize = l2_normalize

    def forward(self, x: Tensor) -> Tensor:
        z = self.layers(x)  # (N, out_dim)
        return F.normalize(z, dim=1) if self.l2_normalize else z
