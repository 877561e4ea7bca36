"""ERM: standard late fusion ("Baseline Fusion" / "Base" / "DeepAll")."""

from __future__ import annotations

from merdg.algorithms.base import ALGORITHMS, Algorithm, Objective
from merdg.datasets.base import Batch


@ALGORITHMS.register("ERM")
class ERM(Algorithm):
    """Cross-entropy of the fused classifier on concatenated embeddings (L1 of the fused output
    for a regression task).

    The official "Baseline Fusion" (``train_mer_dg.py`` with lambda_mer = 0, alpha_contrast = 0).
    """

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        fused = self.fused_loss(out.logits, batch)  # CE, or L1 for a regression task
        probe = self.probe_loss(out, batch.y)
        return Objective(fused + probe, {self.fused_term: fused, "probe_ce": probe}, out, {})
