"""Robustness to corruptions (``--corruptions``): target accuracy under each (modality,
corruption, severity) of a plan (``docs/robustness.md``).

On the selected model, the target is evaluated once per spec of the plan
(:func:`merdg.evaluation.robustness.corruption_plan`: every named corruption of every modality
whose kind has it, at every ``--severities``), through a :class:`CorruptedSamples` view that
corrupts each sample as it is read. ``missing`` zero-fills the modality in the fusion, so its
accuracy is the missing-modality accuracy (``target_missing/<m>``, computed once with
``--eval-missing``). Columns: the mean corruption accuracy over every evaluated spec
(``missing`` counting once), its ratio to the clean target accuracy, the means per severity and
per modality, and each graded spec. The report adds the robustness table, the paired
differences of the mean corruption accuracy against the reference, and accuracy against
severity (``robustness.md``, ``robustness.png``).

The view: a :class:`CorruptedSamples` wraps a split (any dataset of ``(x, y)`` items: a
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

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.base import ValueConvention
from merdg.evaluation.corruptions import (
    CORRUPTIONS,
    MISSING,
    check_severity,
    corruption_names,
    get_corruption,
)
from merdg.evaluation.robustness import CorruptionSpec, corruption_plan, summarize_robustness
from merdg.evaluators.base import EVALUATORS, Column, Evaluator, Measurement, ResultView
from merdg.evaluators.missing import ZERO_FILLED
from merdg.hparams import seed_hash
from merdg.options import ALL, Settings, setting
from merdg.plotting import NO_MATPLOTLIB, finish_figure, matplotlib_available, pyplot, save_figure

__all__ = ["CorruptedSamples", "CorruptionSettings", "Corruptions", "SeverityMeans",
           "corrupted_view", "figure_severity_curves", "plot_severity_curves", "severity_curves",
           "severity_means"]

SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: sample seeds of one stream never meet
SEED_MOD = 2**63


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
        base: Items ``(x: {modality: Tensor}, y)`` (``(x, y, target)`` for regression).
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

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        pipeline = {b.spec.modality: b.function(i) for b in self.bound if b.in_pipeline}
        x, *label = self.base.corrupted_item(i, pipeline) if pipeline else self.base[i]
        x = dict(x)  # never modify the base's own dict
        for b in self.bound:
            if not b.in_pipeline:
                x[b.spec.modality] = b.apply(x[b.spec.modality], i)
        return (x, *label)  # (x, y), or (x, y, target) for regression


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




# --- the evaluator -------------------------------------------------------------------------

@dataclass
class CorruptionSettings(Settings):
    corruptions: list[str] | str = setting(
        help="evaluate the target under these corruptions (`merdg list corruptions`; a name "
        "applies to every modality whose kind has it), or 'all' of each modality's kind "
        "(docs/robustness.md)", flag="--corruptions", kind="list", all_word=True,
        metavar="NAME")
    severities: list[int] = setting(
        [1, 2, 3, 4, 5], help="severities of the graded corruptions (1 mild .. 5 severe; the "
        "mean corruption accuracy averages them, as ImageNet-C does)", flag="--severities",
        kind="ints", low=1, high=5, metavar="S")
    corruption_seed: int = setting(
        0, help="seed of the corruptions' random draws; keep it fixed so that every algorithm "
        "and seed is scored on the same corrupted samples", flag="--corruption-seed",
        kind="int", low=0)


ACC = Column("target_corruption_acc", "corrupted (mean)")
RELATIVE = Column("target_corruption_relative", "% of clean")
PER_SEVERITY = Column("target_corruption_severity", "severity", family=True)
PER_MODALITY = Column("target_corruption_modality", "corrupted", family=True)
EACH = Column("target_corruption", "corruption", family=True)  # members "<m>:<name>:<s>"
MAE = Column("target_corruption_mae", "corrupted MAE (mean)", "lower", False)  # regression


@EVALUATORS.register("corruptions")
class Corruptions(Evaluator):
    """Target accuracy under corruptions of each modality (``docs/robustness.md``)."""

    name = "corruptions"
    description = ("target accuracy under corruptions of each modality at several severities "
                   "(mean corruption accuracy, per severity, per modality)")
    Settings = CorruptionSettings
    columns = (ACC, RELATIVE, PER_SEVERITY, PER_MODALITY, EACH, ZERO_FILLED, MAE)

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        names = values["corruptions"]
        if names != ALL:
            known = {kind: corruption_names(kind) for kind in CORRUPTIONS}
            unknown = [n for n in names if not any(n in kinds for kinds in known.values())]
            if unknown:
                listing = "; ".join(f"{kind}: {', '.join(v)}" for kind, v in known.items())
                raise ValueError(f"--corruptions: unknown corruption(s) {unknown}; names by "
                                 f"modality kind: {listing}")
        return {**values, "corruptions": names, "severities": sorted(values["severities"])}

    def plan(self, run: Any) -> list[CorruptionSpec]:
        """The (modality, corruption, severity) evaluations on ``run``'s modalities.

        Raises:
            ValueError: A name none of the run's modalities accepts (one line listing the
                names each modality accepts).
        """
        kinds = {m: run.dataset.modality_kind(m) for m in run.modalities}
        try:
            return corruption_plan(kinds, self.settings.corruptions, self.settings.severities)
        except ValueError as err:
            raise ValueError(f"--corruptions: {err}") from None

    def check(self, run: Any) -> None:
        self.plan(run)

    def measure(self, context: Any) -> Measurement:
        start = time.perf_counter()
        specs = self.plan(context.run)
        clean = context.target_predictions().accuracy()
        regression = context.target_predictions().regression
        accuracies: dict[CorruptionSpec, float] = {}
        errors: dict[CorruptionSpec, float] = {}  # regression: the MAE of each
        for spec in specs:
            if spec.corruption == MISSING:  # the zero-filled missing-modality accuracy
                accuracies[spec] = context.missing_accuracy(spec.modality)
                if regression:
                    errors[spec] = _mae(context.predict(context.target_set,
                                                        zero=[spec.modality]))
                continue
            view = corrupted_view(context.dataset, context.target_set, spec,
                                  self.settings.corruption_seed)
            predictions = context.predict(view)
            accuracies[spec] = predictions.accuracy()
            if regression:
                errors[spec] = _mae(predictions)
        summary = summarize_robustness(clean, accuracies)
        columns: dict[str, float | None] = {ACC.name: summary["mean_corruption_acc"],
                                            RELATIVE.name: summary["relative"]}
        if regression:  # the mean over the evaluations, as the mean corruption accuracy
            columns[MAE.name] = float(np.mean(list(errors.values())))
        columns.update({PER_SEVERITY.key(s): v for s, v in summary["per_severity"].items()})
        columns.update({PER_MODALITY.key(m): v for m, v in summary["per_modality"].items()})
        nested: dict[str, dict[str, dict[str, float]]] = {}
        for spec, acc in accuracies.items():
            nested.setdefault(spec.modality, {}).setdefault(spec.corruption, {})[
                spec.severity_key] = acc
            key = (ZERO_FILLED.key(spec.modality) if spec.corruption == MISSING
                   else EACH.key(str(spec)))
            columns[key] = acc
        return Measurement(columns, {"corruptions": nested, "robustness": summary,
                                     "plan": [str(s) for s in specs],
                                     "time_s": time.perf_counter() - start})

    @classmethod
    def legacy_columns(cls, record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        target = record["target"]
        if "robustness" not in target:
            return {}
        summary = target["robustness"]
        out = {ACC.name: summary["mean_corruption_acc"], RELATIVE.name: summary["relative"]}
        out.update({PER_SEVERITY.key(s): v for s, v in summary["per_severity"].items()})
        out.update({PER_MODALITY.key(m): v for m, v in summary["per_modality"].items()})
        for m, per_name in target["corruptions"].items():
            for name, per_severity in per_name.items():
                for s, acc in per_severity.items():
                    key = ZERO_FILLED.key(m) if name == MISSING else EACH.key(f"{m}:{name}:{s}")
                    out[key] = acc
        return out

    # --- report ------------------------------------------------------------------------

    def _view(self, view: ResultView) -> ResultView | None:
        """The view with corruption results: at the report's rule, else at the last epoch (runs
        of earlier versions evaluated the last epoch only); None without any."""
        if view.has(ACC):
            return view
        last = view.at_rule("last")
        return last if last.has(ACC) else None

    def robustness_text(self, view: ResultView) -> str:
        """The robustness table with its title and the paired differences of the mean
        corruption accuracy ("" without corruption results)."""
        view = self._view(view)
        if view is None:
            return ""
        keys = [("target_acc", "clean"), (ACC.name, ACC.label), (RELATIVE.name, RELATIVE.label)]
        keys += [(PER_SEVERITY.key(s), f"severity {s}") for s in view.members(PER_SEVERITY)]
        keys += [(PER_MODALITY.key(m), f"{m} corrupted") for m in view.members(PER_MODALITY)]
        what = "Target accuracy (%)"
        if view.has(MAE):  # regression runs (accuracy: Acc-2)
            keys += [("target_mae", "clean MAE", False), (MAE.name, MAE.label, False)]
            what = "Target Acc-2 (%; the MAE columns as plain numbers)"
        text = (f"**{what} under corruptions (--corruptions), {view.spread_words} over "
                "replicates (targets averaged within a replicate); epochs: "
                f"{view.epochs_words}. `corrupted (mean)` averages every (modality, "
                "corruption, severity) evaluated, `missing` once; `% of clean` is that mean "
                "over the clean accuracy of the same run; `severity s` averages the graded "
                "corruptions at s.**\n\n" + view.average_tables(keys, "robustness"))
        paired = "\n".join(p for p in (view.paired(ACC, "mean corruption accuracy"),
                                       view.paired(MAE, "mean corruption MAE")) if p)
        return text + ("\n" + paired if paired else "")

    def files(self, view: ResultView, out_dir: Path) -> list[Path]:
        text = self.robustness_text(view)
        if not text:
            return []
        out = Path(out_dir)
        paths = [out / "robustness.md"]
        paths[0].write_text(text)
        figure = self.figure(self._view(view), out / "robustness.png")
        return paths + ([figure] if figure is not None else [])

    def console(self, view: ResultView) -> str:
        return self.robustness_text(view)

    def report(self, view: ResultView) -> list[str]:
        text = self.robustness_text(view)
        if not text:
            return []
        return [text, "![accuracy under corruptions](robustness.png)", ""]

    def figure(self, view: ResultView, path: Path) -> Path | None:
        """Accuracy against severity (:func:`plot_severity_curves` of the table's averages,
        with the table's means and their spread); None without a graded corruption or without
        matplotlib."""
        accuracy, clean = severity_curves(view)
        if not accuracy or not next(iter(accuracy.values())):
            return None
        title = (f"Target accuracy under corruptions (epochs: "
                 f"{view.epochs_words.split(' (')[0]}; targets, seeds averaged)")
        return plot_severity_curves(accuracy, clean, path, title, severity_means(view),
                                    view.error)


def _curve_labels(averages: Mapping[tuple[str, str, str], Any]) -> dict[tuple[str, str, str],
                                                                       str]:
    """A label per (table, modality set, algorithm): the algorithm, prefixed by the modality
    set and the table when there are several."""
    several_sets = len({mods for _, mods, _ in averages}) > 1
    several_tables = len({table for table, _, _ in averages}) > 1
    return {(table, mods, algo): " ".join(p for p in (table if several_tables else "",
                                                      mods if several_sets else "", algo) if p)
            for table, mods, algo in averages}


def _mae(predictions: Any) -> float:
    """The mean absolute error of a regression task's predictions."""
    return float(np.mean(np.abs(predictions.logits[:, 0] - predictions.targets)))


def severity_curves(view: ResultView
                    ) -> tuple[dict[str, dict[tuple[str, int], float]], dict[str, float]]:
    """Inputs of :func:`plot_severity_curves` from a result view.

    Returns:
        ``({label: {(corruption, severity): accuracy}}, {label: clean accuracy})``: each
        accuracy the ``avg`` cell's mean (targets averaged within a replicate, then over
        replicates), a corruption's value the mean over the modalities that have it (its name
        means each modality kind's corruption of that name, as on the command line). Labels
        are algorithms, prefixed by the modality set and the table when there are several;
        graded corruptions only (``missing`` has no severity), and only the (corruption,
        severity) pairs every label has.
    """
    members = [k for k in view.members(EACH)]
    if not members:
        return {}, {}
    averages = view.averages(["target_acc"] + [EACH.key(k) for k in members])
    labels = _curve_labels(averages)
    accuracy: dict[str, dict[tuple[str, int], float]] = {}
    clean: dict[str, float] = {}
    for key, cells in averages.items():
        per_pair: dict[tuple[str, int], list[float]] = defaultdict(list)
        for member, cell in zip(members, cells[1:]):
            _, name, severity = member.split(":")
            if cell is not None:
                per_pair[(name, int(severity))].append(cell.mean)
        if per_pair and cells[0] is not None:
            accuracy[labels[key]] = {pair: float(np.mean(v)) for pair, v in per_pair.items()}
            clean[labels[key]] = cells[0].mean
    shared = set.intersection(*(set(v) for v in accuracy.values())) if accuracy else set()
    accuracy = {label: {p: v for p, v in per.items() if p in shared}
                for label, per in accuracy.items()}
    return accuracy, clean


@dataclass(frozen=True)
class SeverityMeans:
    """The robustness table's means of one row (cells with ``mean``, ``std``, ``se``, ``n``).

    Attributes:
        clean: Clean target accuracy.
        per_severity: ``{severity: cell}``: the graded corruptions at that severity.
        overall: ``corrupted (mean)``: every (modality, corruption, severity), ``missing``
            included once.
    """

    clean: Any
    per_severity: Mapping[int, Any]
    overall: Any


def severity_means(view: ResultView) -> dict[str, SeverityMeans]:
    """``{label: SeverityMeans}``: the cells of the robustness table (``clean``, ``severity
    s``, ``corrupted (mean)``), labelled as :func:`severity_curves` labels its curves; rows
    lacking one of them are left out."""
    severities = sorted(int(s) for s in view.members(PER_SEVERITY))
    averages = view.averages(["target_acc", ACC.name]
                             + [PER_SEVERITY.key(str(s)) for s in severities])
    labels = _curve_labels(averages)
    out = {}
    for key, cells in averages.items():
        if all(c is not None for c in cells):
            out[labels[key]] = SeverityMeans(cells[0], dict(zip(severities, cells[2:])),
                                             cells[1])
    return out


# --- the figure ----------------------------------------------------------------------------

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
OFFSET = 0.07  # severity units between neighbouring curves, so that equal values stay visible


def _check_severity_input(accuracy: Mapping[str, Mapping[tuple[str, int], float]],
                          clean: Mapping[str, float]) -> tuple[list[str], list[int]]:
    """Corruptions and severities of the input; every algorithm must have every pair."""
    if not accuracy:
        raise ValueError("no algorithms to plot")
    ordered = [tuple(pair) for per_algo in accuracy.values() for pair in per_algo]
    pairs = set(ordered)
    for algo, per_algo in accuracy.items():
        missing = sorted(pairs - set(per_algo))
        if missing:
            raise ValueError(f"algorithm {algo!r} lacks (corruption, severity) {missing}")
        if algo not in clean:
            raise ValueError(f"algorithm {algo!r} has no clean accuracy (severity 0)")
    severities = sorted({s for _, s in pairs})
    if severities and severities[0] <= 0:
        raise ValueError(f"severities must be >= 1 (0 is the clean accuracy), got {severities}")
    return list(dict.fromkeys(c for c, _ in ordered)), severities


MEANS_PANEL = ("table means: severity s averages the graded corruptions at s; 'all' is the "
               "mean corruption accuracy, missing included")


def _spread(cell: Any, error: str) -> float:
    return 0.0 if cell.n < 2 else 100 * (cell.std if error == "std" else cell.se)


def _draw_means(ax, k: int, label: str, means: SeverityMeans, all_x: float, error: str,
                dx: float) -> None:
    """One row of the robustness table: clean (at severity 0) and per-severity means as a
    curve, the overall mean as a point at ``all_x``, each with its error bar."""
    severities = sorted(means.per_severity)
    cells = [means.clean, *(means.per_severity[s] for s in severities)]
    curve_x = [x + dx for x in (0, *severities)]
    ys = [100 * c.mean for c in cells]
    style = {"color": f"C{k % 10}", "marker": MARKERS[k % len(MARKERS)], "ms": 4}
    ax.plot(curve_x, ys, label=label, gid=f"{label}|mean", **style)
    spreads = [_spread(c, error) for c in cells]
    ax.vlines(curve_x, [y - e for y, e in zip(ys, spreads)],
              [y + e for y, e in zip(ys, spreads)], color=style["color"], lw=1,
              gid=f"{label}|mean|{error}")
    overall, spread = 100 * means.overall.mean, _spread(means.overall, error)
    ax.plot([all_x + dx], [overall], linestyle="none", gid=f"{label}|all", **style)
    ax.vlines([all_x + dx], [overall - spread], [overall + spread], color=style["color"],
              lw=1, gid=f"{label}|all|{error}")


def _error_words(means: Mapping[str, SeverityMeans], error: str) -> str:
    ns = sorted({c.n for m in means.values()
                 for c in (m.clean, m.overall, *m.per_severity.values())})
    if not ns:
        return ""
    if ns == [1]:
        return "table means of one run each (n = 1, no error bars)"
    seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]} to {ns[-1]}"
    words = "sample std" if error == "std" else "standard error"
    return f"error bars: ± {words} over n = {seeds} replicates"


def figure_severity_curves(accuracy: Mapping[str, Mapping[tuple[str, int], float]],
                           clean: Mapping[str, float], title: str = "",
                           means: Mapping[str, SeverityMeans] | None = None,
                           error: str = "std"):
    """Accuracy against corruption severity: one panel per graded corruption, and with
    ``means`` a panel of the robustness table's means with their error bars.

    Args:
        accuracy: ``{algorithm: {(corruption, severity): accuracy}}``, accuracies as fractions
            (means over seeds and targets), severities >= 1; panels follow the order in which
            corruptions first appear.
        clean: ``{algorithm: accuracy without corruption}``, drawn at severity 0 of every curve.
        title: Figure title (default: a description of the axes).
        means: ``{algorithm: SeverityMeans}`` (:func:`severity_means`): the table's clean,
            per-severity and overall means (``missing`` included), drawn with error bars in a
            last panel (which replaces the single corruption's panel when there is one).
        error: The error bars: ``"std"`` or ``"se"``, as the table.

    Returns:
        The figure. Each curve has its own marker, and curves are shifted by a small offset
        along the severity axis, so that equal values stay visible.

    Raises:
        ValueError: An algorithm lacks a (corruption, severity) pair another one has, or its
            clean accuracy; a severity below 1.
    """
    corruptions, severities = _check_severity_input(accuracy, clean)
    means = {a: m for a, m in (means or {}).items() if a in accuracy}
    panels = [] if means and len(corruptions) == 1 else list(corruptions)
    panels += [MEANS_PANEL] if means else []
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(4.2 * ncols + 2.5, 3.4 * nrows),
                                  squeeze=False, sharey=True, layout="constrained")
    xs = [0, *severities]
    algorithms = list(accuracy)
    for k, algo in enumerate(algorithms):
        dx = (k - (len(algorithms) - 1) / 2) * OFFSET
        style = {"color": f"C{k % 10}", "marker": MARKERS[k % len(MARKERS)], "ms": 4}
        for ax, panel in zip(axes.flat, panels):
            if panel == MEANS_PANEL:
                _draw_means(ax, k, algo, means[algo], xs[-1] + 1, error, dx)
                continue
            ys = [100 * clean[algo], *(100 * accuracy[algo][panel, s] for s in severities)]
            ax.plot([x + dx for x in xs], ys, label=algo, gid=f"{algo}|{panel}", **style)
    for ax, panel in zip(axes.flat, panels):
        ax.set_title(panel, fontsize=10)
        ticks = [*xs, xs[-1] + 1] if panel == MEANS_PANEL else xs
        ax.set_xticks(ticks, [*map(str, xs), "all"][:len(ticks)])
        ax.set_xlabel("severity (0 = clean)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    words = _error_words(means, error) if means else ""
    fig.suptitle("; ".join(p for p in (title or "Accuracy under corruptions of increasing "
                                       "severity", words) if p), fontsize=11)
    return finish_figure(fig)


def plot_severity_curves(accuracy: Mapping[str, Mapping[tuple[str, int], float]],
                         clean: Mapping[str, float], path: str | Path, title: str = "",
                         means: Mapping[str, SeverityMeans] | None = None,
                         error: str = "std") -> Path | None:
    """Write :func:`figure_severity_curves` to ``path`` (PNG); None without matplotlib."""
    if not matplotlib_available():
        print(NO_MATPLOTLIB)
        return None
    return save_figure(figure_severity_curves(accuracy, clean, title, means, error), path,
                       finish=False)
