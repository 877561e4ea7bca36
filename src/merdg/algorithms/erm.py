"""ERM: standard late fusion ("Baseline Fusion" / "Base" / "DeepAll")."""

from __future__ import annotations

import torch.nn.functional as F

from merdg.algorithms.base import ALGORITHMS, Algorithm, Objective
from merdg.datasets.base import Batch


@ALGORITHMS.register("ERM")
class ERM(Algorithm):
    """Cross-entropy of the fused classifier on concatenated embeddings.

    The official "Baseline Fusion" (``train_mer_dg.py`` with lambda_mer = 0, alpha_contrast = 0).
    """

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        ce = F.cross_entropy(out.logits, batch.y)
        probe = self.probe_loss(out, batch.y)
        return Objective(ce + probe, {"ce": ce, "probe_ce": probe}, out, {})
