"""Open-set evaluation of the target (``--open-set`` runs): known-class accuracy, unknown
rejection and their H-score (MOOSA, arXiv 2407.01518; :mod:`merdg.evaluation.open_set`).

On the selected model, a target sample is rejected as unknown when its maximum softmax
probability is below the threshold that accepts 95% of the source-validation samples (all of
known classes): ``known_acc`` counts a rejected known sample as wrong, ``unknown_acc`` is the
share of unknown samples rejected, ``h_score`` their harmonic mean. ``oracle_*`` are the same at
MOOSA's target-tuned threshold (the best of 10 on the target labels), labelled as an oracle, for
comparison with published numbers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merdg.evaluation.open_set import evaluate_open_set, oracle_threshold_sweep
from merdg.evaluators.base import EVALUATORS, Column, Evaluator, Measurement, ResultView

__all__ = ["OpenSet"]

H_SCORE = "H-score (unknowns rejected below the source-validation threshold)"


@EVALUATORS.register("open_set")
class OpenSet(Evaluator):
    """H-score, known and unknown accuracy of an open-set target."""

    name = "open_set"
    description = ("open-set runs: H-score, known- and unknown-class accuracy of the target "
                   "(threshold chosen on source validation; the target-tuned oracle labelled)")
    always = True
    H = Column("h_score", "H-score")
    columns = (H, Column("known_acc", "known acc"), Column("unknown_acc", "unknown acc"),
               Column("open_set_threshold", "threshold (MSP)", None, False),
               Column("oracle_h_score", "H-score, target-tuned threshold (oracle)"),
               Column("oracle_known_acc", "known acc (oracle)"),
               Column("oracle_unknown_acc", "unknown acc (oracle)"))

    @classmethod
    def applies(cls, run: Any) -> bool:
        return run.open_set

    def measure(self, context: Any) -> Measurement:
        target = context.target_predictions()
        source = context.pooled_val_predictions()
        scores = evaluate_open_set(target.logits, target.labels, source.logits, score="msp")
        oracle = oracle_threshold_sweep(target.logits, target.labels)
        columns = dict(scores)
        columns.update({f"oracle_{k}": oracle[k] for k in ("h_score", "known_acc",
                                                           "unknown_acc")})
        return Measurement(columns, {"oracle_threshold": oracle["open_set_threshold"]})

    @classmethod
    def legacy_columns(cls, record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        target = record["target"]
        out = {k: target[k] for k in ("h_score", "known_acc", "unknown_acc",
                                      "open_set_threshold") if k in target}
        out.update({f"oracle_{k}": v for k, v in target.get("open_set_oracle", {}).items()
                    if k != "open_set_threshold"})
        return out

    def headline(self, view: ResultView) -> str:
        """H-score tables and their paired differences, for ``table.md``."""
        if not view.has(self.H):
            return ""
        return "\n".join(p for p in (view.main_tables(self.H, H_SCORE),
                                     view.paired(self.H, "H-score")) if p)

    def report(self, view: ResultView) -> list[str]:
        if not view.has(self.H):
            return []
        keys = ["h_score", "known_acc", "unknown_acc", "oracle_h_score"]
        labels = {c.name: c.label for c in self.columns}
        return ["## Open set", "",
                "Unknown-class target samples are rejected when their MSP is below the "
                "threshold that accepts 95% of the source-validation samples; known acc counts "
                "a rejected known sample as wrong; the H-score is the harmonic mean of known and "
                "unknown accuracy (docs/settings.md). The last column picks the threshold on the "
                "target labels as MOOSA's script reports it: an oracle, for comparison with "
                "published numbers only.", "",
                view.main_tables(self.H, H_SCORE),
                view.paired(self.H, "H-score", words=True),
                view.average_tables([(k, labels[k]) for k in keys], "open-set metrics (%)")]
