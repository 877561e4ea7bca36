"""Datasets: the :data:`DATASETS` registry and the built-in synthetic benchmark."""

from merdg.datasets import (  # noqa: F401  (each module registers its datasets)
    epic_kitchens,  # "epic-kitchens": EPIC-Kitchens D1/D2/D3 (MM-SADA splits)
    hac,  # "hac": human / animal / cartoon
    manifest,  # "manifest": bring-your-own-data manifest.csv + .npy files
    synthetic,  # "synthetic": the built-in benchmark
    utd_mhad,  # "utd-mhad": the UTD-MHAD release
)
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
