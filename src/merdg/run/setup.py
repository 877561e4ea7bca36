"""What a run is made of: its data (dataset, sources, splits, open-set classes) and its model.

Training (:mod:`merdg.run.training`) and every later use of a finished run (``merdg evaluate``,
``merdg diagnose``: :mod:`merdg.run.saved`) build both here, so the splits a saved model is
evaluated on are exactly those of its training (same holdout seed and fraction, same source
normalization).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from merdg.algorithms import Algorithm, check_task, get_algorithm_class
from merdg.datasets import BalancedDomainBatchSampler, DomainDataset, build_dataset
from merdg.datasets.open_set import known_class_part, open_set_part
from merdg.evaluation.open_set import resolve_known_classes
from merdg.evaluators import RunSpec
from merdg.hparams import OPTIONAL_HPARAMS
from merdg.models import MultimodalNet, build_encoder
from merdg.run.config import RunConfig

__all__ = ["RunData", "build_algorithm", "check_open_set", "prepare_data", "resolve_device",
           "run_dataset", "run_sources", "source_splits"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def build_algorithm(dataset: DomainDataset, algorithm: str, num_domains: int,
                    hparams: dict[str, Any], device: torch.device | str = "cpu",
                    num_classes: int | None = None,
                    prepare: Callable[[dict[str, nn.Module]], Any] | None = None) -> Algorithm:
    """Encoders from ``hparams["encoders"]``, the network, the algorithm on ``device``, and its
    optimizer.

    Args:
        num_classes: Outputs (default: the dataset's classes; an open-set run has one per known
            class).
        prepare: Called with the freshly built ``{modality: encoder}`` before the network and
            the algorithm are built around them: where a run loads, pretrains and freezes its
            encoders (:func:`merdg.run.initialization.prepare_encoders`).
    """
    encoders = {m: build_encoder(hparams["encoders"][m], dataset.input_shape(m))
                for m in dataset.modalities}
    if prepare is not None:
        prepare(encoders)
    net = MultimodalNet(encoders, num_classes or dataset.num_classes,
                        order=dataset.fusion_order(),
                        fusion_hidden=int(hparams["fusion_hidden"]),
                        dropout=float(hparams["dropout"]),
                        proj_hidden=int(hparams["proj_hidden"]), proj_dim=int(hparams["proj_dim"]),
                        task=dataset.TASK,
                        fusion=hparams.get("fusion", OPTIONAL_HPARAMS["fusion"].default))
    algo = get_algorithm_class(algorithm)(net, num_domains, hparams).to(device)
    algo.configure_optimizer()
    return algo


def check_open_set(config: RunConfig, dataset: DomainDataset) -> tuple[int, ...] | None:
    """The known classes of an open-set run (None for a closed-set one), checked, with the
    algorithm against the dataset's task.

    Raises:
        ValueError: One line: no published split and no ``--known-classes``, a bad class list,
            an algorithm that needs ``--open-set`` (MOOSA-OS) in a closed-set run, an
            algorithm that does not run on a regression task
            (:func:`merdg.algorithms.check_task`), or ``--open-set`` on a regression task.
    """
    algorithm = get_algorithm_class(config.algorithm)
    check_task(config.algorithm, algorithm, dataset.TASK)
    if config.open_set and dataset.TASK == "regression":
        raise ValueError(f"--open-set needs classes to leave out; {config.dataset} is a "
                         "regression task")
    if not config.open_set:
        if algorithm.OPEN_SET_ONLY:
            raise ValueError(f"{config.algorithm} is an open-set method; run it with "
                             "--open-set (or use its closed-set variant)")
        return None
    return resolve_known_classes(dataset, config.known_classes, config.dataset)


def _source_part(dataset: DomainDataset, domain: str, role: str, config: RunConfig,
                 known: tuple[int, ...] | None) -> Dataset:
    part = dataset.split(domain, role, config.holdout_seed(), config.holdout_fraction)
    if known is None:
        return part
    try:
        return known_class_part(part, known)
    except ValueError as err:
        raise ValueError(f"open-set source {domain} ({role}): {err}") from err


def _samples(n: int) -> str:
    return f"{n} sample" + ("" if n == 1 else "s")


def source_splits(dataset: DomainDataset, config: RunConfig, sources: Sequence[str],
                  batch_size: int, known: tuple[int, ...] | None = None
                  ) -> tuple[list[Dataset], dict[str, Dataset], Dataset]:
    """The train part of each source, the val part of each source and the target's test part
    (open set: the sources' known classes only; the target with unknowns marked), checked
    before any training step.

    Raises:
        ValueError: One line naming the domain whose part is empty or smaller than its share
            of a batch, and what to change.
    """
    fraction = config.holdout_fraction
    train_parts = [_source_part(dataset, d, "train", config, known) for d in sources]
    val_sets = {d: _source_part(dataset, d, "val", config, known) for d in sources}
    target_set = dataset.split(config.target, "test", config.holdout_seed(), fraction)
    if known is not None:
        target_set = open_set_part(target_set, known)
    for d, train_part in zip(sources, train_parts):
        n_val = len(val_sets[d])
        if len(train_part) == 0:
            raise ValueError(f"source domain {d!r} has no training samples ({n_val} held out "
                             f"for validation with --holdout-fraction {fraction}); leave it "
                             "out (merdg train --source)")
        if n_val == 0 and len(train_part) < 2:
            raise ValueError(f"source domain {d!r} has {_samples(len(train_part))}: too few "
                             "for a training and a validation split; leave it out (merdg "
                             "train --source)")
        if n_val == 0:
            raise ValueError(
                f"source domain {d!r} has no validation samples (--holdout-fraction {fraction} "
                f"of its {_samples(len(train_part))} rounds to 0); raise --holdout-fraction, or "
                "leave the domain out (merdg train --source)")
    if len(target_set) == 0:
        raise ValueError(f"target domain {config.target!r} has no test samples")
    # the sampler's checks (one sample of each domain per batch, each domain's share of a
    # batch), naming the domains, before the model is built
    BalancedDomainBatchSampler([len(p) for p in train_parts], batch_size, config.seed,
                               names=sources)
    return train_parts, val_sets, target_set


def run_dataset(config: RunConfig) -> DomainDataset:
    """The run's dataset with its modalities (not yet normalized), its domains checked."""
    dataset = build_dataset(config.dataset, config.data_root, config.modalities,
                            **config.dataset_options)
    dataset.check_domains([config.target, *(config.sources or [])])
    return dataset


def run_sources(config: RunConfig, dataset: DomainDataset) -> list[str]:
    """The source domains: ``config.sources``, else every domain but the target."""
    sources = config.sources or [d for d in dataset.domains if d != config.target]
    if config.target in sources:
        raise ValueError(f"target {config.target!r} is also a source domain")
    return sources


@dataclass
class RunData:
    """The data of a run, split as its training splits it.

    Attributes:
        spec: The run as evaluators see it (config, dataset normalized on the sources, sources,
            known classes).
        train_parts: Each source's training part.
        val_sets: ``{source: validation part}``.
        target_set: The target's test part.
    """

    spec: RunSpec
    train_parts: list[Dataset]
    val_sets: dict[str, Dataset]
    target_set: Dataset

    @property
    def dataset(self) -> DomainDataset:
        return self.spec.dataset

    @property
    def sources(self) -> list[str]:
        return self.spec.sources

    @property
    def known_classes(self) -> tuple[int, ...] | None:
        return self.spec.known_classes


def prepare_data(config: RunConfig, dataset: DomainDataset, sources: Sequence[str],
                 batch_size: int) -> RunData:
    """Normalize ``dataset`` on ``sources`` and split it as the run does (checked:
    :func:`source_splits`, :func:`check_open_set`)."""
    known = check_open_set(config, dataset)
    dataset.fit_normalization(list(sources))
    train_parts, val_sets, target_set = source_splits(dataset, config, sources, batch_size,
                                                      known)
    return RunData(RunSpec(config, dataset, list(sources), known), train_parts, val_sets,
                   target_set)
