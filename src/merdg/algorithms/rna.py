r"""RNA-Net: late fusion plus relative norm alignment of the modality embeddings.

.. math::

    L = \mathrm{CE}(\hat y) + \alpha_\text{RNA} \operatorname{mean}_{(a,b)}
        \Bigl(\frac{\mathbb E\lVert z_a\rVert}{\mathbb E\lVert z_b\rVert} - 1\Bigr)^2

over the pairs of modalities in the network's fusion order (:mod:`merdg.losses.rna`). MER-DG
is added on the network's projection heads.

Reference:
    Planamente et al., "Domain Generalization through Audio-Visual Relative Norm Alignment in
    First Person Action Recognition", WACV 2022, https://arxiv.org/abs/2110.10101 (MMDG-Bench
    re-implementation ``train_RNA.py``)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merdg.algorithms.base import ALGORITHMS, Algorithm, Objective
from merdg.algorithms.building_blocks import weighted_sum
from merdg.datasets.base import Batch
from merdg.hparams import HParam
from merdg.losses import relative_norm_alignment_loss
from merdg.models import MultimodalNet

__all__ = ["RNANet"]


@ALGORITHMS.register("RNANet")
class RNANet(Algorithm):
    """Relative norm alignment: equal mean embedding norms across modalities."""

    REGRESSION = ("L1 of the fused output; relative norm alignment is label-free; probes on "
                  "the sign class")

    HPARAMS = {
        "alpha_rna": HParam(1.0, "weight of the RNA loss (MMDG-Bench 1.0)", ("uniform", 0.0, 3.0),
                            kind="float", low=0),
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0,
                        "rna": float(self.hparams["alpha_rna"])}

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        ordered = {m: out.embeddings[m] for m in self.modalities}
        terms = {self.fused_term: self.fused_loss(out.logits, batch),
                 "probe_ce": self.probe_loss(out, batch.y),
                 "rna": relative_norm_alignment_loss(ordered)}
        return Objective(weighted_sum(terms, self.weights), terms, out, {})
