"""The dataset interface of merdg: several domains, several modalities, one label set.

A :class:`DomainDataset` is a multi-domain benchmark (DomainBed's ``MultipleDomainDataset``
with modalities). Each domain yields samples ``(x: {modality: Tensor}, y: int)``. The protocol
asks it for a domain's ``"train"``, ``"val"`` or ``"test"`` part:

- datasets without official splits (synthetic, UTD-MHAD, manifests without a ``split`` column) hold
  out a seeded fraction of each source domain for validation and test on the whole target domain
  (the default :meth:`DomainDataset.split`);
- datasets with official splits (EPIC-Kitchens, HAC) override :meth:`DomainDataset.split`.

Training-time augmentation is chosen by the role: only ``"train"`` parts augment.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.untrusted import one_line
from merdg.hparams import HParam, seed_hash
from merdg.registry import Registry

__all__ = [
    "DATASETS",
    "Batch",
    "CheckReport",
    "DomainConcat",
    "DomainDataset",
    "TensorSamples",
    "collate",
    "holdout_indices",
]

ROLES = ("train", "val", "test")


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        x: ``{modality: (N, ...)}``.
        y: Labels, shape (N,), int64.
        domain: Index of each sample's domain among the run's source domains (or the target's
            position), shape (N,), int64.
    """

    x: dict[str, Tensor]
    y: Tensor
    domain: Tensor

    def to(self, device: torch.device | str) -> Batch:
        x = {m: v.to(device, non_blocking=True) for m, v in self.x.items()}
        return Batch(x, self.y.to(device, non_blocking=True),
                     self.domain.to(device, non_blocking=True))

    def __len__(self) -> int:
        return int(self.y.shape[0])


def collate(samples: Sequence[tuple[Mapping[str, Tensor], int, int]] | Batch) -> Batch:
    """Stack ``(x, y, domain)`` samples into a :class:`Batch` (a ready Batch passes through)."""
    if isinstance(samples, Batch):
        return samples
    modalities = samples[0][0].keys()
    x = {m: torch.stack([torch.as_tensor(s[0][m]) for s in samples]) for m in modalities}
    y = torch.tensor([int(s[1]) for s in samples], dtype=torch.long)
    d = torch.tensor([int(s[2]) for s in samples], dtype=torch.long)
    return Batch(x, y, d)


class TensorSamples(Dataset):
    """In-memory samples: ``x[m]`` has shape (n, ...) and ``y`` shape (n,).

    Supports batched fetching (``__getitems__``), so in-memory benchmarks skip per-sample
    collation.
    """

    def __init__(self, x: Mapping[str, Tensor], y: Tensor) -> None:
        sizes = {m: v.shape[0] for m, v in x.items()}
        if any(n != y.shape[0] for n in sizes.values()):
            raise ValueError(f"modality sizes {sizes} differ from {y.shape[0]} labels")
        self.x = dict(x)
        self.y = y.long()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], int]:
        return {m: v[i] for m, v in self.x.items()}, int(self.y[i])

    def take(self, indices: Sequence[int]) -> tuple[dict[str, Tensor], Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {m: v[idx] for m, v in self.x.items()}, self.y[idx]

    def subset(self, indices: Sequence[int]) -> TensorSamples:
        return TensorSamples(*self.take(indices))


class _Subset(Dataset):
    """A subset of any dataset (keeps ``take`` fast for :class:`TensorSamples`)."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]


def subset(base: Dataset, indices: Sequence[int]) -> Dataset:
    """``base`` restricted to ``indices`` (a TensorSamples stays a TensorSamples)."""
    return base.subset(indices) if isinstance(base, TensorSamples) else _Subset(base, indices)


class DomainConcat(Dataset):
    """Concatenation of per-domain datasets; items are ``(x, y, domain index)``.

    When every part is a :class:`TensorSamples`, the parts are concatenated once and
    ``__getitems__`` fetches a whole batch by indexing (no per-sample collation).
    """

    def __init__(self, parts: Sequence[Dataset]) -> None:
        self.parts = list(parts)
        self.offsets = [0]
        for p in self.parts:
            self.offsets.append(self.offsets[-1] + len(p))
        self.tensors: Batch | None = None
        if self.parts and all(isinstance(p, TensorSamples) for p in self.parts):
            x = {m: torch.cat([p.x[m] for p in self.parts]) for m in self.parts[0].x}
            y = torch.cat([p.y for p in self.parts])
            d = torch.cat([torch.full((len(p),), k, dtype=torch.long)
                           for k, p in enumerate(self.parts)])
            self.tensors = Batch(x, y, d)

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        d = bisect_right(self.offsets, i) - 1
        x, y = self.parts[d][i - self.offsets[d]]
        return x, y, d

    def __getitems__(self, indices: Sequence[int]) -> Batch | list:
        if self.tensors is None:
            return [self[int(i)] for i in indices]
        idx = torch.as_tensor(indices, dtype=torch.long)
        t = self.tensors
        return Batch({m: v[idx] for m, v in t.x.items()}, t.y[idx], t.domain[idx])


def holdout_indices(n: int, fraction: float, seed: int, domain: str) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (train, val) with ``round(fraction * n)`` val items."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed_hash("holdout", seed, domain))
    perm = torch.randperm(n, generator=g).tolist()
    n_val = int(round(fraction * n))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


@dataclass
class CheckReport:
    """Result of validating a dataset on disk (``merdg data check``).

    Attributes:
        dataset: Dataset name.
        counts: ``{domain: {class name: samples}}`` of the readable samples.
        problems: One line per problem, each naming the file or sample at fault.
        notes: Other facts worth printing (root, modalities, shapes).
    """

    dataset: str
    counts: dict[str, dict[str, int]]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        classes = list(next(iter(self.counts.values()), {}))
        lines = [f"dataset: {self.dataset}", *self.notes, ""]
        header = ["domain", *map(one_line, classes), "total"]  # names from the data
        rows = [[one_line(d), *[str(c[k]) for k in classes], str(sum(c.values()))]
                for d, c in self.counts.items()]
        per_class = [str(sum(c[k] for c in self.counts.values())) for k in classes]
        total = sum(sum(c.values()) for c in self.counts.values())
        rows.append(["total", *per_class, str(total)])
        if len(classes) > 10:  # many classes: one row per class, one column per domain
            header, *rows = [list(col) for col in zip(header, *rows)]
            header[0] = "class"
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                   for i, (v, w) in enumerate(zip(r, widths))))
        lines.append("")
        for p in self.problems:  # names from the data may hold line breaks: one line each
            lines.append(f"PROBLEM: {one_line(p)}")
        status = "OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)"
        lines.append(f"{status}: {total} readable samples in {len(self.counts)} domains")
        return "\n".join(lines)


class DomainDataset:
    """A multi-domain multimodal benchmark.

    Subclasses set :attr:`domains`, :attr:`modalities` (those loaded), :attr:`num_classes`,
    :attr:`class_names` and implement :meth:`input_shape` and :meth:`domain_samples` (or
    :meth:`split` for datasets with official splits).

    Class attributes:
        ALL_MODALITIES: Every modality the dataset offers.
        HPARAMS: Training defaults for this dataset (lr, epochs, batch size, encoders, ...).
        ENCODERS: Default encoder spec per modality.
        BENCH_MODALITY_SETS: Modality sets ``merdg bench`` compares by default (empty: all
            modalities together).
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = ()
    HPARAMS: ClassVar[dict[str, HParam]] = {}
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = {}
    HAS_OFFICIAL_SPLITS: ClassVar[bool] = False
    BENCH_MODALITY_SETS: ClassVar[tuple[tuple[str, ...], ...]] = ()

    domains: list[str]
    modalities: list[str]
    num_classes: int
    class_names: list[str]

    def select_modalities(self, modalities: Sequence[str] | None) -> list[str]:
        """Validate a requested modality subset (None: all), sorted."""
        if modalities is None:
            return sorted(self.ALL_MODALITIES)
        unknown = sorted(set(modalities) - set(self.ALL_MODALITIES))
        if unknown or not modalities:
            raise ValueError(
                f"unknown modalities {unknown or list(modalities)} for {type(self).__name__}; "
                f"available: {list(self.ALL_MODALITIES)}"
            )
        return sorted(set(modalities))

    def check_domains(self, names: Sequence[str]) -> None:
        unknown = [d for d in names if d not in self.domains]
        if unknown:
            raise ValueError(f"unknown domains {unknown}; this dataset has {self.domains}")

    def input_shape(self, modality: str) -> tuple[int, ...]:
        """Shape of one sample of ``modality`` (without the batch dim)."""
        raise NotImplementedError

    def encoder_spec(self, modality: str) -> dict[str, Any]:
        """Default encoder spec ``{"name": ..., **kwargs}`` for ``modality``."""
        if modality not in self.ENCODERS:
            raise KeyError(f"{type(self).__name__} declares no default encoder for {modality!r}")
        return dict(self.ENCODERS[modality])

    def fusion_order(self) -> list[str] | None:
        """Concatenation order of the loaded modalities (None: sorted names)."""
        return None

    def domain_samples(self, domain: str) -> Dataset:
        """Every sample of ``domain`` (datasets without official splits)."""
        raise NotImplementedError

    def fit_normalization(self, sources: Sequence[str]) -> None:
        """Fit input normalization on the source domains only (default: nothing to fit)."""

    def data_issues(self) -> dict[str, Any]:
        """Problems met while reading the data that the run records should show (e.g. samples
        skipped on request because of unreadable files); empty when there are none."""
        return {}

    def split(self, domain: str, role: str, seed: int, holdout_fraction: float) -> Dataset:
        """The ``role`` part ("train", "val", "test") of ``domain``.

        Default: "test" is the whole domain (it is the target); "train"/"val" is a seeded
        ``holdout_fraction`` split of the domain, seeded by ``(seed, domain)``.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        samples = self.domain_samples(domain)
        if role == "test":
            return samples
        train, val = holdout_indices(len(samples), holdout_fraction, seed, domain)
        return subset(samples, train if role == "train" else val)

    def labels(self, domain: str) -> list[int]:
        """Labels of every sample of ``domain`` (for summaries); override when cheaper."""
        samples = self.domain_samples(domain)
        if isinstance(samples, TensorSamples):
            return samples.y.tolist()
        return [int(samples[i][1]) for i in range(len(samples))]

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              **options: Any) -> CheckReport:
        """Validate the dataset without training (datasets on disk override this to report
        every unreadable file instead of stopping at the first)."""
        dataset = cls(root=root, modalities=modalities, **options)
        notes = [f"modalities: {', '.join(dataset.modalities)}"] + [
            f"  {m}: sample shape {dataset.input_shape(m)}" for m in dataset.modalities]
        return CheckReport(cls.__name__, dataset.summary(), notes=notes)

    def summary(self) -> dict[str, dict[str, int]]:
        """``{domain: {class name: count}}``."""
        out = {}
        for d in self.domains:
            counts = Counter(self.labels(d))
            out[d] = {self.class_names[c]: counts.get(c, 0) for c in range(self.num_classes)}
        return out


DATASETS: Registry[type[DomainDataset]] = Registry("dataset")
