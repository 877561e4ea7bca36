"""A dataset held as one in-memory tensor per modality, with source-only normalization.

The on-disk readers (UTD-MHAD, manifests) load every sample once, stack each modality into a
tensor of shape (n_samples, ...), and keep each sample's domain and label. Before training,
:meth:`ArrayDomainDataset.fit_normalization` computes standardization statistics from the
*source* domains only and applies them to every domain, target included, so the target's
statistics never reach the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.base import DomainDataset, TensorSamples
from merdg.datasets.preprocessing import Standardization, fit_standardization, raise_problems

__all__ = ["ArrayDomainDataset"]


class ArrayDomainDataset(DomainDataset):
    """Base of datasets whose samples fit in memory as tensors.

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
                    domains: Sequence[str], class_names: Sequence[str]) -> None:
        """Install the samples.

        Args:
            x: ``{modality: (n, ...)}`` float tensors, every loaded modality.
            y: Labels (n,).
            sample_domains: Each sample's domain name (n entries).
            domains: Domain names in their canonical order.
            class_names: Name of each label index.
        """
        self.domains, self.class_names = list(domains), list(class_names)
        self.num_classes = len(self.class_names)
        self._raw = {m: x[m] for m in self.modalities}
        self._y = y.long()
        index = {d: i for i, d in enumerate(self.domains)}
        unknown = sorted(set(sample_domains) - set(index))
        if unknown:
            raise ValueError(f"samples belong to undeclared domains {unknown}")
        self._domain = torch.tensor([index[d] for d in sample_domains], dtype=torch.long)
        self._x: dict[str, Tensor] | None = None if self.normalize else dict(self._raw)
        self.statistics: dict[str, Standardization] = {}

    def input_shape(self, modality: str) -> tuple[int, ...]:
        return tuple(self._raw[modality].shape[1:])

    def domain_indices(self, domain: str) -> Tensor:
        """Positions of ``domain``'s samples in the stacked tensors."""
        self.check_domains([domain])
        return torch.nonzero(self._domain == self.domains.index(domain)).flatten()

    def fit_normalization(self, sources: Sequence[str]) -> None:
        """Standardize every domain with statistics of the ``sources`` samples only."""
        if not self.normalize:
            return
        self.check_domains(sources)
        idx = torch.cat([self.domain_indices(d) for d in sources])
        self.statistics = {m: fit_standardization(v[idx], self.normalization[m])
                           for m, v in self._raw.items()}
        self._x = {m: self.statistics[m].apply(v) for m, v in self._raw.items()}
        raise_problems(self._non_finite_inputs(), f"{type(self).__name__} after standardization")

    def sample_name(self, index: int) -> str:
        """How messages name the sample at ``index`` of the stacked tensors."""
        return f"sample {index}"

    def _non_finite_inputs(self) -> list[str]:
        """One problem per modality whose standardized inputs hold NaN/Inf (finite float32 raw
        values can still overflow in ``(x - mean) / std``), naming the samples."""
        problems = []
        for m, v in (self._x or {}).items():
            bad = (~torch.isfinite(v)).flatten(1).any(1).nonzero().flatten().tolist()
            if bad:
                names = ", ".join(self.sample_name(i) for i in bad[:20])
                problems.append(
                    f"{m}: {len(bad)} samples overflow float32 once standardized with the source "
                    f"domains' statistics ({names}{' ...' if len(bad) > 20 else ''}); rescale "
                    "these values")
        return problems

    def domain_samples(self, domain: str) -> Dataset:
        if self._x is None:
            raise RuntimeError(
                f"{type(self).__name__}: call fit_normalization(source_domains) before reading "
                "samples (statistics come from the source domains only), or build the dataset "
                "with normalize=False")
        idx = self.domain_indices(domain)
        return TensorSamples({m: v[idx] for m, v in self._x.items()}, self._y[idx])

    def labels(self, domain: str) -> list[int]:
        return self._y[self.domain_indices(domain)].tolist()
