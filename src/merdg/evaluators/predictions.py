"""The forward pass every evaluator reads: a model's outputs on every sample of a split.

:func:`predict` runs the model over a split in inference mode and keeps the fused logits,
labels and probe predictions (:class:`Predictions`). Under torch.distributed each rank predicts
every ``world_size``-th sample (:func:`rank_shard`) and the predictions of all ranks are
gathered, so every rank holds the whole split's outputs.

Labels equal to :data:`~merdg.datasets.base.UNKNOWN` (-1: an unknown class of an open-set
target) count in the open-set metrics only; accuracy, loss, probe accuracy and the
selective-prediction metrics are over the known-class samples (:attr:`Predictions.known`).

A regression task's predictions keep the one output and the true values (``targets``); its
"predicted class" is the output's sign class (negative / zero / positive, as the labels), its
accuracy Acc-2 (output > 0 against target > 0, :mod:`merdg.evaluation.regression`) and its loss
the L1 (MAE) the model is trained on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from merdg import dist as mdist
from merdg.algorithms import Algorithm
from merdg.datasets.base import UNKNOWN, DomainConcat, collate, sign_classes, subset

__all__ = ["Predictions", "loader_form", "pool", "predict", "rank_shard"]


@dataclass
class Predictions:
    """What the model said about every sample of a split.

    Attributes:
        logits: Fused logits, (N, C) float32 (a regression task: the output, (N, 1)).
        predictions: Argmax of the fused logits (in the forward pass' dtype), (N,); a
            regression task: the output's sign class.
        labels: (N,) class indices; ``UNKNOWN`` for unknown classes of an open-set target; a
            regression task: the target's sign class.
        probe_predictions: ``{modality: (N,)}`` argmax of each modality's probe.
        loss_sum: Summed cross-entropy of the known-class samples (summed batch by batch); a
            regression task: summed absolute error.
        targets: A regression task's true values, (N,) float32; None for classification.
    """

    logits: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    probe_predictions: dict[str, np.ndarray]
    loss_sum: float
    targets: np.ndarray | None = None

    @property
    def regression(self) -> bool:
        return self.targets is not None

    @property
    def known(self) -> np.ndarray:
        return self.labels != UNKNOWN

    def accuracy(self) -> float:
        """Top-1 accuracy over the known-class samples (a regression task: Acc-2, the output
        and the target on the same side of 0, zero targets counted as non-positive).

        Raises:
            ValueError: The split has no (known-class) sample.
        """
        known = self.known
        n = int(known.sum())
        if n == 0:
            raise ValueError("evaluation split is empty" if len(known) == 0 else
                             "evaluation split has no sample of a known class")
        if self.regression:
            return int(((self.logits[:, 0] > 0) == (self.targets > 0)).sum()) / n
        return int((self.predictions[known] == self.labels[known]).sum()) / n


def _concat(parts: Sequence[Predictions]) -> Predictions:
    parts = [p for p in parts if len(p.labels)] or list(parts[:1])
    probes = {m: np.concatenate([p.probe_predictions[m] for p in parts])
              for m in parts[0].probe_predictions}
    targets = (None if parts[0].targets is None
               else np.concatenate([p.targets for p in parts]))
    return Predictions(np.concatenate([p.logits for p in parts]),
                       np.concatenate([p.predictions for p in parts]),
                       np.concatenate([p.labels for p in parts]), probes,
                       float(sum(p.loss_sum for p in parts)), targets)


def pool(parts: Sequence[Predictions]) -> Predictions:
    """Several splits' predictions as one (e.g. every source domain's validation part)."""
    if not parts:
        raise ValueError("no predictions to pool")
    return _concat(parts)


def rank_shard(data: Dataset) -> Dataset:
    """Every ``world_size``-th sample from this rank's index on (the data when not distributed):
    the shards of all ranks cover the data once."""
    if not mdist.is_distributed():
        return data
    return subset(data, range(mdist.rank(), len(data), mdist.world_size()))


def loader_form(data: Dataset, cache: dict[int, tuple] | None = None) -> Dataset:
    """``data`` (this rank's shard) as a :class:`~merdg.datasets.base.DomainConcat`, which
    fetches a batch of in-memory samples by indexing.

    Building it concatenates the split's tensors, so a caller that evaluates the same split
    after every epoch passes a ``cache`` it owns (one run's
    :class:`~merdg.run.evaluation.EvaluationStage`): the form is then built once per split and
    world layout, and freed with the cache. The cache holds the split itself, so an ``id``
    cannot be reused while its entry lives.
    """
    layout = (mdist.rank(), mdist.world_size())
    if cache is None:
        return DomainConcat([rank_shard(data)])
    cached = cache.get(id(data))
    if cached is None or cached[0] is not data or cached[1] != layout:
        cached = (data, layout, DomainConcat([rank_shard(data)]))
        cache[id(data)] = cached
    return cached[2]


@torch.inference_mode()
def predict(algorithm: Algorithm, data: Dataset, device: torch.device, batch_size: int = 256,
            num_workers: int = 0, zero: Collection[str] = (),
            translate: bool = False, loader_cache: dict[int, tuple] | None = None
            ) -> Predictions:
    """The model's outputs on every sample of ``data`` (gathered over ranks), in eval mode.

    Modalities in ``zero`` are zero-filled in the fusion, or, with ``translate``, imputed by
    the algorithm's ``evaluate_translated`` (SimMMDG, MOOSA); ``loader_cache``: see
    :func:`loader_form`.
    """
    if algorithm.training:  # a whole module tree to walk: once for consecutive passes
        algorithm.eval()
    loader = DataLoader(loader_form(data, loader_cache), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=num_workers)
    logits, predictions, labels, targets, loss = [], [], [], [], 0.0
    probes: dict[str, list[torch.Tensor]] = defaultdict(list)
    for batch in loader:
        batch = batch.to(device)
        out = (algorithm.evaluate_translated(batch.x, zero) if translate
               else algorithm.evaluate(batch.x, zero=zero))
        known = batch.y != UNKNOWN
        if batch.target is not None:  # regression: (B, 1) outputs
            output = out.logits.float()[:, 0]
            loss += float(F.l1_loss(output, batch.target, reduction="sum"))
            predictions.append(sign_classes(output).cpu())
            targets.append(batch.target.cpu())
        else:
            if bool(known.all()):
                loss += float(F.cross_entropy(out.logits.float(), batch.y, reduction="sum"))
            elif bool(known.any()):
                loss += float(F.cross_entropy(out.logits.float()[known], batch.y[known],
                                              reduction="sum"))
            predictions.append(out.logits.argmax(1).cpu())  # top-1 over the whole split
        logits.append(out.logits.float().cpu())  # (B, C)
        labels.append(batch.y.cpu())
        for m, probe_logits in out.probe_logits.items():
            probes[m].append(probe_logits.argmax(1).cpu())
    local = Predictions(
        torch.cat(logits).numpy() if logits else np.zeros((0, 0), np.float32),
        torch.cat(predictions).numpy() if predictions else np.zeros(0, np.int64),
        torch.cat(labels).numpy() if labels else np.zeros(0, np.int64),
        {m: torch.cat(v).numpy() for m, v in sorted(probes.items())}, loss,
        torch.cat(targets).numpy() if targets else None)
    if mdist.is_distributed():
        return _concat(mdist.all_gather_object(local))
    return local
