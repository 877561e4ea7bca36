r"""SimMMDG's cross-modal translation loss on L2-normalized embeddings.

.. math::

    L_\text{trans}(\hat z, z) = \frac{1}{N} \sum_i
        \Bigl\lVert \frac{\hat z_i}{\lVert \hat z_i \rVert} - \frac{z_i}{\lVert z_i \rVert}
        \Bigr\rVert_2

with :math:`\hat z = T_{a \to b}(z_a)` the translation of modality a's embedding and
:math:`z = z_b` the target modality's embedding (not detached in the official code).

Reference:
    Dong et al., "SimMMDG", NeurIPS 2023, https://arxiv.org/abs/2310.19795
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["translation_loss"]


def translation_loss(predicted: Tensor, target: Tensor) -> Tensor:
    """Mean Euclidean distance between the L2-normalized rows of two (batch, dim) tensors."""
    if predicted.shape != target.shape:
        raise ValueError(f"translation of shape {tuple(predicted.shape)} for a target of shape "
                         f"{tuple(target.shape)}")
    diff = F.normalize(predicted, dim=1) - F.normalize(target, dim=1)
    return diff.norm(dim=1).mean()
