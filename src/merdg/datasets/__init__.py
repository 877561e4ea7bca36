"""Datasets: the :data:`DATASETS` registry and the built-in synthetic benchmark."""

import merdg.datasets.epic_kitchens  # noqa: F401  (registers "epic-kitchens")
import merdg.datasets.hac  # noqa: F401  (registers "hac")
from merdg.datasets import synthetic  # noqa: F401  (registers "synthetic")
from merdg.datasets.base import DATASETS, Batch, DomainDataset, TensorSamples, collate
from merdg.datasets.samplers import BalancedDomainBatchSampler

__all__ = [
    "DATASETS",
    "BalancedDomainBatchSampler",
    "Batch",
    "DomainDataset",
    "TensorSamples",
    "build_dataset",
    "collate",
]


def build_dataset(name: str, root: str | None = None, modalities=None, **options) -> DomainDataset:
    """Instantiate a registered dataset by name."""
    return DATASETS.get(name)(root=root, modalities=modalities, **options)
