"""Results: run records -> rows -> cells. The one result pipeline of ``merdg bench``, ``merdg
sweep``, ``merdg collect``, ``merdg demo`` and the diagnostics report; the files are written by
:mod:`merdg.experiments.report`.

1. **Rows** (:func:`load_rows`): one per (finished run, epoch-selection rule), flattened by
   :func:`merdg.run.records.run_rows` from the run's records and the evaluations of its saved
   weights (``evaluations/``; when a run holds several of one evaluator, the ones the
   experiment asked for, else the newest), with the run's ``settings`` (config identity beyond
   the table axes). A run copied twice under the root counts once (both directories are named);
   two different runs of one identity are refused. A metric that is undefined (NaN, e.g. AUROC
   when every prediction is right) is None in the row and empty in ``results.csv``.
2. **Cells** (:func:`build_tables`): runs are grouped into *tasks* (dataset, settings, modality
   set, algorithm, column); the column is the target, or ``source->target`` for single-source
   runs, whose tables are separate from the multi-source ones (their settings say
   ``"setting": "single-source"``). Each task's hparam trial is chosen on source validation
   (:func:`merdg.experiments.search.choose_trial`; one trial in a plain comparison), or, when
   the records hold the task's *inner runs* (runs trained without the task's target at all,
   each holding out one source domain: ``merdg sweep --selection lodo``), by
   leave-one-domain-out cross-validation (:func:`merdg.experiments.search.choose_trial_lodo`);
   the cell aggregates the metric over the chosen trial's runs (its search run plus its
   retrained seeds; :func:`merdg.evaluation.statistics.aggregate`: mean, std, standard error,
   n) and records the rule that chose the trial, which every table title names. Inner runs
   serve their task's choice and are not cells themselves.
3. The ``avg`` column averages the targets replicate by replicate, then aggregates over
   replicates. A replicate is identified by its seed, except that each task's search run (the
   chosen trial's run with the lowest seed, whose seed is the trial index in a fair search)
   counts as one replicate "search" shared by every target. Only the replicates every target
   has enter the average (so a missing or failed run lowers ``n`` instead of mixing seeds);
   the column is empty when a target has no run at all. :func:`average_cells` gives the
   ``avg`` of several metrics at once (and, where some columns lack a metric, the mean over
   those that have it).
4. **Paired differences** (:func:`paired_tables`): every algorithm against a reference on the
   (column, replicate) pairs of the main table's runs (:mod:`merdg.evaluation.statistics`).

Runs whose settings differ beyond the table axes (hparams overrides, dataset options, fixed
split seed, ...) go to separate tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merdg.evaluation.statistics import (
    PairedDifference,
    aggregate,
    describe_paired_differences,
    paired_difference_markdown,
    paired_differences,
)
from merdg.experiments.search import choose_trial, choose_trial_lodo, lodo_scores, search_runs
from merdg.run.config import config_identity
from merdg.run.directory import RunDir
from merdg.run.records import choose_evaluations, run_rows
from merdg.run.selection import SELECTION_RULES

__all__ = ["Cell", "PairedTable", "Table", "average_cells", "build_tables", "chosen_runs",
           "column_of", "has_search", "load_rows", "lodo_rows", "paired_rows", "paired_tables",
           "setting_label", "settings_of", "split_inner_rows", "table_order", "table_targets",
           "time_cells", "trial_rules_of"]

log = logging.getLogger(__name__)

# config entries that are table axes or replicate indices, not settings
AXES = ("dataset", "algorithm", "modalities", "target", "seed", "hparams_seed", "split_seed")
SINGLE_SOURCE = "single-source"


# --- rows ----------------------------------------------------------------------------------

def is_single_source(config: Mapping[str, Any]) -> bool:
    """Whether a run's config names exactly one source domain."""
    return len(config.get("sources") or []) == 1


def settings_of(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a run's settings beyond the table axes; a single-source run's source
    is a table axis (its column), replaced by ``"setting": "single-source"``."""
    settings = {k: v for k, v in config_identity(config).items() if k not in AXES}
    if config.get("split_seed") is not None:
        settings["split_seed"] = config["split_seed"]
    if is_single_source(config):
        del settings["sources"]
        settings["setting"] = SINGLE_SOURCE
    return json.dumps(settings, sort_keys=True)


def setting_label(settings: str) -> tuple[str, str]:
    """``(label, rest)`` of a table's settings: a readable label of the setting (``""`` for
    multi-source closed-set, else e.g. ``"single-source, open-set"``) and the JSON of the
    other settings (``""`` when there are none)."""
    parsed = json.loads(settings) if settings else {}
    words = []
    if parsed.pop("setting", None) == SINGLE_SOURCE:
        words.append("single-source, source->target")
    if parsed.pop("open_set", False):
        known = parsed.pop("known_classes", None)
        words.append("open-set" + (f", known classes {','.join(known)}" if known else ""))
    return ", ".join(words), json.dumps(parsed, sort_keys=True) if parsed else ""


def column_of(row: Mapping[str, Any]) -> str:
    """A row's table column: its target, or ``source->target`` for a single-source run."""
    if "column" in row:
        return row["column"]
    if row.get("setting") == "single":
        return f"{row['sources']}->{row['target']}"
    return row["target"]


def _records_digest(records: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def load_rows(root: str | Path, wanted: Mapping[str, Mapping[str, Any]] | None = None
              ) -> list[dict[str, Any]]:
    """One row per (finished run under ``root``, selection rule), with the run's
    ``settings``.

    Args:
        root: A directory searched recursively for finished runs.
        wanted: ``{evaluator: canonical settings}`` whose evaluations the rows report when a
            run holds several (:func:`merdg.evaluators.wanted_settings`); others: the newest.

    Raises:
        ValueError: A record or evaluation that is not merdg's, or two different runs of one
            identity (naming both directories).
    """
    rows, seen, ambiguous = [], {}, set()
    for run_dir in RunDir.finished_under(root):
        records = run_dir.read_records()
        if not records:
            continue
        try:
            config = records[0]["run"]["config"]
            identity = json.dumps({"identity": config_identity(config),
                                   "sources": records[0]["run"].get("sources")},
                                  sort_keys=True)
            digest = _records_digest(records)
            if identity in seen:
                first, first_digest = seen[identity]
                if first_digest != digest:
                    raise ValueError(f"{first} and {run_dir.path} hold different runs of the "
                                     "same config (algorithm, sources, target, seed, hparams "
                                     "seed and settings); keep one of them under "
                                     f"{root}")
                warnings.warn(f"{run_dir.path} is a copy of the run in {first}; counted once",
                              stacklevel=2)
                continue
            seen[identity] = (run_dir.path, digest)
            chosen, unclear = choose_evaluations(run_dir.read_evaluations(), wanted)
            ambiguous.update(unclear)
            extra = {"settings": settings_of(config)}
            for row in run_rows(records, chosen, str(run_dir.path)):
                if "left_out" in row:  # the settings of the task it may serve
                    extra["outer_settings"] = settings_of({**config, "sources": None})
                rows.append({**row, **extra})
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f"{run_dir.records_file}: not a merdg epoch record (missing or "
                             f"malformed entry {err}); move the directory out of {root}, or "
                             "rerun it") from err
    if ambiguous:
        warnings.warn(f"some runs hold several {', '.join(sorted(ambiguous))} evaluations with "
                      "different settings; the newest of each is reported (give the evaluator "
                      "options to `merdg collect` to choose)", stacklevel=2)
    return rows


# --- cells ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One table cell: the aggregate of a metric over runs (accuracies as fractions).

    Attributes:
        mean / std / se / n / std_population: :func:`merdg.evaluation.statistics.aggregate`.
        trial: The chosen hparams_seed (None for the average column).
        seeds: The runs' seeds (the replicates' for the average column).
        rule: What chose the trial (:data:`merdg.experiments.search.TRIAL_RULES`).
    """

    mean: float
    std: float
    se: float
    n: int
    std_population: float
    trial: int | None
    seeds: tuple[Any, ...]
    rule: str | None = None


Table = dict[tuple[str, str], dict[str, Cell]]  # (modalities, algorithm) -> column -> cell
TaskKey = tuple[str, str, str, str, str]  # dataset, settings, modalities, algorithm, column


def _cell(values: Sequence[float], trial: int | None, seeds: Sequence[Any],
          rule: str | None = None) -> Cell:
    s = aggregate(values)
    return Cell(s.mean, s.std, s.se, s.n, s.std_population, trial, tuple(seeds), rule)


def _task_key(row: dict[str, Any]) -> TaskKey:
    return (row["dataset"], row.get("settings", ""), row["modalities"], row["algorithm"],
            column_of(row))


def _inner_key(row: dict[str, Any]) -> TaskKey | None:
    """The task an inner run would serve (its left-out domain is the task's target)."""
    if "left_out" not in row:
        return None
    return (row["dataset"], row.get("outer_settings", ""), row["modalities"], row["algorithm"],
            row["left_out"])


def split_inner_rows(rows: Sequence[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], dict[TaskKey, list[dict[str, Any]]]]:
    """``(rows of table cells, {task: its inner runs' rows})``: a run that left one domain out
    entirely is an inner run of the task whose target that domain is, when that task has runs
    of its own; otherwise it is a cell of its own (e.g. a ``merdg train --source ...`` run)."""
    own = {_task_key(r) for r in rows if "left_out" not in r}
    cells, inner = [], defaultdict(list)
    for row in rows:
        key = _inner_key(row)
        if key is not None and key in own:
            inner[key].append(row)
        # a single-source run is a cell of its own table even when it also serves as an inner
        # run (on three domains, holding one source out of two leaves a single-source run)
        if key is None or key not in own or row.get("setting") == "single":
            cells.append(row)
    return cells, dict(inner)


def _choices(rows: Sequence[dict[str, Any]]) -> dict[TaskKey, tuple[int, str]]:
    """``{task: (chosen trial, rule)}``: leave-one-domain-out when the task has inner runs,
    else source validation. A task whose inner runs score no trial yet is left out, with a
    warning."""
    cells, inner = split_inner_rows(rows)
    search: dict[TaskKey, list[dict]] = defaultdict(list)
    for row in cells:
        if row["selection"] == "source_val":
            search[_task_key(row)].append(row)
    out = {}
    for key in sorted(search):
        if key not in inner:
            out[key] = (choose_trial(search[key]), "source_val")
            continue
        held_out = json.loads(search[key][0]["source_domains"])
        trial = choose_trial_lodo([r for r in inner[key] if r["selection"] == "source_val"],
                                  held_out)
        if trial is None:
            warnings.warn(f"{'/'.join(key[2:])}: its inner runs score no trial (every trial "
                          f"lacks a finished run for some of {held_out}); left out of the "
                          "tables", stacklevel=3)
            continue
        out[key] = (trial, "lodo")
    return out


def chosen_runs(rows: Sequence[dict[str, Any]], rule: str = "source_val"
                ) -> dict[TaskKey, tuple[int, list[dict[str, Any]]]]:
    """Per task: the chosen trial and its rows under ``rule``, sorted by seed."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {list(SELECTION_RULES)}")
    report: dict[TaskKey, list[dict]] = defaultdict(list)
    for row in split_inner_rows(rows)[0]:
        if row["selection"] == rule:
            report[_task_key(row)].append(row)
    return {key: (trial, sorted((r for r in report[key] if r["hparams_seed"] == trial),
                                key=lambda r: r["seed"]))
            for key, (trial, _) in _choices(rows).items()}


def trial_rules_of(table: Table) -> list[str]:
    """The rules that chose the trials of a table's cells (keys of
    :data:`merdg.experiments.search.TRIAL_RULES`), sorted."""
    return sorted({c.rule for cells in table.values() for c in cells.values() if c.rule})


def _replicates(runs: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """``{replicate key: row}``: "search" for the lowest-seed run, else the seed."""
    first = search_runs(runs)
    lowest = {id(r) for r in first.values()}
    return {("search" if id(r) in lowest else r["seed"]): r for r in runs}


def build_tables(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                 metric: str = "target_acc") -> dict[tuple[str, str], Table]:
    """``{(dataset, settings): {(modalities, algorithm): {target | "avg": Cell}}}``.

    Args:
        rows: From :func:`load_rows`.
        rule: Epoch selection rule within each run for the reported ``metric`` (trials are
            always chosen on source validation).
        metric: Row field to report (``target_acc``, ``val_acc``, ``target_probe_acc/m0``...).
            Runs without it are left out.
    """
    tables: dict[tuple[str, str], Table] = defaultdict(dict)
    per_row: dict[tuple, dict[str, dict[Any, float]]] = defaultdict(dict)
    rules = {key: trial_rule for key, (_, trial_rule) in _choices(rows).items()}
    for key, (trial, runs) in chosen_runs(rows, rule).items():
        dataset, settings, mods, algo, target = key
        runs = [r for r in runs if r.get(metric) is not None]
        if not runs:
            continue
        tables[(dataset, settings)].setdefault((mods, algo), {})[target] = _cell(
            [r[metric] for r in runs], trial, [r["seed"] for r in runs], rules[key])
        per_row[(dataset, settings, mods, algo)][target] = {
            k: r[metric] for k, r in _replicates(runs).items()}
    for (dataset, settings, mods, algo), per_target in per_row.items():
        every_target = set(table_targets(tables[(dataset, settings)])) - {"avg"}
        avg = _average_cell(per_target) if set(per_target) == every_target else None
        if avg is not None:
            tables[(dataset, settings)][(mods, algo)]["avg"] = avg
    return dict(tables)


def _average_cell(per_target: dict[str, dict[Any, float]]) -> Cell | None:
    """Mean over targets within each shared replicate, then the aggregate over replicates."""
    shared = set.intersection(*(set(v) for v in per_target.values()))
    if not shared:
        return None
    keys = sorted(shared, key=lambda k: (k != "search", str(k)))
    values = [float(np.mean([per_target[t][k] for t in sorted(per_target)])) for k in keys]
    seeds = [k for k in keys if k != "search"]
    return _cell(values, None, seeds)


def _column_order(column: str) -> tuple[str, str]:
    """Targets sorted by name; ``source->target`` pairs by target, then source."""
    source, _, target = column.rpartition("->")
    return target, source


def table_targets(table: Table) -> list[str]:
    """The table's columns: targets (or ``source->target`` pairs, grouped by target) in sorted
    order, then ``avg``."""
    columns = {t for cells in table.values() for t in cells if t != "avg"}
    return sorted(columns, key=_column_order) + ["avg"]


def table_order(key: tuple[str, str]) -> tuple[str, str, str]:
    """Sort key of ``(dataset, settings)`` tables: by dataset, multi-source closed-set first,
    then by setting label."""
    label, _ = setting_label(key[1])
    return key[0], label, key[1]


def has_search(rows: Iterable[dict[str, Any]]) -> bool:
    """Whether some task has runs of several hparam trials, or inner runs (tables then name
    the trial)."""
    cells, inner = split_inner_rows(list(rows))
    trials: dict[TaskKey, set[int]] = defaultdict(set)
    for row in cells:
        trials[_task_key(row)].add(row["hparams_seed"])
    return bool(inner) or any(len(t) > 1 for t in trials.values())


def average_cells(rows: Sequence[dict[str, Any]], metrics: Sequence[str],
                  rule: str = "source_val") -> dict[tuple[str, str], dict[tuple[str, str],
                                                                          list[Cell | None]]]:
    """``{(dataset, settings): {(modalities, algorithm): [one cell per metric]}}``: each the
    ``avg`` cell of :func:`build_tables` (targets averaged within a replicate, then over
    replicates), or, when some of the table's columns lack the metric (undefined, e.g. AUROC
    with no wrong prediction), the mean over the columns that have it, with ``n`` = how many
    columns have it and ``seeds`` = ``("k of n columns",)``; None when no column has it."""
    main = build_tables(rows, rule, "target_acc")
    per_metric = [build_tables(rows, rule, metric) for metric in metrics]
    out: dict[tuple[str, str], dict[tuple[str, str], list[Cell | None]]] = {}
    for key in sorted({k for tables in per_metric for k in tables}, key=table_order):
        columns = [c for c in table_targets(main.get(key, {})) if c != "avg"]
        keys = sorted({r for tables in per_metric for r in tables.get(key, {})})
        out[key] = {row: [_average_or_partial(tables.get(key, {}).get(row, {}), columns)
                          for tables in per_metric] for row in keys}
    return out


def _average_or_partial(cells: Mapping[str, Cell], columns: Sequence[str]) -> Cell | None:
    # the metric's own table lacks the columns where no run has it: its "avg" is an average
    # over every column only when it has them all
    if "avg" in cells and all(c in cells for c in columns):
        return cells["avg"]
    present = [cells[c].mean for c in columns if c in cells]
    if not present:
        return None
    s = aggregate(present)
    return Cell(s.mean, 0.0, 0.0, len(present), 0.0, None,
                (f"{len(present)} of {len(columns)} columns",))


def time_cells(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    """``{(modalities, algorithm): aggregate of the wall time of one run}`` (seconds)."""
    times: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if "train_time_s" in r:
            times[(r["modalities"], r["algorithm"])][r["path"]] = r["train_time_s"]
    return {key: _cell(list(per_run.values()), None, ()) for key, per_run in
            sorted(times.items())}


def lodo_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task's leave-one-domain-out score per trial (mean accuracy of the inner runs on
    the source they held out) and whether it was chosen; [] without inner runs."""
    cells, inner = split_inner_rows(rows)
    sources = {_task_key(r): json.loads(r["source_domains"]) for r in cells}
    out = []
    for key, runs in sorted(inner.items()):
        held_out = sources[key]
        scored = [r for r in runs if r["selection"] == "source_val"]
        best = choose_trial_lodo(scored, held_out)
        for trial, score in lodo_scores(scored, held_out).items():
            out.append({"dataset": key[0], "modalities": key[2], "algorithm": key[3],
                        "target": key[4], "trial": trial, "held_out": held_out,
                        "score": score, "chosen": trial == best})
    return out



# --- paired differences ---------------------------------------------------------------------

def paired_rows(rows: Sequence[dict[str, Any]], metric: str = "target_acc",
                rule: str = "source_val") -> list[dict[str, Any]]:
    """The rows the paired comparison uses: each task's chosen-trial runs (those of the main
    table, :func:`chosen_runs`), with ``target`` = the table column and ``seed`` = the
    replicate (``"search"`` for the chosen trial's lowest-seed run, else the seed, as the
    ``avg`` column pairs them)."""
    out = []
    for key, (_, runs) in chosen_runs(rows, rule).items():
        dataset, settings, mods, algo, column = key
        for replicate, row in _replicates(runs).items():
            if row.get(metric) is None:
                continue
            out.append({"dataset": dataset, "settings": settings, "modalities": mods,
                        "algorithm": algo, "target": column, "seed": replicate,
                        metric: row[metric], "path": row["path"]})
    return out


@dataclass(frozen=True)
class PairedTable:
    """The paired comparison of one (dataset, settings) table.

    Attributes:
        key: ``(dataset, settings)``.
        results: One :class:`PairedDifference` per (modality set, algorithm other than the
            reference); empty when ``note`` says why there is none.
        note: One line when there is no comparison (the reference has no runs here).
    """

    key: tuple[str, str]
    results: tuple[PairedDifference, ...]
    note: str = ""

    def markdown(self, scale: float = 100.0) -> str:
        return (self.note + "\n" if self.note
                else paired_difference_markdown(self.results, scale=scale))

    def words(self, what: str | None = None, scale: float = 100.0,
              higher_better: bool = True) -> str:
        """The comparison in words (``what``: the metric in words; differences times
        ``scale``, in points for 100, else in the metric's units)."""
        if self.note:
            return self.note + "\n"
        return describe_paired_differences(self.results, scale=scale, what=what,
                                           pairs="(column, seed)",
                                           unit="points" if scale == 100.0 else "",
                                           higher_better=higher_better)


def paired_tables(rows: Sequence[dict[str, Any]], reference: str = "ERM",
                  metric: str = "target_acc", rule: str = "source_val") -> list[PairedTable]:
    """Every algorithm against ``reference`` within each modality set of each (dataset,
    settings) table, over the (column, replicate) pairs of the main table's runs
    (:func:`paired_rows`; 95% paired t- and bootstrap intervals,
    :func:`merdg.evaluation.statistics.paired_differences`)."""
    per_table: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in paired_rows(rows, metric, rule):
        per_table[(row["dataset"], row["settings"])].append(row)
    out = []
    for key, table_rows in sorted(per_table.items(), key=lambda kv: table_order(kv[0])):
        if reference not in {r["algorithm"] for r in table_rows}:
            out.append(PairedTable(key, (), f"No paired differences here: the reference "
                                   f"algorithm {reference} has no runs in this table (choose "
                                   "one with --reference)."))
            continue
        results = paired_differences(table_rows, metric, reference, selection=None,
                                     group_keys=("modalities",))
        out.append(PairedTable(key, tuple(results)))
    return out
