"""Datasets: the :data:`DATASETS` registry and the built-in synthetic benchmark."""

import inspect

from merdg.datasets import (  # noqa: F401  (each module registers its datasets)
    epic_kitchens,  # "epic-kitchens": EPIC-Kitchens D1/D2/D3 (MM-SADA splits)
    hac,  # "hac": human / animal / cartoon
    hust,  # "hust": HUST motor-fault diagnosis (MMDG-Bench), vibration + acoustic
    manifest,  # "manifest": bring-your-own-data manifest.csv + .npy files
    mmsa,  # "mmsa": MOSI / MOSEI / CH-SIMS sentiment regression (MMDG-Bench)
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
    "check_dataset_options",
    "collate",
]


def _option_names(cls: type) -> list[str] | None:
    """The keyword options ``cls(...)`` takes besides ``root`` and ``modalities``, following
    ``**options`` up the class hierarchy; None when they cannot be listed."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names += [n for n, p in params.items() if n not in ("self", "root", "modalities")
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
    return None


def check_dataset_options(name: str, options: dict) -> None:
    """Refuse options the dataset does not take, before it is built.

    Raises:
        KeyError: Unknown dataset (the registered ones listed).
        ValueError: An unknown option (``--dataset-option``), naming the valid ones.
    """
    valid = _option_names(DATASETS.get(name))
    unknown = sorted(set(options) - set(valid)) if valid is not None else []
    if unknown:
        raise ValueError(f"dataset {name!r} has no option {', '.join(map(repr, unknown))} "
                         f"(--dataset-option); its options: {', '.join(valid) or 'none'}")


def build_dataset(name: str, root: str | None = None, modalities=None, **options) -> DomainDataset:
    """Instantiate a registered dataset by name (unknown options are refused by name)."""
    check_dataset_options(name, options)
    return DATASETS.get(name)(root=root, modalities=modalities, **options)
