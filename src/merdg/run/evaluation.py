"""The evaluation stage of a run: the registered evaluators (:mod:`merdg.evaluators`) at their
times, during training and on a finished run's saved weights.

- before the first training step: the ``"init"`` evaluators (the encoders at initialization),
  kept in the run's info;
- after every epoch: the ``"epoch"`` evaluator (clean accuracy), the epoch record's ``val`` and
  ``target``;
- on a trained model: the ``"model"`` evaluators, at the end of training on the weights of the
  epoch source validation selects (and on the last epoch's with ``--save-model
  selected+last``), and later with :func:`evaluate_run` (``merdg evaluate RUN_DIR``), on the
  saved weights. Each result is one file of the run directory, named by the evaluator's
  settings and the model's digest (:meth:`merdg.run.directory.RunDir.write_evaluation`); the
  training records are never touched.

Every evaluator is checked before any work (:class:`EvaluationStage`), and the optional passes
leave the global random state as they found it, so turning an evaluation on cannot change the
training.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from merdg.algorithms import Algorithm
from merdg.evaluators import (
    EPOCH,
    INIT,
    MODEL,
    EvaluationContext,
    Evaluator,
    RunSpec,
    leaves_random_state,
    run_evaluators,
)
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.records import EpochRecord, json_safe, run_metadata
from merdg.run.saved import load_saved_run
from merdg.run.setup import RunData

__all__ = ["EvaluationStage", "evaluate_run", "evaluation_record", "missing_evaluations"]

log = logging.getLogger(__name__)


def evaluation_record(evaluator: Evaluator, columns: Mapping[str, Any],
                      details: Mapping[str, Any], model: Mapping[str, Any],
                      time_s: float) -> dict[str, Any]:
    """The content of one evaluation file (``docs/evaluation.md``)."""
    return {"evaluator": evaluator.name, "key": evaluator.file_key(),
            "settings": evaluator.settings_dict, "model": dict(model),
            "columns": json_safe(dict(columns)), "details": json_safe(dict(details)),
            "time_s": time_s, "created": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="microseconds"), **run_metadata()}


class EvaluationStage:
    """The evaluators of one run, checked against its data before any work.

    Args:
        config: The run.
        data: Its data (:func:`merdg.run.setup.prepare_data`).
        evaluations: Evaluator settings (default: ``config.evaluations``).

    Raises:
        ValueError: An evaluator cannot evaluate this run (one line, naming its setting).
    """

    def __init__(self, config: RunConfig, data: RunData,
                 evaluations: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.config, self.data = config, data
        settings = config.evaluations if evaluations is None else evaluations
        self.evaluators = run_evaluators(settings, data.spec)
        for evaluator in self.evaluators:
            evaluator.check(data.spec)
        self.loader_cache: dict[int, tuple] = {}  # each split's loader form, for this run only

    def at(self, time: str) -> list[Evaluator]:
        """The evaluators that run at ``time`` (``"init"``, ``"epoch"`` or ``"model"``)."""
        return [e for e in self.evaluators if time in e.times]

    def context(self, algorithm: Algorithm, device: torch.device,
                run_info: Mapping[str, Any]) -> EvaluationContext:
        data = self.data
        return EvaluationContext(data.spec, algorithm, data.val_sets, data.target_set,
                                 data.train_parts, device, self.config.eval_batch_size,
                                 self.config.num_workers, run_info, self.loader_cache)

    def init(self, algorithm: Algorithm, device: torch.device,
             run_info: Mapping[str, Any]) -> dict[str, Any]:
        """The ``"init"`` measurements (entries of the run's info), random state untouched."""
        out: dict[str, Any] = {}
        context = self.context(algorithm, device, run_info)
        with leaves_random_state(device):
            for evaluator in self.at(INIT):
                out.update(evaluator.measure_init(context))
        return out

    def epoch(self, algorithm: Algorithm, device: torch.device) -> dict[str, Any]:
        """The epoch record's evaluation entries (``val``, ``target``)."""
        out: dict[str, Any] = {}
        context = self.context(algorithm, device, {})
        for evaluator in self.at(EPOCH):
            out.update(evaluator.measure_epoch(context))
        return out

    def model(self, algorithm: Algorithm, device: torch.device, run_info: Mapping[str, Any],
              model: Mapping[str, Any], skip: Sequence[str] = (),
              context: EvaluationContext | None = None) -> list[dict[str, Any]]:
        """Every ``"model"`` evaluation of the weights in ``algorithm`` (``model``: their
        ``{"rule", "epoch", "digest", "file"}``) but those whose file key is in ``skip``, random
        state untouched; evaluation records (:func:`evaluation_record`)."""
        context = context or self.context(algorithm, device, run_info)
        out = []
        with leaves_random_state(device):
            for evaluator in self.at(MODEL):
                if evaluator.file_key() in skip:
                    continue
                start = time.perf_counter()
                measured = evaluator.measure(context)
                out.append(evaluation_record(evaluator, measured.columns, measured.details,
                                             model, time.perf_counter() - start))
                log.debug("evaluated %s on the model of epoch %d (%s) in %.1f s",
                         evaluator.describe(), model["epoch"], model["rule"], out[-1]["time_s"])
        return out


def missing_evaluations(directory: RunDir, config: RunConfig) -> list[str]:
    """File keys of the ``"model"`` evaluations ``config.evaluations`` asks for that a finished
    run's saved models lack ([] when nothing is missing, or no weights were saved)."""
    summary = directory.read_summary()
    models = summary.get("models")
    if models is None:  # an earlier version: the digest is in the weights
        file = directory.model_file_of("source_val")
        models = [] if file is None else [{"digest": directory.read_model()["digest"],
                                           "file": file.name}]
    spec = RunSpec.of_info(config, directory.read_info())
    keys = [e.file_key() for e in run_evaluators(config.evaluations, spec, MODEL)]
    return sorted({key for model in models if model.get("file")  # saved weights only
                   for key in keys
                   if not directory.evaluation_file(key, model["digest"]).exists()})


def _recorded_target_acc(records: Sequence[Mapping[str, Any]], epoch: int) -> float | None:
    for record in records:
        if int(record["epoch"]) == epoch:
            return float(EpochRecord.from_dict(record).target["acc"])
    return None


def evaluate_run(path: str, evaluations: Mapping[str, Mapping[str, Any]], rule: str = "source_val",
                 device: str = "cpu", data_root: str | None = None, force: bool = False,
                 **settings: Any) -> dict[str, Any]:
    """Evaluate a finished run's saved weights (``merdg evaluate``); the training files are
    never touched.

    Args:
        path: The run directory.
        evaluations: Evaluator settings (``RunConfig.evaluations``); the evaluators that always
            run (selective prediction, open set) are included.
        rule: Which saved weights: ``"source_val"`` (``model.pt``) or ``"last"``.
        device: Device of the forward passes.
        data_root: Replaces the run's data root (the data moved since training).
        force: Evaluate again what the run directory already holds.
        settings: ``eval_batch_size``, ``num_workers``.

    Returns:
        ``{"path", "model", "written": [files], "skipped": [file keys already evaluated],
        "target_acc": recomputed clean target accuracy, "recorded_target_acc": the record's}``.

    Raises:
        ValueError: Not a finished run, or an evaluator that cannot evaluate it (one line).
        FileNotFoundError: No saved weights.
        RunDirBusyError: Another process is writing the run directory.
    """
    directory = RunDir(path)
    if not directory.has_finished_run() or not directory.file(RunDir.SUMMARY).exists():
        raise ValueError(f"{path} holds no finished run (no done marker and summary.json); "
                         "train it first (merdg train), then evaluate it")
    with directory.lock():
        saved = load_saved_run(path, device, data_root, rule, **settings)
        stage = EvaluationStage(saved.config, saved.data, evaluations)
        context = stage.context(saved.algorithm, saved.device, saved.info)
        keys = [e.file_key() for e in stage.at(MODEL)]
        done = [] if force else [k for k in keys if directory.evaluation_file(
            k, saved.model["digest"]).exists()]
        target_acc = context.target_predictions().accuracy()
        recorded = _recorded_target_acc(saved.records, saved.model["epoch"])
        if recorded is not None and abs(recorded - target_acc) > 1e-9:
            log.warning("%s: the saved weights of epoch %d give target accuracy %.6f, the "
                        "record says %.6f: the data or the code changed since training",
                        path, saved.model["epoch"], target_acc, recorded)
        results = stage.model(saved.algorithm, saved.device, saved.info, saved.model, done,
                              context)
        written = [directory.write_evaluation(r["key"], r) for r in results]
    return {"path": str(path), "model": saved.model, "written": written, "skipped": done,
            "target_acc": target_acc, "recorded_target_acc": recorded, "results": results}
