r"""NEL's pieces: k-NN mean-shift embeddings and the von Neumann entropy of the fused embedding.

Mean shift (NEL Eq. 4-6): with :math:`e_i` L2-normalized and :math:`\mathcal N_k(i)` its k most
cosine-similar other samples,

.. math::

    m_i = \operatorname{normalize}\Bigl(\tfrac12 e_i + \tfrac{1}{2k}
        \sum_{j \in \mathcal N_k(i)} e_j\Bigr)

Nonpolarized embedding estimate (NEL Eq. 11-12): with the *uncentered* autocorrelation
:math:`C = E^\top E / N` of the fused embedding and :math:`\lambda` its eigenvalues above
:math:`10^{-6}`, normalized to sum to 1,

.. math::

    L_\text{NEE} = \sum_i \lambda_i \log \lambda_i

(minus the von Neumann entropy; minimizing it spreads the spectrum). The nonzero eigenvalues are
computed from the smaller of :math:`E^\top E` and :math:`E E^\top`, which share them.

Reference:
    "Nonpolarized embedding learning in multimodal domain generalization", Neurocomputing 658
    (2025) 131754, https://doi.org/10.1016/j.neucom.2025.131754 (as re-implemented in
    MMDG-Bench, https://arxiv.org/abs/2605.06643)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from merdg import dist

__all__ = ["mean_shift_embeddings", "von_neumann_entropy_loss"]


def mean_shift_embeddings(embeddings: Tensor, k: int = 8) -> Tensor:
    """k-NN mean-shift of (N, D) embeddings (within the given batch); returns (N, D), unit rows."""
    e = F.normalize(embeddings, dim=1)
    n = e.shape[0]
    if n < 2:
        return e
    k = min(int(k), n - 1)
    with torch.no_grad():  # neighbour selection is not differentiated
        sim = (e @ e.T).fill_diagonal_(float("-inf"))
        neighbours = sim.topk(k, dim=1).indices  # (N, k)
    shifted = 0.5 * e + (0.5 / k) * e[neighbours].sum(dim=1)
    return F.normalize(shifted, dim=1)


def von_neumann_entropy_loss(embeddings: Tensor, min_eigenvalue: float = 1e-6,
                             gather_distributed: bool = True) -> Tensor:
    """Sum of lambda log lambda over the trace-normalized spectrum of E^T E / N.

    Args:
        embeddings: (N, D) fused embeddings (not centered).
        min_eigenvalue: Eigenvalues at or below it are dropped (official 1e-6).
        gather_distributed: Under ``torch.distributed``, use the batch of every rank.
    """
    if gather_distributed:
        embeddings = dist.gather(embeddings)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        e = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) \
            else embeddings
        n, d = e.shape
        gram = e @ e.T if n < d else e.T @ e  # same nonzero spectrum
        eigenvalues = torch.linalg.eigvalsh(gram / n)
        eigenvalues = eigenvalues[eigenvalues > min_eigenvalue]
        p = eigenvalues / (eigenvalues.sum() + 1e-10)
        return (p * torch.log(p + 1e-10)).sum()
