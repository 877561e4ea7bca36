r"""Prediction entropy and MOOSA's entropy-weighted cross-entropy over several heads.

For heads :math:`h = 1..H` (per-modality heads and the fused head) with per-sample entropy
:math:`H_{nh}` of their softmax, MOOSA weights each head's cross-entropy per sample by

.. math::

    w_{nh} = \operatorname{softmax}_h(-H_{nh} / T), \qquad
    L = \frac{1}{N} \sum_n \sum_h w_{nh}\, \mathrm{CE}(\text{logits}_{nh}, y_n)

so the more confident heads of a sample count more. As in the release, the weights are *not*
detached (gradients also flow through the entropies).

Reference:
    Dong et al., "Towards Multimodal Open-Set Domain Generalization and Adaptation through
    Self-supervision" (MOOSA), ECCV 2024, https://arxiv.org/abs/2407.01518
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["entropy_weighted_cross_entropy", "prediction_entropy"]


def prediction_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of softmax(logits) per sample: (N, C) -> (N,)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_weighted_cross_entropy(logits: Sequence[Tensor], labels: Tensor,
                                   temperature: float = 1.0) -> Tensor:
    """Per-sample softmax(-entropy / T) weighting of each head's cross-entropy.

    Args:
        logits: One (N, C) tensor per head.
        labels: (N,) class indices.
        temperature: T of the weighting softmax (MOOSA: 1.0).
    """
    entropy = torch.stack([prediction_entropy(lg) for lg in logits], dim=1)  # (N, H)
    weights = torch.softmax(-entropy / temperature, dim=1)
    ce = torch.stack([F.cross_entropy(lg, labels, reduction="none") for lg in logits], dim=1)
    return (weights * ce).sum(dim=1).mean()
