"""What an evaluator sees: the run before training (:class:`RunSpec`, for checks) and a model
with its data (:class:`EvaluationContext`, for measurements).

The run layer builds both (:mod:`merdg.run.evaluation`), the same way during training and in
``merdg evaluate``. The context computes each forward pass once and shares it among the
evaluators of one model: the target's and the source-validation predictions, and the accuracy
with a modality missing (which the missing-modality evaluator and the ``missing`` corruption
both report).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from merdg.algorithms import Algorithm, get_algorithm_class
from merdg.datasets import DATASETS, DomainDataset
from merdg.evaluators.predictions import Predictions, pool, predict

__all__ = ["EvaluationContext", "RunSpec", "leaves_random_state"]


@dataclass
class RunSpec:
    """A run as its evaluators' checks see it, before any training.

    Attributes:
        config: The run's :class:`~merdg.run.config.RunConfig`.
        dataset: The dataset with the run's modalities (normalized on its sources); None for a
            spec read from a run's ``config.json`` only (:meth:`of_info`: enough for
            :meth:`~merdg.evaluators.Evaluator.applies`, not for checks).
        sources: The source domains.
        known_classes: Dataset labels of the known classes (open set), else None.
    """

    config: Any
    dataset: DomainDataset | None
    sources: list[str]
    known_classes: tuple[int, ...] | None = None
    modality_names: list[str] | None = None

    @classmethod
    def of_info(cls, config: Any, info: Mapping[str, Any]) -> RunSpec:
        """What a finished run's ``config.json`` says of it (no data)."""
        known = tuple(range(len(info["known_classes"]))) if info.get("known_classes") else None
        return cls(config, None, list(info.get("sources") or []), known,
                   list(info.get("modalities") or []))

    @property
    def modalities(self) -> list[str]:
        if self.modality_names is not None:
            return list(self.modality_names)
        return list(self.dataset.modalities)

    @property
    def target(self) -> str:
        return self.config.target

    @property
    def task(self) -> str:
        """The dataset's task (``"classification"`` or ``"regression"``)."""
        if self.dataset is not None:
            return self.dataset.TASK
        return DATASETS.get(self.config.dataset).TASK

    @property
    def open_set(self) -> bool:
        return self.known_classes is not None

    @property
    def num_classes(self) -> int:
        """Outputs of the model (the known classes in an open-set run)."""
        return len(self.known_classes) if self.known_classes else self.dataset.num_classes

    def algorithm_has(self, method: str) -> bool:
        """Whether the run's algorithm defines ``method`` (e.g. ``evaluate_translated``)."""
        return hasattr(get_algorithm_class(self.config.algorithm), method)


@contextmanager
def leaves_random_state(device: torch.device) -> Iterator[None]:
    """Run the block without changing the global random state (every DataLoader iteration
    draws from it), so that an optional evaluation cannot change the training after it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


@dataclass
class EvaluationContext:
    """A model and the data of its run (:class:`RunSpec`), with the forward passes cached.

    Attributes:
        run: The run.
        algorithm: The model (its weights are those being evaluated).
        val_sets: ``{source domain: validation part}``.
        target_set: The target's test part (open set: unknown classes labelled ``UNKNOWN``).
        train_parts: Each source's training part (probes fit on them).
        device: Where the model is.
        batch_size / num_workers: Of the evaluation passes.
        run_info: The run's info (``config.json``), e.g. what was measured at initialization.
        loader_cache: The loader-ready form of each split predicted on
            (:func:`~merdg.evaluators.predictions.loader_form`); a run's evaluation stage
            passes one cache to the context of every evaluation, so each split's form is built
            once per run and freed with it.
    """

    run: RunSpec
    algorithm: Algorithm
    val_sets: Mapping[str, Dataset]
    target_set: Dataset
    train_parts: Sequence[Dataset]
    device: torch.device
    batch_size: int = 256
    num_workers: int = 0
    run_info: Mapping[str, Any] = field(default_factory=dict)
    loader_cache: dict[int, tuple] = field(default_factory=dict, repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> DomainDataset:
        return self.run.dataset

    @property
    def seed(self) -> int:
        return int(self.run.config.seed)

    def predict(self, data: Dataset, zero: Sequence[str] = (),
                translate: bool = False) -> Predictions:
        """:func:`~merdg.evaluators.predictions.predict` of the model on ``data`` (not cached)."""
        return predict(self.algorithm, data, self.device, self.batch_size, self.num_workers,
                       zero, translate, self.loader_cache)

    def _cached(self, key: Any, compute: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def val_predictions(self) -> dict[str, Predictions]:
        """Each source domain's validation predictions, in the order of ``val_sets``."""
        return self._cached("val", lambda: {d: self.predict(s) for d, s in self.val_sets.items()})

    def pooled_val_predictions(self) -> Predictions:
        """Every source domain's validation predictions as one."""
        return pool(list(self.val_predictions().values()))

    def target_predictions(self) -> Predictions:
        """The target's predictions."""
        return self._cached("target", lambda: self.predict(self.target_set))

    def missing_accuracy(self, modality: str, translate: bool = False) -> float:
        """Target accuracy with ``modality`` missing: zero-filled in the fusion, or imputed by
        the algorithm's ``evaluate_translated`` (``translate``)."""
        return self._cached(("missing", modality, translate), lambda: self.predict(
            self.target_set, zero=[modality], translate=translate).accuracy())
