"""The plan of a robustness evaluation and its summary, as pure functions.

- :func:`corruption_plan`: every (modality, corruption, severity) to evaluate, from the names
  and severities asked for and the kind of each modality;
- :func:`summarize_robustness`: mean corruption accuracy (per modality, corruption and
  severity) and its ratio to the clean accuracy.

The dataset view that applies a spec to the samples of a split is
:class:`merdg.evaluators.corruptions.CorruptedSamples`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from merdg.evaluation.corruptions import (
    MISSING,
    SEVERITIES,
    check_severity,
    corruption_names,
    get_corruption,
)

__all__ = ["CorruptionSpec", "corruption_plan", "parse_corruptions", "parse_severities",
           "summarize_robustness", "zero_filled"]


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
        raise ValueError(f"--corruptions: expected 'all' or NAME [NAME ...], got {text!r}")
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
                             f"integers in {SEVERITIES[0]}..{SEVERITIES[-1]} such as 1 3 5"
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
