"""Evaluation passes of one run: accuracy, loss and per-modality probe accuracy of a split,
selective-prediction metrics of its fused logits, open-set metrics of the target, the target
with each modality missing, and the target under corruptions (``docs/robustness.md``).

:func:`predict` runs the model over a split and keeps the fused logits, labels and probe
predictions (:class:`Predictions`); :func:`split_metrics`, :func:`selective_metrics` and
:func:`open_set_scores` compute the record's numbers from them. Under torch.distributed each
rank predicts every ``world_size``-th sample and the predictions of all ranks are gathered, so
every rank returns the whole split's metrics.

Labels equal to :data:`~merdg.evaluation.open_set.UNKNOWN` (-1: an unknown class of an
open-set target) count in the open-set metrics only; accuracy, loss, probe accuracy and the
selective-prediction metrics are over the known-class samples.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from merdg import dist as mdist
from merdg.algorithms import Algorithm
from merdg.datasets.base import DomainConcat, DomainDataset, collate
from merdg.evaluation import (
    CORRUPTIONS,
    CorruptionSpec,
    corrupted_view,
    corruption_names,
    corruption_plan,
    summarize_robustness,
    zero_filled,
)
from merdg.evaluation.metrics import selective_prediction_metrics
from merdg.evaluation.open_set import UNKNOWN, evaluate_open_set, oracle_threshold_sweep
from merdg.run.data_parallel import rank_shard

__all__ = ["CORRUPTION_MODES", "MISSING_MODES", "OPEN_SET_KEYS", "Predictions",
           "check_corruption_names", "corruptions_due", "evaluate", "evaluate_corruptions",
           "evaluate_missing", "merge_evaluations", "missing_due", "open_set_scores",
           "plan_corruptions", "pool", "predict", "selective_metrics", "split_metrics"]

MISSING_MODES = ("none", "last", "every")
CORRUPTION_MODES = ("last", "every")
OPEN_SET_KEYS = ("h_score", "known_acc", "unknown_acc", "open_set_threshold")


@dataclass
class Predictions:
    """What the model said about every sample of a split.

    Attributes:
        logits: Fused logits, (N, C) float32.
        predictions: Argmax of the fused logits (in the forward pass' dtype), (N,).
        labels: (N,) class indices; ``UNKNOWN`` for unknown classes of an open-set target.
        probe_predictions: ``{modality: (N,)}`` argmax of each modality's probe.
        loss_sum: Summed cross-entropy of the known-class samples (summed batch by batch).
    """

    logits: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    probe_predictions: dict[str, np.ndarray]
    loss_sum: float

    @property
    def known(self) -> np.ndarray:
        return self.labels != UNKNOWN


def _concat(parts: Sequence[Predictions]) -> Predictions:
    parts = [p for p in parts if len(p.labels)] or list(parts[:1])
    probes = {m: np.concatenate([p.probe_predictions[m] for p in parts])
              for m in parts[0].probe_predictions}
    return Predictions(np.concatenate([p.logits for p in parts]),
                       np.concatenate([p.predictions for p in parts]),
                       np.concatenate([p.labels for p in parts]), probes,
                       float(sum(p.loss_sum for p in parts)))


def pool(parts: Sequence[Predictions]) -> Predictions:
    """Several splits' predictions as one (e.g. every source domain's validation part)."""
    if not parts:
        raise ValueError("no predictions to pool")
    return _concat(parts)


@torch.no_grad()
def predict(algorithm: Algorithm, data: Dataset, device: torch.device, batch_size: int = 256,
            num_workers: int = 0, zero: Collection[str] = (),
            translate: bool = False) -> Predictions:
    """The model's outputs on every sample of ``data`` (gathered over ranks).

    Modalities in ``zero`` are zero-filled, or, with ``translate``, imputed by the algorithm's
    ``evaluate_translated`` (SimMMDG, MOOSA).
    """
    algorithm.eval()
    loader = DataLoader(DomainConcat([rank_shard(data)]), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=num_workers)
    logits, predictions, labels, loss = [], [], [], 0.0
    probes: dict[str, list[torch.Tensor]] = defaultdict(list)
    for batch in loader:
        batch = batch.to(device)
        out = (algorithm.evaluate_translated(batch.x, zero) if translate
               else algorithm.evaluate(batch.x, zero=zero))
        known = batch.y != UNKNOWN
        if bool(known.all()):
            loss += float(F.cross_entropy(out.logits.float(), batch.y, reduction="sum"))
        elif bool(known.any()):
            loss += float(F.cross_entropy(out.logits.float()[known], batch.y[known],
                                          reduction="sum"))
        logits.append(out.logits.float().cpu())  # (B, C)
        predictions.append(out.logits.argmax(1).cpu())  # top-1 over the whole split
        labels.append(batch.y.cpu())
        for m, probe_logits in out.probe_logits.items():
            probes[m].append(probe_logits.argmax(1).cpu())
    local = Predictions(
        torch.cat(logits).numpy() if logits else np.zeros((0, 0), np.float32),
        torch.cat(predictions).numpy() if predictions else np.zeros(0, np.int64),
        torch.cat(labels).numpy() if labels else np.zeros(0, np.int64),
        {m: torch.cat(v).numpy() for m, v in sorted(probes.items())}, loss)
    if mdist.is_distributed():
        return _concat(mdist.all_gather_object(local))
    return local


def split_metrics(outputs: Predictions) -> dict[str, Any]:
    """Top-1 accuracy, mean CE and per-modality probe accuracies over the known-class samples
    (``n``; ``n_unknown`` too when the split holds unknown-class samples).

    Raises:
        ValueError: The split has no (known-class) sample.
    """
    known = outputs.known
    n = int(known.sum())
    if n == 0:
        raise ValueError("evaluation split is empty" if len(known) == 0 else
                         "evaluation split has no sample of a known class")
    y = outputs.labels[known]
    result = {"acc": int((outputs.predictions[known] == y).sum()) / n,
              "loss": outputs.loss_sum / n, "n": n,
              "probe_acc": {m: int((p[known] == y).sum()) / n
                            for m, p in sorted(outputs.probe_predictions.items())}}
    if n < len(known):
        result["n_unknown"] = int(len(known) - n)
    return result


def selective_metrics(outputs: Predictions) -> dict[str, float]:
    """AURC, AUROC and FPR@95TPR of the MSP and energy scores, and the ECE, of the fused
    logits on the known-class samples (:func:`merdg.evaluation.metrics
    .selective_prediction_metrics`)."""
    known = outputs.known
    return selective_prediction_metrics(outputs.logits[known], outputs.labels[known])


def open_set_scores(target: Predictions, source_val: Predictions) -> dict[str, Any]:
    """H-score, known- and unknown-class accuracy of the target, unknowns rejected below the
    MSP threshold accepting 95% of the source-validation samples
    (:func:`merdg.evaluation.open_set.evaluate_open_set`); ``open_set_oracle``: the same at
    MOOSA's target-tuned threshold (:func:`~merdg.evaluation.open_set.oracle_threshold_sweep`),
    for comparison with published numbers only."""
    scores = evaluate_open_set(target.logits, target.labels, source_val.logits, score="msp")
    return {**scores, "open_set_oracle": oracle_threshold_sweep(target.logits, target.labels)}


@torch.no_grad()
def evaluate(algorithm: Algorithm, data: Dataset, device: torch.device, batch_size: int = 256,
             num_workers: int = 0, zero: Collection[str] = (),
             translate: bool = False) -> dict[str, Any]:
    """Accuracy (top-1 over the whole split), mean CE and per-modality probe accuracies
    (:func:`split_metrics` of :func:`predict`).

    Raises:
        ValueError: The split is empty.
    """
    return split_metrics(predict(algorithm, data, device, batch_size, num_workers, zero,
                                 translate))


def merge_evaluations(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pool per-domain evaluations into one (sample-weighted), keeping the per-domain numbers."""
    n = sum(p["n"] for p in parts.values())
    return {
        "acc": sum(p["acc"] * p["n"] for p in parts.values()) / n,
        "loss": sum(p["loss"] * p["n"] for p in parts.values()) / n,
        "n": n,
        "probe_acc": {m: sum(p["probe_acc"][m] * p["n"] for p in parts.values()) / n
                      for m in next(iter(parts.values()))["probe_acc"]},
        "per_domain": {d: p["acc"] for d, p in parts.items()},
    }


def evaluate_missing(algorithm: Algorithm, data: Dataset, device: torch.device,
                     modalities: Sequence[str], batch_size: int = 256,
                     num_workers: int = 0) -> dict[str, dict[str, float]]:
    """Accuracy with each modality missing: ``{"missing": {m: acc}}`` (zero-filled) and, for
    algorithms with ``evaluate_translated``, ``{"missing_translated": {m: acc}}``.

    These passes are optional, so they leave the global random state as they found it (every
    DataLoader iteration draws its base seed from the global CPU generator): turning them on
    cannot change the training that follows.
    """
    strategies = {"missing": False}
    if hasattr(algorithm, "evaluate_translated"):
        strategies["missing_translated"] = True
    with torch.random.fork_rng(devices=[]):
        return {key: {m: evaluate(algorithm, data, device, batch_size, num_workers, zero=[m],
                                  translate=translate)["acc"] for m in modalities}
                for key, translate in strategies.items()}


def missing_due(mode: str, epoch: int, epochs: int, modalities: Sequence[str]) -> bool:
    """Whether this epoch evaluates the target with a modality missing (needs >= 2)."""
    if mode == "none" or len(modalities) < 2:
        return False
    return mode == "every" or epoch == epochs - 1


def check_corruption_names(corruptions: str | Sequence[str] | None) -> None:
    """Fail early on a corruption name no modality kind has (before any data is read).

    Raises:
        ValueError: One line naming the unknown names and listing every kind's names.
    """
    if corruptions is None or corruptions == "all":
        return
    known = {kind: corruption_names(kind) for kind in CORRUPTIONS}
    unknown = [n for n in corruptions if not any(n in names for names in known.values())]
    if unknown:
        listing = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in known.items())
        raise ValueError(f"--corruptions: unknown corruption(s) {unknown}; names by modality "
                         f"kind: {listing}")


def plan_corruptions(dataset: DomainDataset, corruptions: str | Sequence[str] | None,
                     severities: Sequence[int]) -> list[CorruptionSpec]:
    """The (modality, corruption, severity) evaluations of a run on ``dataset``'s modalities
    (:func:`merdg.evaluation.corruption_plan`); [] when ``corruptions`` is None.

    Raises:
        ValueError: A name none of the dataset's modalities accepts (one line listing the
            names each modality accepts), or an invalid severity.
    """
    if corruptions is None:
        return []
    kinds = {m: dataset.modality_kind(m) for m in dataset.modalities}
    try:
        return corruption_plan(kinds, corruptions, severities)
    except ValueError as err:
        raise ValueError(f"--corruptions: {err}") from None


def corruptions_due(mode: str, epoch: int, epochs: int) -> bool:
    """Whether this epoch evaluates the target under the corruptions (``"last"`` or
    ``"every"``; a run with corruptions planned)."""
    if mode not in CORRUPTION_MODES:
        raise ValueError(f"eval_corruptions must be one of {CORRUPTION_MODES}, got {mode!r}")
    return mode == "every" or epoch == epochs - 1


def evaluate_corruptions(algorithm: Algorithm, dataset: DomainDataset, data: Dataset,
                         device: torch.device, specs: Sequence[CorruptionSpec],
                         clean_acc: float, seed: int = 0, batch_size: int = 256,
                         num_workers: int = 0) -> dict[str, Any]:
    """Accuracy of ``data`` (a split of ``dataset``) under every spec, one pass each.

    Each pass reads the split through :func:`merdg.evaluation.corrupted_view` (the corruption
    happens in ``__getitem__``, in the DataLoader workers); ``missing`` also zero-fills the
    modality in the fusion (:func:`merdg.evaluation.zero_filled`), so its accuracy equals
    ``evaluate_missing``'s zero-filled one. Like :func:`evaluate_missing`, the passes leave the
    global random state as they found it, so turning them on cannot change the training.

    Args:
        specs: From :func:`plan_corruptions`.
        clean_acc: The split's clean accuracy (the summary's reference).
        seed: Seed of the corruptions' draws (the same for every algorithm and run).

    Returns:
        ``{"corruptions": {modality: {corruption: {severity_key: acc}}}, "robustness":
        summarize_robustness(...) plus "time_s" (seconds of the passes)}``.
    """
    start = time.perf_counter()
    accuracies: dict[CorruptionSpec, float] = {}
    with torch.random.fork_rng(devices=[]):
        for spec in specs:
            view = corrupted_view(dataset, data, spec, seed)
            accuracies[spec] = evaluate(algorithm, view, device, batch_size, num_workers,
                                        zero=zero_filled(spec))["acc"]
    nested: dict[str, dict[str, dict[str, float]]] = {}
    for spec, acc in accuracies.items():
        nested.setdefault(spec.modality, {}).setdefault(spec.corruption, {})[
            spec.severity_key] = acc
    robustness = summarize_robustness(clean_acc, accuracies)
    robustness["time_s"] = time.perf_counter() - start
    return {"corruptions": nested, "robustness": robustness}
