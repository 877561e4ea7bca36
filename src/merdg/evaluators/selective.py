"""Selective prediction and calibration on the target: can the model tell its wrong predictions?

On the selected model, misclassification detection from the fused logits of the target's
known-class samples (:func:`merdg.evaluation.metrics.selective_prediction_metrics`; a correct
prediction is the positive class, as MMDG-Bench's ``test_HAC_misd.py`` and Hendrycks & Gimpel,
arXiv 1610.02136): AURC (lower is better), AUROC (higher), FPR@95TPR (lower), each with the
maximum softmax probability (MSP) and the energy score, and the ECE (15 bins, lower).

``--fpr95-point`` picks the ROC point of FPR@95TPR: ``first`` (default; the first point at or
above TPR 0.95, as MMDG-Bench's OOD script) or ``nearest`` (the point nearest TPR 0.95, as its
misclassification script; compare with the benchmark's misclassification numbers with this).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from merdg.evaluation.metrics import FPR_POINTS, selective_prediction_metrics
from merdg.evaluators.base import EVALUATORS, Column, Evaluator, Measurement, ResultView
from merdg.options import Settings, setting

__all__ = ["SelectivePrediction", "SelectiveSettings"]


@dataclass
class SelectiveSettings(Settings):
    fpr95_point: str = setting(
        "first", help="ROC point of FPR@95TPR in the selective-prediction metrics: 'first' "
        "(the first point at or above TPR 0.95, as MMDG-Bench's OOD script) or 'nearest' (the "
        "point nearest TPR 0.95, as MMDG-Bench's misclassification script; docs/evaluation.md)",
        flag="--fpr95-point", kind="str", choices=FPR_POINTS)


@EVALUATORS.register("selective")
class SelectivePrediction(Evaluator):
    """AURC, AUROC, FPR@95TPR (MSP and energy) and ECE of the target's predictions."""

    name = "selective"
    description = ("misclassification detection and calibration on the target: AURC, AUROC, "
                   "FPR@95TPR (MSP and energy), ECE")
    Settings = SelectiveSettings
    always = True

    @classmethod
    def applies(cls, run: Any) -> bool:
        """Classification runs: a regression model has no class probabilities to score."""
        return run.task == "classification"

    columns = (Column("aurc_msp", "AURC (MSP)", "lower"),
               Column("aurc_energy", "AURC (energy)", "lower"),
               Column("auroc_msp", "AUROC (MSP)"), Column("auroc_energy", "AUROC (energy)"),
               Column("fpr95_msp", "FPR@95TPR (MSP)", "lower"),
               Column("fpr95_energy", "FPR@95TPR (energy)", "lower"),
               Column("ece", "ECE", "lower"))

    def measure(self, context: Any) -> Measurement:
        outputs = context.target_predictions()
        known = outputs.known
        metrics = selective_prediction_metrics(outputs.logits[known], outputs.labels[known],
                                               fpr_point=self.settings.fpr95_point)
        return Measurement(dict(metrics), {"fpr95_point": self.settings.fpr95_point})

    @classmethod
    def legacy_columns(cls, record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        return {c.name: record["target"][c.name] for c in cls.columns
                if c.name in record["target"]}

    def report(self, view: ResultView) -> list[str]:
        if not any(view.has(c) for c in self.columns):
            return []
        first = self.settings is None or self.settings.fpr95_point == "first"
        point = ("the first ROC point at or above TPR 0.95" if first
                 else "the ROC point nearest TPR 0.95")
        return ["## Selective prediction on the target", "",
                "Misclassification detection from the fused logits (a correct prediction is "
                "the positive class; docs/evaluation.md): AURC (lower is better), AUROC "
                f"(higher), FPR@95TPR (lower; {point}), each with the maximum softmax "
                "probability (MSP) and the energy score, and the ECE (15 bins, lower), in % at "
                "the selected epochs, averaged over the table's columns (`(k of n)`: the metric "
                "is undefined on the other columns, e.g. AUROC when every prediction is "
                "right).", "",
                view.average_tables([(c.name, c.label) for c in self.columns],
                                    "selective prediction (%)")]
