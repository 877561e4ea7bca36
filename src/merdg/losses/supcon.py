r"""Supervised contrastive loss (SupCon, Khosla et al.), the form SimMMDG, CMRF and NEL use.

Every sample contributes one *view* per modality; ``features`` has shape (N, V, D) with the views
L2-normalized. All N·V views are anchors (``contrast_mode='all'``). For anchor :math:`i` with
positives :math:`P(i)` (views of samples with the same label, itself excluded):

.. math::

    \ell_i = -\frac{\tau}{\tau_b}\,\frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \ne i} \exp(z_i \cdot z_a / \tau)},
    \qquad L = \operatorname{mean}_i \ell_i

The official scripts pass ``temperature=0.1`` while ``base_temperature`` keeps its default 0.07,
so the loss is scaled by 0.1/0.07 ≈ 1.43 (kept here as the default). An anchor without positives
(possible only with one view) contributes 0 instead of the NaN of the original code.

References:
    - Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362
    - Dong et al., "SimMMDG", NeurIPS 2023, https://arxiv.org/abs/2310.19795
"""

from __future__ import annotations

import torch
from torch import Tensor

from merdg import dist

__all__ = ["supcon_loss"]


def supcon_loss(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    gather_distributed: bool = True,
) -> Tensor:
    """SupCon over the views of a batch.

    Args:
        features: Shape (batch_size, n_views, dim), each view L2-normalized.
        labels: Shape (batch_size,); None makes only the views of the same sample positives
            (SimCLR).
        temperature: Softmax temperature.
        base_temperature: The loss is multiplied by ``temperature / base_temperature``.
        gather_distributed: Under ``torch.distributed``, contrast against the batch gathered from
            every rank (gradients flow back to each rank's rows).

    Returns:
        Scalar loss.
    """
    if features.ndim != 3:
        raise ValueError(f"supcon_loss expects features (batch, views, dim), got "
                         f"{tuple(features.shape)}")
    if labels is None:
        labels = torch.arange(features.shape[0], device=features.device)
    if labels.shape != features.shape[:1]:
        raise ValueError(f"{labels.shape[0]} labels for {features.shape[0]} samples")
    if gather_distributed:
        features, labels = dist.gather(features), dist.gather(labels)
    with torch.autocast(device_type=features.device.type, enabled=False):
        return _supcon(_upcast(features), labels, temperature, base_temperature)


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _supcon(features: Tensor, labels: Tensor, temperature: float,
            base_temperature: float) -> Tensor:
    n, v, _ = features.shape
    flat = features.transpose(0, 1).reshape(n * v, -1)  # (V*N, D), view-major
    flat_labels = labels.repeat(v)  # (V*N,)
    self_mask = torch.eye(n * v, dtype=torch.bool, device=flat.device)
    logits = (flat @ flat.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (flat_labels[:, None] == flat_labels[None, :]) & ~self_mask
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    mean_pos = pos_log_prob / positives.sum(1).clamp_min(1)
    return -(temperature / base_temperature) * mean_pos.mean()
