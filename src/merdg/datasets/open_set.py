"""Open-set views of a dataset's split parts (``RunConfig.open_set``, ``--open-set``).

The :class:`~merdg.datasets.base.DomainDataset` contract is unchanged by open-set runs: a part
returned by ``split`` yields ``(x, y)`` with ``y`` in ``[0, num_classes)``. An open-set run
(MOOSA, arXiv 2407.01518, Sec. 3.1) wraps those parts here:

- :func:`known_class_part`: the known-class samples only, labels mapped to ``0..K-1`` (their
  position among the sorted known classes) -- the source train and validation parts;
- :func:`open_set_part`: every sample, known labels mapped to ``0..K-1`` and the others to
  :data:`~merdg.datasets.base.UNKNOWN` (-1) -- the target.

Labels are read without loading inputs where the part allows it (in-memory tensors, the clip
index of EPIC-Kitchens / HAC); other parts are read once, sample by sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from merdg.datasets.base import UNKNOWN, IndexedSamples, TensorSamples, _Subset

__all__ = ["Relabeled", "known_class_part", "label_table", "open_set_part", "part_labels"]


def label_table(known_classes: Sequence[int]) -> dict[int, int]:
    """``{dataset label: model label}`` of the known classes (sorted, ``0..K-1``)."""
    return {int(k): i for i, k in enumerate(sorted(int(k) for k in known_classes))}


def part_labels(part: Dataset) -> list[int]:
    """Every sample's dataset label, without reading inputs when the part can tell."""
    if isinstance(part, (TensorSamples, IndexedSamples)):
        return part.y.tolist()
    if callable(getattr(part, "labels", None)):
        return list(part.labels())
    if isinstance(part, _Subset):
        base = part_labels(part.base)
        return [base[i] for i in part.indices]
    return [int(part[i][1]) for i in range(len(part))]


class Relabeled(Dataset):
    """``base`` with each label ``y`` replaced by ``table.get(y, UNKNOWN)``."""

    def __init__(self, base: Dataset, table: Mapping[int, int]) -> None:
        self.base, self.table = base, dict(table)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x, y = self.base[i]
        return x, self.table.get(int(y), UNKNOWN)


def _relabel(part: Dataset, table: Mapping[int, int]) -> Dataset:
    if isinstance(part, (TensorSamples, IndexedSamples)):  # keeps batched fetching
        size = max([*table, int(part.y.max()) if len(part) else 0]) + 1
        lookup = torch.full((size,), UNKNOWN, dtype=torch.long)
        lookup[list(table)] = torch.tensor(list(table.values()), dtype=torch.long)
        if isinstance(part, IndexedSamples):  # nothing is read until a batch is fetched
            return IndexedSamples(part.fetch, part.index, lookup[part.y])
        return TensorSamples(part.x, lookup[part.y])
    return Relabeled(part, table)


def known_class_part(part: Dataset, known_classes: Sequence[int]) -> Dataset:
    """The known-class samples of ``part``, labels ``0..K-1``.

    Raises:
        ValueError: ``part`` holds no sample of a known class.
    """
    table = label_table(known_classes)
    keep = [i for i, y in enumerate(part_labels(part)) if y in table]
    if not keep:
        raise ValueError(f"no sample of the known classes {sorted(table)} in this part "
                         f"({len(part)} samples)")
    selected = part.subset(keep) if callable(getattr(part, "subset", None)) else _Subset(
        part, keep)
    return _relabel(selected, table)


def open_set_part(part: Dataset, known_classes: Sequence[int]) -> Dataset:
    """Every sample of ``part``, labels ``0..K-1`` for the known classes and ``UNKNOWN`` for
    the others."""
    return _relabel(part, label_table(known_classes))
