"""Missing-modality evaluation (``--eval-missing``): target accuracy with each modality missing.

On the selected model, each modality in turn is missing: its embedding is zero-filled in the
fusion (``target_missing/<m>``), as MMDG-Bench's ``test_HAC_missing.py`` replaces the
post-encoder embedding by zeros; algorithms that can impute a modality from the others (SimMMDG,
MOOSA: ``evaluate_translated``) are also evaluated with the imputed embedding
(``target_missing_translated/<m>``). The ``missing`` corruption of ``--corruptions`` reports the
same zero-filled accuracy, computed once (:class:`merdg.evaluators.context.EvaluationContext`).
Runs with one modality have nothing to drop and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merdg.evaluators.base import EVALUATORS, Column, Evaluator, Measurement, ResultView

__all__ = ["MissingModality"]

ZERO_FILLED = Column("target_missing", "no", family=True)
TRANSLATED = Column("target_missing_translated", "no", family=True)


@EVALUATORS.register("missing")
class MissingModality(Evaluator):
    """Target accuracy with each modality missing (zero-filled; imputed where the algorithm
    can)."""

    name = "missing"
    description = ("target accuracy with each modality missing (zero-filled in the fusion; "
                   "imputed by translation for SimMMDG/MOOSA)")
    request_flag = "--eval-missing"
    request_help = ("also evaluate the target with each modality missing (zero-filled in the "
                    "fusion; imputed by translation for SimMMDG/MOOSA), on the selected model")
    columns = (ZERO_FILLED, TRANSLATED)

    @classmethod
    def applies(cls, run: Any) -> bool:
        return len(run.modalities) >= 2

    def measure(self, context: Any) -> Measurement:
        modalities = context.run.modalities
        columns = {ZERO_FILLED.key(m): context.missing_accuracy(m) for m in modalities}
        if context.run.algorithm_has("evaluate_translated"):
            columns.update({TRANSLATED.key(m): context.missing_accuracy(m, translate=True)
                            for m in modalities})
        return Measurement(columns)

    @classmethod
    def legacy_columns(cls, record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        target = record["target"]
        out = {ZERO_FILLED.key(m): v for m, v in target.get("missing", {}).items()}
        out.update({TRANSLATED.key(m): v for m, v in target.get("missing_translated", {}).items()})
        return out

    def report(self, view: ResultView) -> list[str]:
        lines = []
        for column, how in ((ZERO_FILLED, "zero-filled"),
                            (TRANSLATED, "imputed by the method's cross-modal translation")):
            modalities = view.members(column)
            if not modalities:
                continue
            keys = [("target_acc", "all")] + [(column.key(m), f"no {m}") for m in modalities]
            lines += [f"Target accuracy (%) with one modality missing ({how}; targets averaged "
                      "within a seed):", "",
                      view.average_tables(keys, f"missing modality ({how})")]
        return lines
