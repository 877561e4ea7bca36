"""Evaluators: every kind of evaluation of a model, registered (:mod:`merdg.evaluators.base`).

=================  ===========  ============================================================
name               when         what
=================  ===========  ============================================================
``clean``          every epoch  source-validation and target accuracy, loss, probe accuracy
``selective``      model        AURC, AUROC, FPR@95TPR (MSP, energy), ECE on the target
``open_set``       model        H-score, known / unknown accuracy (``--open-set`` runs)
``missing``        model        target accuracy with each modality missing (``--eval-missing``)
``corruptions``    model        target accuracy under corruptions (``--corruptions``)
``encoder_probes`` init, model  each encoder alone: probe accuracy, effective rank
``ood``            model        the target against OOD data: AUROC, FPR@95TPR (``--ood-*``)
=================  ===========  ============================================================

"model" evaluations run on a trained model: at the end of training on the weights of the epoch
source validation selects (and of the last epoch with ``--save-model selected+last``), and on
demand with ``merdg evaluate RUN_DIR`` on a finished run's saved weights
(:mod:`merdg.run.evaluation`). A run's ``RunConfig.evaluations`` holds the settings of the
evaluators asked for (:func:`canonical_evaluations`); they are not part of the run's identity,
so evaluating a trained run more never retrains it.
"""

from collections.abc import Mapping
from typing import Any

from merdg.evaluators.base import (
    EPOCH,
    EVALUATORS,
    INIT,
    MODEL,
    Column,
    Evaluator,
    Measurement,
    ResultView,
    column_keys,
    settings_hash,
)
from merdg.evaluators.clean import CleanAccuracy
from merdg.evaluators.context import EvaluationContext, RunSpec, leaves_random_state
from merdg.evaluators.corruptions import CorruptedSamples, Corruptions, corrupted_view
from merdg.evaluators.encoder_probes import EncoderProbes
from merdg.evaluators.missing import MissingModality
from merdg.evaluators.ood import OutOfDistribution
from merdg.evaluators.open_set import OpenSet
from merdg.evaluators.predictions import Predictions, pool, predict
from merdg.evaluators.selective import SelectivePrediction

__all__ = ["EPOCH", "EVALUATORS", "INIT", "MODEL", "ORDER", "CleanAccuracy", "Column",
           "CorruptedSamples", "Corruptions", "EncoderProbes", "EvaluationContext", "Evaluator",
           "Measurement", "MissingModality", "OpenSet", "OutOfDistribution", "Predictions",
           "ResultView", "RunSpec", "SelectivePrediction", "canonical_evaluations",
           "column_keys", "corrupted_view", "leaves_random_state", "pool", "predict",
           "run_evaluators", "settings_hash", "wanted_settings"]

# the order evaluators run and report in (each module registers its class on import)
ORDER = ("clean", "selective", "open_set", "missing", "corruptions", "encoder_probes", "ood")


def canonical_evaluations(evaluations: Any) -> dict[str, dict]:
    """``RunConfig.evaluations`` checked, with every evaluator's defaults filled in.

    Raises:
        ValueError: One line: not a JSON object, an unknown evaluator, or a setting of one out
            of its range (naming its flag).
    """
    if not isinstance(evaluations, Mapping):
        raise ValueError(f"evaluations must be a JSON object {{evaluator: {{setting: value}}}}, "
                         f"got {evaluations!r}")
    unknown = sorted(set(evaluations) - set(ORDER))
    if unknown:
        raise ValueError(f"unknown evaluator(s) {unknown}; evaluators: {', '.join(ORDER)}")
    return {name: EVALUATORS.get(name).canonical(evaluations[name])
            for name in ORDER if name in evaluations}


def run_evaluators(evaluations: Mapping[str, Mapping[str, Any]], run: RunSpec | None = None,
                   time: str | None = None) -> list[Evaluator]:
    """The evaluators of a run, in :data:`ORDER`: those that always run and those asked for in
    ``evaluations`` (``RunConfig.evaluations``), that apply to ``run`` (when given) and run at
    ``time`` (when given: ``"epoch"``, ``"init"`` or ``"model"``)."""
    out = []
    for name in ORDER:
        cls = EVALUATORS.get(name)
        if not (cls.always or name in evaluations):
            continue
        if (run is not None and not cls.applies(run)) or (time is not None
                                                          and time not in cls.times):
            continue
        out.append(cls.from_settings(evaluations.get(name)))
    return out


def wanted_settings(evaluations: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{evaluator: canonical settings}`` a report asks for: those given, and the defaults of
    the evaluators that always run."""
    out = {}
    for name in ORDER:
        cls = EVALUATORS.get(name)
        if name in evaluations or cls.always:
            out[name] = cls.canonical(evaluations.get(name) or {})
    return out
