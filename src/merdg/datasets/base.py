"""The dataset interface of merdg: several domains, several modalities, one label set.

A :class:`DomainDataset` is a multi-domain benchmark (DomainBed's ``MultipleDomainDataset``
with modalities). Each domain yields samples ``(x: {modality: Tensor}, y: int)``. The protocol
asks it for a domain's ``"train"``, ``"val"`` or ``"test"`` part:

- datasets without official splits (synthetic, UTD-MHAD, manifests without a ``split`` column) hold
  out a seeded fraction of each source domain for validation and test on the whole target domain
  (the default :meth:`DomainDataset.split`);
- datasets with official splits (EPIC-Kitchens, HAC) override :meth:`DomainDataset.split`.

Training-time augmentation is chosen by the role: only ``"train"`` parts augment.

**Tasks.** A dataset is a classification task (``TASK = "classification"``: ``y`` is the class)
or a regression task (``TASK = "regression"``, e.g. sentiment intensity in MOSI/MOSEI/CH-SIMS):
each sample then also carries its real-valued ``target``, and ``y`` is the target's sign class
(:data:`SIGN_CLASSES`: negative, zero, positive; :func:`sign_classes`), which class-based
terms (probes, unimodal heads, contrastive labels) use, as MMDG-Bench's MMSA methods do
(``_sentiment_to_class`` in ``MMSA/models/CMRF_Model.py`` of lihongzhao99/MMDG_Benchmark).
Samples are ``(x, y)`` or, for regression, ``(x, y, target)``; :class:`Batch` holds
``target`` (None for classification).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
    "MODALITY_KINDS",
    "Batch",
    "CheckReport",
    "DomainConcat",
    "DomainDataset",
    "IndexedSamples",
    "SIGN_CLASSES",
    "TASKS",
    "TensorSamples",
    "UNKNOWN",
    "ValueConvention",
    "collate",
    "holdout_indices",
    "sign_classes",
]

ROLES = ("train", "val", "test")
TASKS = ("classification", "regression")
SIGN_CLASSES = ("negative", "zero", "positive")
"""The classes of a regression target's sign (:func:`sign_classes`)."""
MODALITY_KINDS = ("video", "flow", "audio", "timeseries", "array", "text")
"""What a modality's samples are, for the corruptions of :mod:`merdg.evaluation`:

- ``"video"``: RGB frames (3, T, H, W);
- ``"flow"``: optical flow (2, T, H, W), the (u, v) components;
- ``"audio"``: a mono waveform (n,), which in merdg only exists inside a dataset's reading
  pipeline (the network sees its log spectrogram);
- ``"timeseries"``: a (T, C) sequence (inertial sensors, skeleton joints);
- ``"array"``: any other array (feature vectors, depth clips);
- ``"text"``: a precomputed feature sequence (T, D) zero-padded at the end: one feature
  vector per token (BERT, GloVe) or, in MMSA's audio and vision files, per frame; the steps
  whose features are all 0 are padding (masked by the sequence encoders, left alone by the
  corruptions).
"""
UNKNOWN = -1
"""Label of a sample whose class the model does not know (an unknown class of an open-set
target, :mod:`merdg.datasets.open_set`); as a prediction: rejected as unknown."""


@dataclass(frozen=True, eq=False)
class ValueConvention:
    """How the corruptions of :mod:`merdg.evaluation` read one modality's samples.

    A sample handed to the network and the values a corruption works on are related by
    ``sample = (values - mean) / std`` (``mean`` and ``std`` broadcast to one sample). The
    values of each kind are documented in ``docs/robustness.md``: RGB in [0, 1], flow in
    [-1, 127/128] with 0 = no motion, waveforms in [-1, 1], and the dataset's own units
    (before standardization) for time series and arrays.

    Attributes:
        kind: One of :data:`MODALITY_KINDS`.
        mean / std: The affine map above (scalars or tensors broadcastable to one sample).
        spread: Typical size of the values (per channel: the standard deviation over the source
            domains, broadcastable to one sample); additive corruptions of time series and
            arrays are scaled by it. None for the other kinds.
        in_pipeline: The dataset applies corruptions while it reads a sample, on the values
            before they become the network's input (EPIC-Kitchens and HAC: pixels after the
            crop, the waveform before its spectrogram); its parts then implement
            ``corrupted_item(index, corruptions)``.
    """

    kind: str
    mean: Tensor | float = 0.0
    std: Tensor | float = 1.0
    spread: Tensor | float | None = None
    in_pipeline: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODALITY_KINDS:
            raise ValueError(f"modality kind must be one of {MODALITY_KINDS}, got {self.kind!r}")

    def to_values(self, sample: Tensor) -> Tensor:
        """A network-input sample -> the values corruptions work on."""
        if self.kind == "audio":
            raise ValueError("audio samples are spectrograms; the waveform that audio "
                             "corruptions work on only exists inside the dataset's pipeline")
        return sample * self.std + self.mean

    def to_sample(self, values: Tensor, dtype: torch.dtype) -> Tensor:
        """Corrupted values -> a network-input sample of ``dtype``."""
        return ((values - self.mean) / self.std).to(dtype)

    def context(self) -> dict[str, Any]:
        """Keyword arguments the corruption functions of this kind take."""
        return {} if self.spread is None else {"spread": self.spread}


def sign_classes(values: Tensor) -> Tensor:
    """The sign class of each regression target (:data:`SIGN_CLASSES`): 0 negative, 1 zero,
    2 positive; (N,) float -> (N,) int64."""
    return (torch.sign(values.float()) + 1).long()


def kind_of_shape(shape: Sequence[int]) -> str:
    """Default kind of samples of ``shape``: (T, C) sequences are ``"timeseries"``, anything
    else ``"array"`` (RGB video, flow and audio are only declared by datasets that know them)."""
    return "timeseries" if len(shape) == 2 else "array"


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        x: ``{modality: (N, ...)}``.
        y: Labels, shape (N,), int64 (a regression task: the targets' sign classes).
        domain: Index of each sample's domain among the run's source domains (or the target's
            position), shape (N,), int64.
        target: Regression targets, shape (N,), float32; None for classification.
    """

    x: dict[str, Tensor]
    y: Tensor
    domain: Tensor
    target: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        x = {m: v.to(device, non_blocking=True) for m, v in self.x.items()}
        target = None if self.target is None else self.target.to(device, non_blocking=True)
        return Batch(x, self.y.to(device, non_blocking=True),
                     self.domain.to(device, non_blocking=True), target)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def collate(samples: Sequence[tuple[Any, ...]] | Batch) -> Batch:
    """Stack ``(x, y, domain)`` samples (``(x, y, domain, target)`` for regression) into a
    :class:`Batch` (a ready Batch passes through)."""
    if isinstance(samples, Batch):
        return samples
    modalities = samples[0][0].keys()
    x = {m: torch.stack([torch.as_tensor(s[0][m]) for s in samples]) for m in modalities}
    y = torch.tensor([int(s[1]) for s in samples], dtype=torch.long)
    d = torch.tensor([int(s[2]) for s in samples], dtype=torch.long)
    target = (torch.tensor([float(s[3]) for s in samples], dtype=torch.float32)
              if len(samples[0]) > 3 else None)
    return Batch(x, y, d, target)


def _item(x: dict[str, Tensor], y: Tensor, target: Tensor | None, i: int) -> tuple[Any, ...]:
    """One sample: ``(x, y)``, or ``(x, y, target)`` for regression."""
    if target is None:
        return x, int(y[i])
    return x, int(y[i]), float(target[i])


def _targets(parts: Sequence[Dataset]) -> Tensor | None:
    """The parts' regression targets concatenated (None unless every part has them)."""
    targets = [getattr(p, "target", None) for p in parts]
    if not targets or any(t is None for t in targets):
        return None
    return torch.cat(targets)


class TensorSamples(Dataset):
    """In-memory samples: ``x[m]`` has shape (n, ...) and ``y`` shape (n,) (``target`` (n,)
    for regression).

    Supports batched fetching (``__getitems__``), so in-memory benchmarks skip per-sample
    collation.
    """

    def __init__(self, x: Mapping[str, Tensor], y: Tensor, target: Tensor | None = None) -> None:
        sizes = {m: v.shape[0] for m, v in x.items()}
        if any(n != y.shape[0] for n in sizes.values()):
            raise ValueError(f"modality sizes {sizes} differ from {y.shape[0]} labels")
        if target is not None and target.shape != y.shape:
            raise ValueError(f"{tuple(target.shape)} regression targets for {y.shape[0]} labels")
        self.x = dict(x)
        self.y = y.long()
        self.target = None if target is None else target.float()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return _item({m: v[i] for m, v in self.x.items()}, self.y, self.target, i)

    def take(self, indices: Sequence[int]) -> tuple[dict[str, Tensor], Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {m: v[idx] for m, v in self.x.items()}, self.y[idx]

    def subset(self, indices: Sequence[int]) -> TensorSamples:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorSamples(*self.take(idx), None if self.target is None else self.target[idx])


class IndexedSamples(Dataset):
    """Samples read through an index into shared stacked arrays.

    ``fetch(rows)`` returns ``{modality: (len(rows), ...)}`` for positions ``rows`` of the
    arrays (e.g. gathers rows of memory-mapped arrays and standardizes them), so subsets and
    concatenations copy indices, never data, and every DataLoader worker reads the same arrays.

    Args:
        fetch: Rows of the shared arrays -> batch of every modality.
        index: Positions of this dataset's samples in the shared arrays, shape (n,).
        y: Labels, shape (n,).
        target: Regression targets, shape (n,) (None for classification).
    """

    def __init__(self, fetch: Callable[[Tensor], dict[str, Tensor]], index: Tensor,
                 y: Tensor, target: Tensor | None = None) -> None:
        if index.shape[0] != y.shape[0]:
            raise ValueError(f"{index.shape[0]} positions for {y.shape[0]} labels")
        if target is not None and target.shape != y.shape:
            raise ValueError(f"{tuple(target.shape)} regression targets for {y.shape[0]} labels")
        self.fetch, self.index, self.y = fetch, index.long(), y.long()
        self.target = None if target is None else target.float()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        x = self.fetch(self.index[i].reshape(1))
        return _item({m: v[0] for m, v in x.items()}, self.y, self.target, i)

    @property
    def x(self) -> dict[str, Tensor]:
        """Every sample, fetched (a copy): ``{modality: (n, ...)}``."""
        return self.fetch(self.index)

    def take(self, indices: Sequence[int]) -> tuple[dict[str, Tensor], Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.fetch(self.index[idx]), self.y[idx]

    def subset(self, indices: Sequence[int]) -> IndexedSamples:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return IndexedSamples(self.fetch, self.index[idx], self.y[idx],
                              None if self.target is None else self.target[idx])


class _Subset(Dataset):
    """A subset of any dataset (keeps ``take`` fast for :class:`TensorSamples`)."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]


def subset(base: Dataset, indices: Sequence[int]) -> Dataset:
    """``base`` restricted to ``indices`` (a TensorSamples or IndexedSamples keeps its type)."""
    if isinstance(base, (TensorSamples, IndexedSamples)):
        return base.subset(indices)
    return _Subset(base, indices)


class DomainConcat(Dataset):
    """Concatenation of per-domain datasets; items are ``(x, y, domain index)`` (and the
    regression ``target`` after them when the parts have one).

    When every part is a :class:`TensorSamples`, the parts are concatenated once and
    ``__getitems__`` fetches a whole batch by indexing (no per-sample collation); when every part
    is an :class:`IndexedSamples` of the same arrays, only their indices are concatenated.
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
            self.tensors = Batch(x, y, d, _targets(self.parts))
        self.indexed: IndexedSamples | None = None  # positions into the parts' shared arrays
        if self.parts and all(isinstance(p, IndexedSamples) and p.fetch == self.parts[0].fetch
                              for p in self.parts):
            self.indexed = IndexedSamples(self.parts[0].fetch,
                                          torch.cat([p.index for p in self.parts]),
                                          torch.cat([p.y for p in self.parts]),
                                          _targets(self.parts))
            self.domain = torch.cat([torch.full((len(p),), k, dtype=torch.long)
                                     for k, p in enumerate(self.parts)])

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        d = bisect_right(self.offsets, i) - 1
        x, y, *target = self.parts[d][i - self.offsets[d]]
        return (x, y, d, *target)

    def __getitems__(self, indices: Sequence[int]) -> Batch | list:
        if self.indexed is not None:
            idx = torch.as_tensor(indices, dtype=torch.long)
            target = self.indexed.target
            return Batch(*self.indexed.take(idx), self.domain[idx],
                         None if target is None else target[idx])
        if self.tensors is None:
            return [self[int(i)] for i in indices]
        idx = torch.as_tensor(indices, dtype=torch.long)
        t = self.tensors
        return Batch({m: v[idx] for m, v in t.x.items()}, t.y[idx], t.domain[idx],
                     None if t.target is None else t.target[idx])


def holdout_indices(n: int, fraction: float, seed: int, domain: str,
                    groups: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (train, val) with about ``round(fraction * n)`` val items.

    Without ``groups`` the val items are the first ``round(fraction * n)`` of a seeded
    permutation. With ``groups`` (one name per item: a recording, session or subject) whole
    groups are held out, so no group has items on both sides: the groups, in order of first
    appearance, are permuted by the same seeded generator and taken into val one by one until
    val holds ``round(fraction * n)`` items, keeping or dropping the last group taken, whichever
    lands closer (when ``round(fraction * n) > 0``, at least one group goes to val and one stays
    in train). When every group holds one item the split equals the split without groups.

    Raises:
        ValueError: ``fraction`` outside [0, 1), ``groups`` of the wrong length, or a holdout
            with fewer than two groups (nothing can be held out).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed_hash("holdout", seed, domain))
    n_val = int(round(fraction * n))
    if groups is None:
        perm = torch.randperm(n, generator=g).tolist()
        return sorted(perm[n_val:]), sorted(perm[:n_val])
    if len(groups) != n:
        raise ValueError(f"domain {domain!r}: {len(groups)} group names for {n} samples")
    members: dict[str, list[int]] = {}
    for i, name in enumerate(groups):
        members.setdefault(name, []).append(i)
    names = list(members)  # order of first appearance
    if n_val > 0 and len(names) < 2:
        raise ValueError(f"domain {domain!r} has {len(names)} group(s) ({names}); a holdout of "
                         f"{fraction} needs at least two groups, one for training and one for "
                         "validation: give the domain more groups, or leave it out of the "
                         "sources (--source)")
    order = [names[k] for k in torch.randperm(len(names), generator=g).tolist()]
    taken, size = 0, 0
    while size < n_val and taken < len(order) - 1:
        nxt = size + len(members[order[taken]])
        if taken > 0 and nxt - n_val > n_val - size:  # dropping the last group lands closer
            break
        taken, size = taken + 1, nxt
    val = sorted(i for name in order[:taken] for i in members[name])
    train = sorted(i for name in order[taken:] for i in members[name])
    return train, val


@dataclass
class CheckReport:
    """Result of validating a dataset on disk (``merdg data check``).

    Attributes:
        dataset: Dataset name.
        counts: ``{domain: {class name: samples}}`` of the readable samples.
        problems: One line per problem, each naming the file or sample at fault.
        notes: Other facts worth printing (root, modalities, shapes).
        row_kind: What a key of ``counts`` is, for the summary line (``"domains"``, or
            ``"domain/split parts"`` where each domain has several split files).
    """

    dataset: str
    counts: dict[str, dict[str, int]]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    row_kind: str = "domains"

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
        lines.append(f"{status}: {total} readable samples in {len(self.counts)} {self.row_kind}")
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
        OPEN_SET_KNOWN_CLASSES: Labels of the known classes of the dataset's published open-set
            split (the other classes are unknown, seen in the target only); None when no split
            is published (see :mod:`merdg.evaluation.open_set`).
        TASK: ``"classification"`` or ``"regression"`` (module docstring).
        OMITTED_TASKS: (sources, target) pairs that ``merdg bench --setting`` leaves out
            because the published benchmark does not run them (sources spelled out, sorted).
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = ()
    TASK: ClassVar[str] = "classification"
    HPARAMS: ClassVar[dict[str, HParam]] = {}
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = {}
    HAS_OFFICIAL_SPLITS: ClassVar[bool] = False
    BENCH_MODALITY_SETS: ClassVar[tuple[tuple[str, ...], ...]] = ()
    OPEN_SET_KNOWN_CLASSES: ClassVar[tuple[int, ...] | None] = None
    OMITTED_TASKS: ClassVar[tuple[tuple[tuple[str, ...], str], ...]] = ()

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

    def normalize_as(self, fitted: DomainDataset) -> None:
        """Prepare this dataset's samples for a model trained on ``fitted`` (normalized on its
        run's sources), e.g. as an out-of-distribution set: the inputs must be normalized as
        that model's were. Default: datasets that normalize each sample on their own validate
        their test parts (``fit_normalization`` with no source)."""
        self.fit_normalization([])

    def modality_kind(self, modality: str) -> str:
        """The kind of ``modality`` (one of :data:`MODALITY_KINDS`); default: by the sample's
        rank (:func:`kind_of_shape`)."""
        return kind_of_shape(self.input_shape(modality))

    def value_convention(self, modality: str) -> ValueConvention:
        """How corruptions read ``modality``'s samples. Default: the samples are the values
        (identity map, spread 1); datasets that standardize their inputs override this."""
        kind = self.modality_kind(modality)
        spread = 1.0 if kind in ("timeseries", "array") else None
        return ValueConvention(kind, spread=spread)

    def preprocessing(self) -> dict[str, Any]:
        """Decisions that shape the model input and that a run should record, e.g. each
        modality's raw length range, length policy and stacked shape; empty by default."""
        return {}

    def data_issues(self) -> dict[str, Any]:
        """Problems met while reading the data that the run records should show (e.g. samples
        skipped on request because of unreadable files); empty when there are none."""
        return {}

    def split(self, domain: str, role: str, seed: int, holdout_fraction: float) -> Dataset:
        """The ``role`` part ("train", "val", "test") of ``domain``.

        Default: "test" is the whole domain (it is the target); "train"/"val" is a seeded
        ``holdout_fraction`` split of the domain, seeded by ``(seed, domain)``, that keeps each
        group of :meth:`domain_groups` on one side.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        samples = self.domain_samples(domain)
        if role == "test":
            return samples
        train, val = holdout_indices(len(samples), holdout_fraction, seed, domain,
                                     self.domain_groups(domain))
        return subset(samples, train if role == "train" else val)

    def domain_groups(self, domain: str) -> list[str] | None:
        """Group (recording, session, subject) of each sample of ``domain``, in the order of
        :meth:`domain_samples`; the holdout keeps each group on one side. None (the default):
        every sample is its own group."""
        return None

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
