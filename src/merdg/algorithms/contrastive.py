r"""Contrastive baselines: CMC (cross-modal contrastive learning) and NEL.

**CMC** (Tian et al.): late-fusion CE plus a contrastive term between the modalities of each
sample, computed on the network's per-modality projections :math:`p_m = P_m(z_m)`
(L2-normalized for the contrast):

.. math::

    L = \mathrm{CE}(\hat y) + \alpha\, \operatorname{mean}_{a \ne b}
        \mathrm{InfoNCE}(p_a, p_b; \tau)

With ``supervised=True`` the term is SupCon with labels over the modality views instead, the
``alpha_contrast`` term of the official ``train_mer_dg.py`` (use ``temperature=0.1`` there).
CMC + MER-DG regularizes the same (unnormalized) projections, as ``train_mer_dg.py`` does.

**NEL** (Neurocomputing 2025, MMDG-Bench re-implementation):

.. math::

    L = \mathrm{CE} + \alpha L_\text{UNC} + (1 - \alpha) L_C + \beta L_\text{NEE}

over two views of each sample: :math:`L_C` is SupCon on the projected per-modality embeddings,
:math:`L_\text{UNC}` InfoNCE between the two views' k-NN mean-shift embeddings (concatenated over
modalities), :math:`L_\text{NEE}` the negative von Neumann entropy of the fused embedding's
uncentered autocorrelation (:mod:`merdg.losses.nel`). merdg's loaders yield one clip per sample,
so the two views are made by two independent input-dropout masks (``view_dropout``); the
release loads two randomly augmented clips. NEL + MER-DG regularizes NEL's projections.

References:
    - Tian et al., "Contrastive Multiview Coding", ECCV 2020, https://arxiv.org/abs/1906.05849
    - "Nonpolarized embedding learning in multimodal domain generalization", Neurocomputing 658
      (2025) 131754, https://doi.org/10.1016/j.neucom.2025.131754
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from merdg.algorithms.base import ALGORITHMS, Algorithm, Objective
from merdg.algorithms.building_blocks import weighted_sum
from merdg.datasets.base import Batch
from merdg.hparams import HParam
from merdg.losses import (
    info_nce_loss,
    mean_shift_embeddings,
    multiview_info_nce_loss,
    supcon_loss,
    von_neumann_entropy_loss,
)
from merdg.models import MultimodalNet, ProjectionHead

__all__ = ["CMC", "NEL"]


@ALGORITHMS.register("CMC")
class CMC(Algorithm):
    """Late fusion + cross-modal contrastive learning on the per-modality projections."""

    MIN_BATCH = 2
    MIN_BATCH_REASON = "the contrastive term needs other samples as negatives (0 for one)"
    REGRESSION = ("L1 of the fused output; the contrast between modalities is label-free "
                  "(supervised=true: SupCon on the sign class); probes on the sign class")

    HPARAMS = {
        "alpha_contrast": HParam(1.0, "weight of the contrastive term", ("uniform", 0.0, 5.0),
                                 kind="float", low=0),
        "temperature": HParam(0.07, "contrast temperature (CMC: 0.07)",
                              ("choice", [0.05, 0.07, 0.1, 0.2]), kind="float", low=0,
                              low_open=True),
        "supervised": HParam(False, "SupCon with labels over the modality views (official "
                             "train_mer_dg.py alpha_contrast term) instead of InfoNCE",
                             kind="bool"),
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        self.temperature = float(self.hparams["temperature"])
        self.supervised = bool(self.hparams["supervised"])
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0,
                        "contrast": float(self.hparams["alpha_contrast"])}

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        proj = self.net.project(out.embeddings)  # {m: (N, proj_dim)}, unnormalized
        views = {m: F.normalize(p, dim=1) for m, p in proj.items()}
        if self.supervised:
            stacked = torch.stack([views[m] for m in self.modalities], dim=1)
            contrast = supcon_loss(stacked, batch.y, self.temperature)
        else:
            contrast = multiview_info_nce_loss(views, self.temperature)
        terms = {self.fused_term: self.fused_loss(out.logits, batch),
                 "probe_ce": self.probe_loss(out, batch.y), "contrast": contrast}
        return Objective(weighted_sum(terms, self.weights), terms, out, {"projections": proj})


@ALGORITHMS.register("NEL")
class NEL(Algorithm):
    """Nonpolarized embedding learning: SupCon + mean-shift contrast + von Neumann entropy."""

    MIN_BATCH = 2
    MIN_BATCH_REASON = "its contrastive terms need other samples as negatives"
    REGRESSION = ("L1 of the fused output on both views; SupCon on the sign class; the "
                  "mean-shift InfoNCE and von Neumann entropy are label-free")

    HPARAMS = {
        "alpha": HParam(0.7, "weight of L_UNC; 1 - alpha weights L_C (official 0.7)",
                        ("uniform", 0.0, 1.0), kind="float", low=0, high=1),
        "beta": HParam(None, "weight of L_NEE (None: 1 / batch_size, official)",
                       ("uniform", 0.0, 1.0), kind="float", low=0, nullable=True),
        "temp_s": HParam(0.1, "SupCon temperature (official 0.1)", ("uniform", 0.0, 1.0),
                         kind="float", low=0, low_open=True),
        "temp_u": HParam(0.25, "mean-shift InfoNCE temperature (official 0.25)",
                         ("uniform", 0.0, 1.0), kind="float", low=0, low_open=True),
        "k": HParam(8, "neighbours of the mean shift (official 8)", ("choice", [4, 8, 12, 16]),
                    kind="int", low=1),
        "view_dropout": HParam(0.1, "input-dropout rate that makes the two views (merdg; the "
                               "release uses two augmented clips)", kind="float", low=0, high=1,
                               high_open=True),
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        hp = self.hparams
        beta = hp["beta"] if hp["beta"] is not None else 1.0 / int(hp["batch_size"])
        alpha = float(hp["alpha"])
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0, "unc": alpha, "supcon": 1.0 - alpha,
                        "nee": float(beta)}
        self.temp_s, self.temp_u = float(hp["temp_s"]), float(hp["temp_u"])
        self.k, self.view_dropout = int(hp["k"]), float(hp["view_dropout"])
        self.projectors = nn.ModuleDict({
            m: ProjectionHead(d, int(hp["proj_hidden"]), int(hp["proj_dim"]), norm="batch",
                              l2_normalize=True) for m, d in net.dims.items()})

    def two_views(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Both views of every sample, stacked: (N, ...) -> (2N, ...)."""
        def view(v: Tensor) -> Tensor:
            return v * (torch.rand_like(v) >= self.view_dropout)

        return {m: torch.cat([view(v), view(v)]) for m, v in x.items()}

    def objective(self, batch: Batch) -> Objective:
        n = len(batch)
        y = torch.cat([batch.y, batch.y])
        target = None if batch.target is None else torch.cat([batch.target, batch.target])
        both = Batch({}, y, torch.cat([batch.domain, batch.domain]), target)  # labels of 2N
        out = self.net(self.two_views(batch.x))
        proj = {m: self.projectors[m](out.embeddings[m]) for m in self.modalities}
        views = torch.stack([proj[m] for m in self.modalities], dim=1)  # (2N, M, proj_dim)
        shifted = torch.stack([mean_shift_embeddings(proj[m], self.k) for m in self.modalities],
                              dim=1)  # (2N, M, proj_dim)
        fused = torch.cat([out.embeddings[m] for m in self.modalities], dim=1)
        terms = {
            self.fused_term: self.fused_loss(out.logits, both),
            "probe_ce": self.probe_loss(out, y),
            "unc": info_nce_loss(shifted[:n].reshape(n, -1), shifted[n:].reshape(n, -1),
                                 self.temp_u),
            "supcon": supcon_loss(views, y, self.temp_s),
            "nee": von_neumann_entropy_loss(fused),
        }
        return Objective(weighted_sum(terms, self.weights), terms, out, {"projections": proj})
