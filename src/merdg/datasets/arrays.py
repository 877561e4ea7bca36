"""A dataset held as one stacked array per modality, with source-only normalization.

The on-disk readers (UTD-MHAD, manifests) stack each modality into an array of shape
(n_samples, ...) (in memory, or memory-mapped from a preprocessing cache) and keep each sample's
domain and label. Before training, :meth:`ArrayDomainDataset.fit_normalization` computes
standardization statistics from the *source* domains only; they are applied to every domain,
target included, so the target's statistics never reach the model.

Samples are handed out as :class:`~merdg.datasets.base.IndexedSamples`: splits and the training
set hold positions, and each batch is gathered and standardized when it is fetched, so the
stacked arrays exist once, shared by the DataLoader workers, instead of once per split and per
normalization.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.base import DomainDataset, IndexedSamples, ValueConvention
from merdg.datasets.preprocessing import Standardization, fit_standardization, raise_problems

__all__ = ["ArrayDomainDataset", "fit_standardization_streaming", "zero_padded_steps"]

EXACT_FIT_ELEMENTS = 2**26  # up to this many source elements: one in-memory pass (as before)
CHUNK_BYTES = 32 * 2**20  # streaming fit: float64 bytes per chunk


def zero_padded_steps(x: Tensor, lengths: Tensor) -> Tensor:
    """``x`` (N, T, ...) with the steps ``t >= lengths[i]`` of each sample set to exactly 0."""
    valid = torch.arange(x.shape[1]) < lengths.reshape(-1, 1)  # (N, T)
    valid = valid.reshape(*valid.shape, *([1] * (x.ndim - 2)))
    return torch.where(valid, x, torch.zeros((), dtype=x.dtype))


def fit_standardization_streaming(x: Tensor, rows: Tensor, mode: str,
                                  lengths: Tensor | None = None,
                                  min_std: float = 1e-6) -> Standardization:
    """:func:`~merdg.datasets.preprocessing.fit_standardization` of ``x[rows]`` computed in
    chunks (two passes in float64: mean, then variance), so the source samples are never copied
    at once; with ``lengths`` only each sample's first ``lengths[i]`` steps count (padded
    sequences).

    Args:
        x: Samples of one modality, (n, ...); (n, T, ...) when ``lengths`` is given.
        rows: Positions of the source samples, (k,).
        mode: ``"channel"``, ``"global"`` or ``"none"``.
        lengths: Valid steps of every sample of ``x``, (n,), or None.
        min_std: Channels whose std is below this are divided by 1 instead.
    """
    if mode == "none" or (lengths is None and rows.numel() * math.prod(x.shape[1:])
                          <= EXACT_FIT_ELEMENTS):
        return fit_standardization(x[rows], mode, min_std)
    if rows.numel() == 0:
        raise ValueError("cannot fit normalization statistics on zero samples")
    per_row = max(1, math.prod(x.shape[1:]) * 8)
    chunks = rows.split(max(1, CHUNK_BYTES // per_row))

    def values(chunk: Tensor) -> Tensor:  # (M, ...) float64: the valid entries of the chunk
        v = x[chunk].double()
        if lengths is not None:
            v = v[torch.arange(v.shape[1]) < lengths[chunk].reshape(-1, 1)]  # (M, ...) steps
        return v.reshape(-1, v.shape[-1]) if mode == "channel" else v.reshape(-1)

    total, count = 0.0, 0
    for chunk in chunks:
        v = values(chunk)
        total, count = total + v.sum(dim=0), count + v.shape[0]
    if count == 0:
        raise ValueError("cannot fit normalization statistics on zero valid steps")
    mean = total / count
    squares = sum(((values(chunk) - mean) ** 2).sum(dim=0) for chunk in chunks)
    std = (squares / count).sqrt()
    std = torch.where(std < min_std, torch.ones_like(std), std)
    shape = (1,) * (x.ndim - 1) + (x.shape[-1],) if mode == "channel" else (1,) * x.ndim
    return Standardization(mean.reshape(shape).float(), std.reshape(shape).float(), mode)


class ArrayDomainDataset(DomainDataset):
    """Base of datasets whose samples are stacked arrays (in memory or memory-mapped).

    Subclasses call :meth:`set_samples` from their constructor, after setting
    :attr:`modalities`, and set :attr:`normalization` (mode per modality, see
    :func:`~merdg.datasets.preprocessing.fit_standardization`).

    With ``normalize=True`` (the default) the samples are only handed out after
    :meth:`fit_normalization` (training calls it with the run's source domains); asking before
    raises, so unnormalized inputs are never used by mistake.
    """

    normalization: dict[str, str]
    normalize: bool = True

    def set_samples(self, x: Mapping[str, Tensor], y: Tensor, sample_domains: Sequence[str],
                    domains: Sequence[str], class_names: Sequence[str],
                    lengths: Mapping[str, Tensor] | None = None,
                    targets: Tensor | None = None) -> None:
        """Install the samples.

        Args:
            x: ``{modality: (n, ...)}`` float tensors, every loaded modality (they are read,
                never copied: memory-mapped arrays stay on disk).
            y: Labels (n,).
            sample_domains: Each sample's domain name (n entries).
            domains: Domain names in their canonical order.
            class_names: Name of each label index.
            lengths: ``{modality: (n,)}`` valid steps of zero-padded sequences (modalities
                absent here are not padded): normalization is fitted on the valid steps only,
                and the padded steps stay exactly 0 after it.
            targets: Regression targets (n,) of a regression task (``y``: their sign classes).
        """
        self.domains, self.class_names = list(domains), list(class_names)
        self.num_classes = len(self.class_names)
        self._raw = {m: x[m] for m in self.modalities}
        self._y = y.long()
        self._target = None if targets is None else targets.float()
        self._lengths = {m: v.long() for m, v in (lengths or {}).items() if m in self.modalities}
        index = {d: i for i, d in enumerate(self.domains)}
        unknown = sorted(set(sample_domains) - set(index))
        if unknown:
            raise ValueError(f"samples belong to undeclared domains {unknown}")
        self._domain = torch.tensor([index[d] for d in sample_domains], dtype=torch.long)
        self._ready = not self.normalize
        self.statistics: dict[str, Standardization] = {}
        self.spread: dict[str, Tensor] = {}  # source-domain std per channel, for corruptions

    def input_shape(self, modality: str) -> tuple[int, ...]:
        return tuple(self._raw[modality].shape[1:])

    def domain_indices(self, domain: str) -> Tensor:
        """Positions of ``domain``'s samples in the stacked tensors."""
        self.check_domains([domain])
        return torch.nonzero(self._domain == self.domains.index(domain)).flatten()

    def fit_normalization(self, sources: Sequence[str]) -> None:
        """Standardize every domain with statistics of the ``sources`` samples only.

        Also records the sources' spread of every modality (:meth:`value_convention`), even
        with ``normalize=False``.
        """
        self.check_domains(sources)
        idx = torch.cat([self.domain_indices(d) for d in sources])
        self.spread, self.statistics = {}, {}
        for m, v in self._raw.items():
            mode, lengths = self.normalization[m], self._lengths.get(m)
            spread_mode = "channel" if mode == "channel" else "global"
            fitted = fit_standardization_streaming(v, idx, spread_mode, lengths)
            self.spread[m] = fitted.std[0]  # (...) broadcastable to one sample
            if self.normalize:
                self.statistics[m] = fitted if mode == spread_mode else (
                    fit_standardization_streaming(v, idx, mode, lengths))
        self._ready = True
        raise_problems(self._overflowing_inputs(), f"{type(self).__name__} after standardization")

    def normalize_as(self, fitted: DomainDataset) -> None:
        """Standardize with ``fitted``'s statistics (fitted on its run's sources), so samples of
        this dataset reach the model as that run's inputs did.

        Raises:
            ValueError: ``fitted`` is not fitted, normalizes differently, or its modalities or
                sample shapes differ (named).
        """
        if not isinstance(fitted, ArrayDomainDataset) or not fitted._ready:
            raise ValueError(f"{type(fitted).__name__} holds no fitted array normalization to "
                             f"apply to {type(self).__name__}")
        if fitted.normalize != self.normalize or set(fitted.modalities) != set(self.modalities):
            raise ValueError(f"cannot normalize {type(self).__name__} (modalities "
                             f"{sorted(self.modalities)}) as {type(fitted).__name__} (modalities "
                             f"{sorted(fitted.modalities)})")
        shapes = [m for m in self.modalities if fitted.input_shape(m) != self.input_shape(m)]
        if shapes:
            raise ValueError(f"sample shapes differ for {shapes}: "
                             + "; ".join(f"{m} {self.input_shape(m)} vs {fitted.input_shape(m)}"
                                         for m in shapes))
        self.statistics, self.spread = dict(fitted.statistics), dict(fitted.spread)
        self._ready = True

    def sample_name(self, index: int) -> str:
        """How messages name the sample at ``index`` of the stacked tensors."""
        return f"sample {index}"

    def _overflowing_inputs(self) -> list[str]:
        """One problem per modality whose standardized inputs hold NaN/Inf (finite float32 raw
        values can still overflow in ``(x - mean) / std``), naming the samples; read in chunks,
        like the statistics."""
        problems = []
        for m, v in self._raw.items():
            if m not in self.statistics:
                continue
            per_row = max(1, math.prod(v.shape[1:]) * 4)
            bad = [int(i) for rows in torch.arange(len(v)).split(max(1, CHUNK_BYTES // per_row))
                   for i in rows[~torch.isfinite(self.fetch_modality(m, rows)).flatten(1).all(1)]]
            if bad:
                names = ", ".join(self.sample_name(i) for i in bad[:20])
                problems.append(
                    f"{m}: {len(bad)} samples overflow float32 once standardized with the source "
                    f"domains' statistics ({names}{' ...' if len(bad) > 20 else ''}); rescale "
                    "these values")
        return problems

    def fetch(self, rows: Tensor) -> dict[str, Tensor]:
        """``{modality: (len(rows), ...)}``: the samples at positions ``rows``, standardized
        (once fitted), with the padded steps of padded sequences at exactly 0."""
        if not self._ready:
            raise RuntimeError(
                f"{type(self).__name__}: call fit_normalization(source_domains) before reading "
                "samples (statistics come from the source domains only), or build the dataset "
                "with normalize=False")
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)  # (k,): indexing copies
        return {m: self.fetch_modality(m, rows) for m in self._raw}

    def fetch_modality(self, modality: str, rows: Tensor) -> Tensor:
        """:meth:`fetch` of one modality: (len(rows), ...)."""
        batch = self._raw[modality][rows]  # a copy (advanced indexing): standardized in place
        stats = self.statistics.get(modality)
        if stats is not None and torch.result_type(batch, stats.mean) == batch.dtype:
            batch.sub_(stats.mean).div_(stats.std)  # = stats.apply(batch), one copy less
        elif stats is not None:
            batch = stats.apply(batch)
        if modality in self._lengths:
            batch = zero_padded_steps(batch, self._lengths[modality][rows])
        return batch

    def value_convention(self, modality: str) -> ValueConvention:
        """Corruptions work on the values before standardization (the dataset's own units),
        with additive magnitudes relative to the source domains' std (``spread``)."""
        if modality not in self.spread:
            raise RuntimeError(
                f"{type(self).__name__}: call fit_normalization(source_domains) before "
                "corrupting samples (corruption magnitudes are relative to the source domains' "
                "spread)")
        spread = self.spread[modality]
        kind = self.modality_kind(modality)
        if modality not in self.statistics:  # normalize=False: the samples are the values
            return ValueConvention(kind, spread=spread)
        stats = self.statistics[modality]
        return ValueConvention(kind, mean=stats.mean[0], std=stats.std[0], spread=spread)

    def domain_samples(self, domain: str) -> Dataset:
        """``domain``'s samples, read (and standardized) when fetched: splits and their sizes
        are available before :meth:`fit_normalization`, the samples only after it."""
        idx = self.domain_indices(domain)
        return self.samples_at(idx)

    def samples_at(self, idx: Tensor) -> IndexedSamples:
        """The samples at positions ``idx`` (with their regression targets, if any)."""
        target = None if self._target is None else self._target[idx]
        return IndexedSamples(self.fetch, idx, self._y[idx], target)

    def labels(self, domain: str) -> list[int]:
        return self._y[self.domain_indices(domain)].tolist()


