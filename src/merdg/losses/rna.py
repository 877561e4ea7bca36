r"""Relative norm alignment (RNA-Net): equalize the mean feature norms of the modalities.

For modalities in a fixed order and every pair :math:`(a, b)` with :math:`a` before :math:`b`:

.. math::

    L_\text{RNA} = \operatorname{mean}_{(a,b)}
        \Bigl(\frac{\mathbb E \lVert z_a \rVert_2}{\mathbb E \lVert z_b \rVert_2} - 1\Bigr)^2

(batch means of the per-sample L2 norms). With two modalities this is the paper's single term;
MMDG-Bench's three-modality form averages the three pair terms (video/audio, video/flow,
flow/audio). The term is not symmetric in (a, b): the order of the input mapping decides it.

Reference:
    Planamente et al., "Domain Generalization through Audio-Visual Relative Norm Alignment in
    First Person Action Recognition", WACV 2022, https://arxiv.org/abs/2110.10101
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import Tensor

from merdg import dist

__all__ = ["relative_norm_alignment_loss"]


def relative_norm_alignment_loss(embeddings: Mapping[str, Tensor],
                                 gather_distributed: bool = True) -> Tensor:
    """Mean over ordered pairs (insertion order of ``embeddings``) of (norm ratio - 1)^2.

    Args:
        embeddings: ``{modality: (batch_size, dim)}`` with at least two modalities.
        gather_distributed: Under ``torch.distributed``, average the norms over every rank.
    """
    if len(embeddings) < 2:
        raise ValueError(f"RNA needs >= 2 modalities, got {list(embeddings)}")
    mean_norm = {}
    for m, z in embeddings.items():
        norms = z.norm(dim=1)  # (N,)
        mean_norm[m] = (dist.gather(norms) if gather_distributed else norms).mean()
    terms = [(mean_norm[a] / mean_norm[b] - 1) ** 2
             for a, b in itertools.combinations(list(embeddings), 2)]
    return torch.stack(terms).mean()
