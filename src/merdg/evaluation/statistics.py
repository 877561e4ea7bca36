"""Aggregates over seeds, and paired differences between algorithms: is a gap in accuracy
beyond seed noise?

Every mean ± spread merdg reports (table cells, the ``avg`` column, timing, diagnostics) is one
:func:`aggregate`: mean, sample standard deviation (ddof=1; 0 for one value), standard error
(``std / sqrt(n)``) and n, over the finite values (a metric that is undefined for a run, None or
NaN, is left out and lowers n).

Two algorithms run on the same (target, seed) pairs share the target domain and the seed, so the
comparison pairs them: ``d_i = metric(algorithm, pair i) - metric(reference, pair i)`` over the
pairs both have (pairs present for one only are counted and left out). Two 95% confidence
intervals of the mean difference are given:

- paired t-interval: ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)`` (sd with ddof=1), assuming the
  differences are independent and roughly normal;
- paired bootstrap: the percentile interval of the mean over 10,000 resamples of the pairs with
  replacement (seeded, so reports are reproducible; Efron & Tibshirani, "An Introduction to the
  Bootstrap", 1993, Ch. 13).

The t-interval is the default of the tables and of the verdict: benchmarks have few pairs (3
targets x 3-5 seeds), and with few pairs the percentile bootstrap is too narrow (its spread is
the plug-in sd, ``sqrt((n-1)/n)`` of the sample sd, without the t quantile's widening), so it
would call more differences real than the data support. A difference is **beyond noise** when
the interval excludes 0 and **within noise** otherwise; fewer than 2 pairs give no interval.
Pairs of one (target, seed) across targets are treated as independent, which ignores that a
target's difficulty is shared by all its seeds (the interval is for the average over these
targets, not over new targets).

The t quantile is computed exactly (Abramowitz & Stegun, "Handbook of Mathematical Functions",
26.7.3-26.7.4: closed-form CDF of Student's t for integer degrees of freedom), so no SciPy is
needed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PairedDifference", "Summary", "aggregate", "bootstrap_interval",
           "describe_paired_differences",
           "paired_difference", "paired_differences", "paired_difference_markdown",
           "t_interval", "t_quantile"]

CONFIDENCE = 0.95
RESAMPLES = 10_000
CI_METHODS = ("t", "bootstrap")
DEFAULT_METHOD = "t"


# ---------------------------------------------------------------------------------------------
# Aggregates


@dataclass(frozen=True)
class Summary:
    """Mean and spread of some values.

    Attributes:
        mean: Their mean (NaN when there is none).
        std: Sample standard deviation (ddof=1); 0 for one value.
        se: Standard error of the mean, ``std / sqrt(n)`` (DomainBed's tables report it).
        n: How many values.
        std_population: Population standard deviation (ddof=0).
    """

    mean: float
    std: float
    se: float
    n: int
    std_population: float

    def spread(self, error: str = "std") -> float:
        """``"std"`` or ``"se"``."""
        if error not in ("std", "se"):
            raise ValueError(f"error must be 'std' or 'se', got {error!r}")
        return self.std if error == "std" else self.se


def aggregate(values: Iterable[float | None]) -> Summary:
    """Mean, std (ddof=1), standard error and n of the finite values (None and NaN are left
    out)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(arr)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0, math.nan)
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    return Summary(float(arr.mean()), std, std / math.sqrt(n), n, float(arr.std()))


# ---------------------------------------------------------------------------------------------
# Student's t


def _t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (A&S 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos = math.sin(theta), math.cos(theta)
    c2 = cos * cos
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 3) // 2 + 1):  # (2*4*..*2k) / (1*3*..*(2k+1)) cos^2k
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
            return 2.0 / math.pi * (theta + sin * cos * total)
        return 2.0 / math.pi * theta
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):  # (1*3*..*(2k-1)) / (2*4*..*2k) cos^2k
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return sin * total


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with integer ``df >= 1`` (bisection on the
    exact CDF, to ~1e-12)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df}")
    if probability == 0.5:
        return 0.0
    mass = abs(2.0 * probability - 1.0)  # P(|T| <= q)
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, int(df)) < mass:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, int(df)) < mass:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    q = 0.5 * (lo + hi)
    return q if probability > 0.5 else -q


# ---------------------------------------------------------------------------------------------
# Intervals of a mean difference


def _differences(values: Iterable[float]) -> np.ndarray:
    d = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if not np.isfinite(d).all():
        raise ValueError(f"{int((~np.isfinite(d)).sum())} differences are not finite")
    return d


def t_interval(differences: Iterable[float],
               confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Paired t-interval of the mean; ``(nan, nan)`` with fewer than 2 differences."""
    d = _differences(differences)
    if len(d) < 2:
        return math.nan, math.nan
    half = t_quantile((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def bootstrap_interval(differences: Iterable[float], confidence: float = CONFIDENCE,
                       resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean over ``resamples`` resamples of the differences with
    replacement (numpy ``default_rng(seed)``); ``(nan, nan)`` with fewer than 2."""
    d = _differences(differences)
    if len(d) < 2:
        return math.nan, math.nan
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# One comparison


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``algorithm - reference`` over matched pairs, with two confidence intervals.

    Attributes:
        group: What the comparison is within, e.g. ``("epic-kitchens", "audio+video")``.
        algorithm / reference: The compared algorithms.
        metric: The row key compared (e.g. ``target_acc``).
        n_pairs: Pairs present for both.
        only_algorithm / only_reference: Pairs present for one of them only (left out).
        mean: Mean difference (NaN without pairs).
        t_low / t_high: Paired t-interval.
        boot_low / boot_high: Paired bootstrap percentile interval.
        confidence: Level of both intervals.
    """

    group: tuple[str, ...]
    algorithm: str
    reference: str
    metric: str
    n_pairs: int
    only_algorithm: int
    only_reference: int
    mean: float
    t_low: float
    t_high: float
    boot_low: float
    boot_high: float
    confidence: float = CONFIDENCE

    def interval(self, method: str = DEFAULT_METHOD) -> tuple[float, float]:
        if method not in CI_METHODS:
            raise ValueError(f"unknown interval {method!r}; choose from {CI_METHODS}")
        return (self.t_low, self.t_high) if method == "t" else (self.boot_low, self.boot_high)

    def verdict(self, method: str = DEFAULT_METHOD) -> str:
        """``"beyond noise"`` (interval excludes 0), ``"within noise"``, or why there is none."""
        if self.n_pairs == 0:
            return "no matched pairs"
        low, high = self.interval(method)
        if math.isnan(low):
            return "too few pairs"
        return "beyond noise" if low > 0 or high < 0 else "within noise"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict()}


def paired_difference(algorithm_values: Mapping[Hashable, float],
                      reference_values: Mapping[Hashable, float], *, algorithm: str = "",
                      reference: str = "", metric: str = "", group: tuple[str, ...] = (),
                      confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                      seed: int = 0) -> PairedDifference:
    """Compare two ``{pair key: value}`` maps (e.g. keys ``(target, seed)``) on their common
    keys."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    common = sorted(set(algorithm_values) & set(reference_values), key=repr)
    d = _differences(float(algorithm_values[k]) - float(reference_values[k]) for k in common)
    t_low, t_high = t_interval(d, confidence)
    boot_low, boot_high = bootstrap_interval(d, confidence, resamples, seed)
    return PairedDifference(
        group=tuple(group), algorithm=algorithm, reference=reference, metric=metric,
        n_pairs=len(d), only_algorithm=len(set(algorithm_values) - set(reference_values)),
        only_reference=len(set(reference_values) - set(algorithm_values)),
        mean=float(d.mean()) if len(d) else math.nan, t_low=t_low, t_high=t_high,
        boot_low=boot_low, boot_high=boot_high, confidence=confidence)


# ---------------------------------------------------------------------------------------------
# Result rows


def _replicate(seed: Any) -> int | str:
    """A row's replicate key: its seed, or a label such as ``"search"`` (the chosen trial's
    search run in :func:`merdg.experiments.results.paired_rows`)."""
    return seed if isinstance(seed, str) else int(seed)


def _pair_values(rows: Iterable[Mapping[str, Any]], metric: str, selection: str | None,
                 group_keys: Sequence[str]) -> dict[tuple, dict[str, dict[tuple, float]]]:
    """``{group: {algorithm: {(target, seed): value}}}``; a pair seen twice is an error."""
    table: dict[tuple, dict[str, dict[tuple, float]]] = defaultdict(lambda: defaultdict(dict))
    where: dict[tuple, str] = {}
    for row in rows:
        if selection is not None and row.get("selection") != selection:
            continue
        if metric not in row or row[metric] is None:
            continue
        group = tuple(str(row.get(k, "")) for k in group_keys)
        pair = (str(row["target"]), _replicate(row["seed"]))
        key = (*group, row["algorithm"], *pair)
        if key in where:
            raise ValueError(f"two results for {row['algorithm']} on target {pair[0]} seed "
                             f"{pair[1]} ({', '.join(group)}): {where[key]} and "
                             f"{row.get('path', '?')}; keep one run per (target, seed)")
        where[key] = str(row.get("path", "?"))
        table[group][row["algorithm"]][pair] = float(row[metric])
    return table


def paired_differences(rows: Iterable[Mapping[str, Any]], metric: str = "target_acc",
                       reference: str = "ERM", selection: str | None = "source_val",
                       group_keys: Sequence[str] = ("dataset", "modalities"),
                       confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = 0) -> list[PairedDifference]:
    """Every algorithm against ``reference`` within each group, on the (target, seed) pairs.

    Args:
        rows: Result rows with keys ``algorithm``, ``target``, ``seed`` (an integer or a
            replicate label), ``metric``, the ``group_keys`` and (when ``selection`` is set)
            ``selection``. Rows of an experiment should come from
            :func:`merdg.experiments.results.paired_rows` (each task's chosen trial only,
            matched by replicate, within one (dataset, settings) table); raw rows of
            :func:`~merdg.experiments.results.load_rows` mix every hparam trial of a sweep.
        metric: The row key compared.
        reference: The algorithm every other one is compared with (``--reference``).
        selection: Keep rows of this selection rule only (None: no filter).
        group_keys: Row keys that must match for a comparison (dataset, modalities).

    Returns:
        One :class:`PairedDifference` per (group, algorithm other than the reference), sorted;
        a group without the reference gives entries with ``n_pairs == 0``.

    Raises:
        ValueError: The reference appears in no row (the message lists the algorithms), or
            one algorithm has two results for the same (target, seed) in a group.
    """
    table = _pair_values(rows, metric, selection, group_keys)
    algorithms = sorted({a for per_algo in table.values() for a in per_algo})
    if reference not in algorithms:
        raise ValueError(f"reference algorithm {reference!r} has no results for {metric}; "
                         f"algorithms present: {algorithms} (choose one with --reference)")
    out = []
    for group, per_algo in sorted(table.items()):
        for algo in sorted(a for a in per_algo if a != reference):
            out.append(paired_difference(per_algo[algo], per_algo.get(reference, {}),
                                         algorithm=algo, reference=reference, metric=metric,
                                         group=group, confidence=confidence,
                                         resamples=resamples, seed=seed))
    return out


def _pct(value: float, scale: float) -> str:
    return "-" if math.isnan(value) else f"{value * scale:+.2f}"


def paired_difference_markdown(results: Sequence[PairedDifference], scale: float = 100.0) -> str:
    """Markdown table: mean difference, t and bootstrap intervals, pairs, verdict (by the
    t-interval); values times ``scale`` (percentage points for accuracies)."""
    if not results:
        return ""
    level = f"{results[0].confidence:.0%}"
    lines = [f"| group | algorithm | reference | pairs | mean difference | {level} CI (t) | "
             f"{level} CI (bootstrap) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        unmatched = r.only_algorithm + r.only_reference
        pairs = f"{r.n_pairs}" + (f" ({unmatched} unmatched)" if unmatched else "")
        t_ci = f"[{_pct(r.t_low, scale)}, {_pct(r.t_high, scale)}]"
        boot_ci = f"[{_pct(r.boot_low, scale)}, {_pct(r.boot_high, scale)}]"
        lines.append(f"| {' '.join(r.group)} | {r.algorithm} | {r.reference} | {pairs} | "
                     f"{_pct(r.mean, scale)} | {t_ci} | {boot_ci} | {r.verdict()} |")
    return "\n".join(lines) + "\n"


def describe_paired_differences(results: Sequence[PairedDifference], scale: float = 100.0,
                                unit: str = "points", what: str | None = None,
                                pairs: str = "(target, seed)",
                                higher_better: bool = True) -> str:
    """The comparison in words: which differences are beyond noise, which are not.

    Args:
        results: From :func:`paired_differences`.
        scale / unit: Differences are multiplied by ``scale`` and called ``unit`` ("" for
            the metric's own units).
        what: The metric in words (default: its row key).
        pairs: What a pair is, in words.
        higher_better: A larger value is better (an accuracy); False for an error (MAE).
    """
    if not results:
        return "No algorithm to compare with the reference."
    first = results[0]
    lines = [f"Paired differences in {what or first.metric} against {first.reference} over "
             f"matched {pairs} pairs; a difference is beyond noise when its "
             f"{first.confidence:.0%} paired t-interval excludes 0."]
    for r in results:
        where = f" ({' '.join(r.group)})" if r.group else ""
        verdict = r.verdict()
        if verdict in ("no matched pairs", "too few pairs"):
            lines.append(f"- {r.algorithm}{where}: not compared, {verdict} with "
                         f"{r.reference} ({r.n_pairs}).")
            continue
        gain = r.mean if higher_better else -r.mean
        direction = "better" if gain > 0 else "worse" if gain < 0 else "equal"
        amount = f"{abs(r.mean) * scale:.2f}" + (f" {unit}" if unit else "")
        lines.append(f"- {r.algorithm}{where}: {amount} {direction} "
                     f"than {r.reference} on average over {r.n_pairs} pairs, "
                     f"CI [{_pct(r.t_low, scale)}, {_pct(r.t_high, scale)}]: {verdict}.")
        if r.only_algorithm or r.only_reference:
            lines.append(f"  ({r.only_algorithm} pairs of {r.algorithm} and "
                         f"{r.only_reference} of {r.reference} have no counterpart and are "
                         "left out.)")
    return "\n".join(lines) + "\n"
