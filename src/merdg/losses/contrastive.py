r"""InfoNCE between two aligned sets of embeddings, and its multi-view (CMC) form.

For anchors :math:`a_i` and positives :math:`p_i` (row :math:`i` of each set is one sample),
with cosine similarities:

.. math::

    L = -\frac{1}{N} \sum_i \log
        \frac{\exp(\cos(a_i, p_i) / \tau)}{\sum_j \exp(\cos(a_i, p_j) / \tau)}

NEL's mean-shift loss (``ConMeanShiftLoss`` in MMDG-Bench) is exactly this form with the two
augmented views' mean-shift embeddings as anchors and positives. Contrastive Multiview Coding
(CMC, "full graph") sums it over every ordered pair of modalities.

References:
    - Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018,
      https://arxiv.org/abs/1807.03748
    - Tian et al., "Contrastive Multiview Coding", ECCV 2020, https://arxiv.org/abs/1906.05849
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from merdg import dist

__all__ = ["info_nce_loss", "multiview_info_nce_loss"]


def info_nce_loss(anchors: Tensor, positives: Tensor, temperature: float = 0.07,
                  gather_distributed: bool = True) -> Tensor:
    """InfoNCE with positives on the diagonal, on cosine similarities.

    Args:
        anchors: Shape (batch_size, dim).
        positives: Shape (batch_size, dim); row i is anchor i's positive, the other rows are its
            negatives.
        temperature: Softmax temperature.
        gather_distributed: Under ``torch.distributed``, use the negatives of every rank.

    Returns:
        Scalar loss.
    """
    if anchors.shape != positives.shape or anchors.ndim != 2:
        raise ValueError(f"info_nce_loss expects two (batch, dim) tensors of one shape, got "
                         f"{tuple(anchors.shape)} and {tuple(positives.shape)}")
    if gather_distributed:
        anchors, positives = dist.gather(anchors), dist.gather(positives)
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        a, p = F.normalize(_upcast(anchors), dim=1), F.normalize(_upcast(positives), dim=1)
        logits = a @ p.T / temperature  # (N, N), positives on the diagonal
        target = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, target)


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def multiview_info_nce_loss(views: Mapping[str, Tensor], temperature: float = 0.07,
                            gather_distributed: bool = True) -> Tensor:
    """CMC's full-graph loss: the mean of :func:`info_nce_loss` over ordered view pairs.

    Args:
        views: ``{name: (batch_size, dim)}``, at least two views of the same samples.
        temperature: Softmax temperature.
        gather_distributed: See :func:`info_nce_loss`.
    """
    if len(views) < 2:
        raise ValueError(f"multiview_info_nce_loss needs >= 2 views, got {sorted(views)}")
    pairs = list(itertools.permutations(sorted(views), 2))
    losses = [info_nce_loss(views[a], views[b], temperature, gather_distributed)
              for a, b in pairs]
    return torch.stack(losses).mean()
