"""Corrupted views of evaluation splits, and the plan of (modality, corruption, severity) runs.

A :class:`CorruptedSamples` wraps a split (any dataset of ``(x, y)`` items: a
:class:`~merdg.datasets.base.TensorSamples`, a subset, a clip dataset's part) and corrupts
each sample in ``__getitem__``, so the work happens in the DataLoader workers, in the same pass
that reads the sample; clean samples are neither copied nor modified. Datasets whose
convention says ``in_pipeline`` (EPIC-Kitchens, HAC) get the corruption passed into their
reading pipeline (``corrupted_item``), where the raw pixels and the waveform exist.

Determinism: sample ``i`` of a view is corrupted with a generator seeded from ``(seed,
modality, corruption, i)``, the same for every severity (so severities differ in strength, not
in their random draws) and independent of the DataLoader's workers and of the global random
state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.base import ValueConvention
from merdg.evaluation.corruptions import (
    MISSING,
    SEVERITIES,
    check_severity,
    corruption_names,
    get_corruption,
)
from merdg.hparams import seed_hash

__all__ = [
    "CorruptedSamples",
    "CorruptionSpec",
    "corrupted_view",
    "corruption_plan",
    "parse_corruptions",
    "parse_severities",
    "summarize_robustness",
    "zero_filled",
]

SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: sample seeds of one stream never meet
SEED_MOD = 2**63


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption of one modality at one severity.

    Attributes:
        modality: The modality corrupted.
        corruption: A corruption name of that modality's kind.
        severity: 1..5, or None for ungraded corruptions (``"missing"``).
    """

    modality: str
    corruption: str
    severity: int | None

    @property
    def severity_key(self) -> str:
        """The severity as a record key: ``"1"`` .. ``"5"``, or ``"-"`` when ungraded."""
        return "-" if self.severity is None else str(self.severity)

    def __str__(self) -> str:
        return f"{self.modality}:{self.corruption}:{self.severity_key}"


def parse_corruptions(text: str) -> list[str] | str:
    """``"all"`` or a comma list ``"a,b"`` (command-line value) -> ``"all"`` or the names.

    Raises:
        ValueError: An empty list or an empty name.
    """
    text = text.strip()
    if text == "all":
        return "all"
    names = [n.strip() for n in text.split(",")]
    if not text or any(not n for n in names):
        raise ValueError(f"--corruptions: expected 'all' or NAME[,NAME...], got {text!r}")
    return list(dict.fromkeys(names))


def parse_severities(text: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``.

    Raises:
        ValueError: A value that is not an integer in 1..5 (named in the message).
    """
    values = []
    for part in text.split(","):
        try:
            values.append(check_severity(int(part.strip())))
        except ValueError as err:
            raise ValueError(f"--severities: {part.strip()!r} is not a severity; expected "
                             f"integers in {SEVERITIES[0]}..{SEVERITIES[-1]} such as 1,3,5"
                             ) from err
    return sorted(set(values))


def corruption_plan(kinds: Mapping[str, str], corruptions: str | Sequence[str],
                    severities: Sequence[int] = SEVERITIES) -> list[CorruptionSpec]:
    """Every (modality, corruption, severity) to evaluate.

    Args:
        kinds: ``{modality: kind}`` of the run's modalities (``dataset.modality_kind``).
        corruptions: ``"all"`` (every corruption of every modality's kind) or names; a name
            applies to every modality whose kind has it, and must apply to at least one.
        severities: Severities of the graded corruptions (ungraded ones, ``"missing"``, are
            planned once with severity None).

    Returns:
        Specs ordered by modality (sorted), then corruption (as given; sorted for ``"all"``),
        then severity.

    Raises:
        ValueError: An invalid severity, no severity, or a name no modality's kind has (the
            message lists the names each modality accepts).
    """
    severities = sorted({check_severity(s) for s in severities})
    if not severities:
        raise ValueError("no severities given; expected some of 1..5")
    if isinstance(corruptions, str):
        if corruptions != "all":
            raise ValueError(f"corruptions must be 'all' or a list of names, got "
                             f"{corruptions!r} (parse_corruptions splits a comma list)")
        names = None
    else:
        names = list(corruptions)
    if names is not None:
        unknown = [n for n in names if not any(n in corruption_names(k) for k in kinds.values())]
        if unknown or not names:
            accepted = "; ".join(f"{m} ({k}): {', '.join(corruption_names(k))}"
                                 for m, k in sorted(kinds.items()))
            raise ValueError(f"unknown corruption(s) {unknown or names} for modalities "
                             f"{sorted(kinds)}; accepted names: {accepted}")
    plan = []
    for modality in sorted(kinds):
        kind = kinds[modality]
        available = corruption_names(kind)
        for name in available if names is None else [n for n in names if n in available]:
            if get_corruption(kind, name).graded:
                plan += [CorruptionSpec(modality, name, s) for s in severities]
            else:
                plan.append(CorruptionSpec(modality, name, None))
    return plan


def zero_filled(specs: CorruptionSpec | Sequence[CorruptionSpec]) -> list[str]:
    """Modalities an evaluation of ``specs`` must zero-fill in the fusion (``zero=`` of
    ``Algorithm.evaluate``): those declared missing, so that the fused accuracy under
    ``"missing"`` is merdg's missing-modality accuracy."""
    specs = [specs] if isinstance(specs, CorruptionSpec) else list(specs)
    return sorted({s.modality for s in specs if s.corruption == MISSING})


@dataclass(frozen=True)
class _Bound:
    """A spec resolved against its modality's convention."""

    spec: CorruptionSpec
    convention: ValueConvention
    stream: int  # base seed of this (seed, modality, corruption)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.stream + index * SEED_STRIDE) % SEED_MOD)

    def function(self, index: int) -> Callable[..., Tensor]:
        """``fn(values, **extra) -> values`` for sample ``index`` (one generator per call of
        this method: one per sample)."""
        corruption = get_corruption(self.convention.kind, self.spec.corruption)
        generator = self.generator(index)
        context = self.convention.context()
        severity = self.spec.severity

        def corrupt(values: Tensor, **extra: Any) -> Tensor:
            return corruption(values, severity, generator, **{**context, **extra})

        return corrupt

    @property
    def in_pipeline(self) -> bool:
        on_input = get_corruption(self.convention.kind, self.spec.corruption).on_input
        return self.convention.in_pipeline and not on_input

    def apply(self, sample: Tensor, index: int) -> Tensor:
        """Corrupt a finished network-input sample."""
        corrupt = self.function(index)
        if get_corruption(self.convention.kind, self.spec.corruption).on_input:
            return corrupt(sample)
        out = corrupt(self.convention.to_values(sample))
        return self.convention.to_sample(out, sample.dtype)


class CorruptedSamples(Dataset):
    """``base`` with ``corruptions`` applied to every sample in ``__getitem__``.

    Args:
        base: Items ``(x: {modality: Tensor}, y)``.
        corruptions: Specs, at most one per modality.
        conventions: ``{modality: ValueConvention}`` for the corrupted modalities.
        seed: Seed of the corruptions' randomness.

    Raises:
        ValueError: Two specs for one modality, a modality without convention, a corruption its
            kind does not have, or an invalid severity.
        TypeError: A convention asks for in-pipeline corruption and ``base`` cannot do it.
    """

    def __init__(self, base: Dataset, corruptions: Sequence[CorruptionSpec],
                 conventions: Mapping[str, ValueConvention], seed: int = 0) -> None:
        self.base, self.seed = base, int(seed)
        self.corruptions = list(corruptions)
        modalities = [s.modality for s in self.corruptions]
        repeated = sorted({m for m in modalities if modalities.count(m) > 1})
        if repeated:
            raise ValueError(f"at most one corruption per modality; {repeated} have several")
        self.bound = [self._bind(s, conventions) for s in self.corruptions]
        if any(b.in_pipeline for b in self.bound) and not hasattr(base, "corrupted_item"):
            raise TypeError(f"{type(base).__name__} cannot apply corruptions while reading "
                            "(no corrupted_item), which its dataset's convention requires")

    def _bind(self, spec: CorruptionSpec, conventions: Mapping[str, ValueConvention]) -> _Bound:
        if spec.modality not in conventions:
            raise ValueError(f"no value convention for modality {spec.modality!r}; have "
                             f"{sorted(conventions)}")
        convention = conventions[spec.modality]
        corruption = get_corruption(convention.kind, spec.corruption)  # names valid ones
        if corruption.graded or spec.severity is not None:
            check_severity(spec.severity)
        stream = seed_hash("corruption", self.seed, spec.modality, spec.corruption)
        return _Bound(spec, convention, stream)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], int]:
        pipeline = {b.spec.modality: b.function(i) for b in self.bound if b.in_pipeline}
        x, y = self.base.corrupted_item(i, pipeline) if pipeline else self.base[i]
        x = dict(x)  # never modify the base's own dict
        for b in self.bound:
            if not b.in_pipeline:
                x[b.spec.modality] = b.apply(x[b.spec.modality], i)
        return x, y


def corrupted_view(dataset: Any, data: Dataset,
                   corruptions: CorruptionSpec | Sequence[CorruptionSpec],
                   seed: int = 0) -> CorruptedSamples:
    """``data`` (a split of ``dataset``) seen through ``corruptions``.

    Args:
        dataset: The :class:`~merdg.datasets.base.DomainDataset` that ``data`` comes from
            (gives each modality's :class:`~merdg.datasets.base.ValueConvention`; for datasets
            that standardize, call its ``fit_normalization`` first, as training does).
        data: The split (e.g. ``dataset.split(target, "test", ...)``).
        corruptions: One spec or several (at most one per modality).
        seed: Seed of the corruptions' randomness (keep it fixed across algorithms and runs so
            that they are evaluated on the same corrupted samples).

    Raises:
        ValueError: A modality the dataset does not load (see also :class:`CorruptedSamples`).
    """
    specs = [corruptions] if isinstance(corruptions, CorruptionSpec) else list(corruptions)
    unknown = sorted({s.modality for s in specs} - set(dataset.modalities))
    if unknown:
        raise ValueError(f"cannot corrupt modalities {unknown}: the dataset loads "
                         f"{list(dataset.modalities)}")
    conventions = {s.modality: dataset.value_convention(s.modality) for s in specs}
    return CorruptedSamples(data, specs, conventions, seed)


def summarize_robustness(clean_acc: float,
                         accuracies: Mapping[CorruptionSpec, float]) -> dict[str, Any]:
    """Mean corruption accuracy (mCA) and its ratio to the clean accuracy.

    The mean is over every evaluated (modality, corruption, severity), an ungraded corruption
    counting once; ImageNet-C's relative figures (arXiv 1903.12261, section 3) normalize by a
    baseline model instead, which needs a reference run.

    Returns:
        ``{"clean": acc, "mean_corruption_acc": mCA, "relative": mCA / clean,
        "per_modality": {m: mean}, "per_corruption": {"m:name": mean over severities},
        "per_severity": {"1".."5": mean over graded corruptions}}``.
    """
    if not accuracies:
        raise ValueError("no corruption accuracies to summarize")
    values = list(accuracies.values())
    mean = sum(values) / len(values)

    def means(groups: dict[str, list[float]]) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in groups.items()}

    per_modality: dict[str, list[float]] = {}
    per_corruption: dict[str, list[float]] = {}
    per_severity: dict[str, list[float]] = {}
    for spec, acc in accuracies.items():
        per_modality.setdefault(spec.modality, []).append(acc)
        per_corruption.setdefault(f"{spec.modality}:{spec.corruption}", []).append(acc)
        if spec.severity is not None:
            per_severity.setdefault(str(spec.severity), []).append(acc)
    return {"clean": clean_acc, "mean_corruption_acc": mean,
            "relative": mean / clean_acc if clean_acc > 0 else float("nan"),
            "per_modality": means(per_modality), "per_corruption": means(per_corruption),
            "per_severity": dict(sorted(means(per_severity).items()))}
