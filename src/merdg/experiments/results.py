"""Results: run records -> rows -> cells -> markdown, LaTeX, CSV and plots.

This is the one result pipeline: ``merdg bench``, ``merdg sweep``, ``merdg collect``, ``merdg
demo`` and the diagnostics report all build their tables here, from the records alone (every
finished run's ``records.jsonl``), so tables can be rebuilt from copied records and ``merdg
collect DIR`` prints exactly the tables the command that wrote ``DIR`` printed.

1. **Rows** (:func:`load_rows`): one per (finished run, epoch-selection rule), with the run's
   accuracies, selective-prediction metrics (``aurc_msp``, ``auroc_energy``, ``ece``, ...) and
   open-set metrics (``h_score``, ``known_acc``, ``unknown_acc``) at the selected epoch, its
   ``sources`` and ``setting`` (``multi`` or ``single``) and its ``settings`` (config identity
   beyond the axes). A metric that is undefined (NaN, e.g. AUROC when every prediction is right)
   is None in the row and empty in ``results.csv``.
2. **Cells** (:func:`build_tables`): runs are grouped into *tasks* (dataset, settings, modality
   set, algorithm, column); the column is the target, or ``source->target`` for single-source
   runs, whose tables are separate from the multi-source ones (their settings say
   ``"setting": "single-source"``). Each task's hparam trial is chosen on source validation
   (:func:`merdg.experiments.search.choose_trial`; one trial in a plain comparison), or, when
   the records hold the task's *inner runs* (runs trained without the task's target at all,
   each holding out one source domain: ``merdg sweep --selection lodo``), by
   leave-one-domain-out cross-validation (:func:`merdg.experiments.search.choose_trial_lodo`);
   the cell holds mean, sample std (ddof=1) and population std of the metric over the chosen
   trial's runs (its search run plus its retrained seeds), and the rule that chose the trial,
   which every table title names. Inner runs serve their task's choice and are not cells
   themselves (:func:`lodo_table` lists their scores).
3. The ``avg`` column averages the targets replicate by replicate, then takes mean and std over
   replicates. A replicate is identified by its seed, except that each task's search run (the
   chosen trial's run with the lowest seed, whose seed is the trial index in a fair search)
   counts as one replicate "search" shared by every target. Only the replicates every target
   has enter the average (so a missing or failed run lowers ``n`` instead of mixing seeds);
   the column is empty when a target has no run at all.
4. **Views**: :func:`markdown_table`, :func:`latex_table`, :func:`cells_csv`,
   :func:`rows_to_csv`, :func:`probe_table`, :func:`missing_modality_table`,
   :func:`time_table`, :func:`plot_accuracy`, :func:`average_tables` (selective prediction,
   open set), :func:`paired_tables` (paired differences against a reference algorithm,
   :mod:`merdg.evaluation.statistics`, on the same chosen runs as the main table),
   :func:`robustness_table` and :func:`plot_robustness`.

Row columns of the corruption evaluation (runs with ``--corruptions``; accuracies as fractions,
at the epochs that evaluated them): ``target_corruption_acc`` (mean corruption accuracy over
every evaluated (modality, corruption, severity), ``missing`` counted once),
``target_corruption_relative`` (that mean divided by the run's clean target accuracy),
``target_corruption_severity/<s>`` (mean over the graded corruptions at severity ``s``),
``target_corruption_modality/<m>`` (mean over modality ``m``'s evaluations) and
``target_corruption/<m>:<corruption>:<s>`` (one evaluation; ``s`` is ``-`` for ``missing``).

Runs whose settings differ beyond the table axes (hparams overrides, dataset options, fixed
split seed, ...) go to separate tables.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merdg.evaluation.chance import near_chance_probes
from merdg.evaluation.statistics import (
    PairedDifference,
    describe_paired_differences,
    paired_difference_markdown,
    paired_differences,
)
from merdg.experiments.search import (
    TRIAL_RULES,
    choose_trial,
    choose_trial_lodo,
    lodo_scores,
    search_runs,
)
from merdg.run.config import config_identity
from merdg.run.directory import RunDir
from merdg.run.selection import SELECTION_RULES, select_epoch

__all__ = ["CORRUPTION_ACC", "CORRUPTION_RELATIVE", "OPEN_SET_METRICS", "SELECTIVE_METRICS",
           "Cell", "Table", "average_tables", "build_tables", "cells_csv", "column_of",
           "latex_table", "load_rows", "lodo_table", "markdown_table", "missing_modality_table",
           "paired_rows",
           "paired_tables", "plot_accuracy", "plot_robustness", "probe_table", "robustness_rule",
           "robustness_table", "rows_to_csv", "run_rows", "setting_label", "severity_curves",
           "table_order", "table_title", "time_table", "trial_rules_of"]

# config entries that are table axes or replicate indices, not settings
AXES = ("dataset", "algorithm", "modalities", "target", "seed", "hparams_seed", "split_seed")
SELECTIVE_METRICS = ("aurc_msp", "aurc_energy", "auroc_msp", "auroc_energy", "fpr95_msp",
                     "fpr95_energy", "ece")
OPEN_SET_METRICS = ("h_score", "known_acc", "unknown_acc", "open_set_threshold")
ORACLE_METRICS = ("h_score", "known_acc", "unknown_acc")
SINGLE_SOURCE = "single-source"
# row columns of the corruption evaluation (module docstring)
CORRUPTION_ACC = "target_corruption_acc"
CORRUPTION_RELATIVE = "target_corruption_relative"
CORRUPTION_SEVERITY = "target_corruption_severity/"
CORRUPTION_MODALITY = "target_corruption_modality/"
CORRUPTION_EACH = "target_corruption/"


# --- rows ----------------------------------------------------------------------------------

def is_single_source(config: dict[str, Any]) -> bool:
    """Whether a run's config names exactly one source domain."""
    return len(config.get("sources") or []) == 1


def settings_of(config: dict[str, Any]) -> str:
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


def column_of(row: dict[str, Any]) -> str:
    """A row's table column: its target, or ``source->target`` for a single-source run."""
    if row.get("setting") == "single":
        return f"{row['sources']}->{row['target']}"
    return row["target"]


def run_rows(records: Sequence[dict[str, Any]], path: str = "") -> list[dict[str, Any]]:
    """One flat row per selection rule for one run's records."""
    run = records[0]["run"]
    cfg = run["config"]
    run_time_s = sum(r.get("time_s", 0.0) for r in records)
    sources = run.get("sources") or cfg.get("sources") or []  # older records: config only
    rows = []
    for rule in SELECTION_RULES:
        rec = select_epoch(records, rule)
        row = {
            "dataset": cfg["dataset"], "modalities": "+".join(run["modalities"]),
            "algorithm": cfg["algorithm"], "target": cfg["target"], "seed": cfg["seed"],
            "hparams_seed": cfg["hparams_seed"], "selection": rule, "epoch": rec["epoch"],
            "val_acc": rec["val"]["acc"], "target_acc": rec["target"]["acc"], "path": path,
            "val_loss": rec["val"]["loss"], "sources": "+".join(sources),
            "setting": "single" if is_single_source(cfg) else "multi",
            "source_domains": json.dumps(list(sources)),
        }
        left_out = _left_out(run)
        if left_out is not None:
            row["left_out"] = left_out
        for key in SELECTIVE_METRICS + OPEN_SET_METRICS:
            if key in rec["target"]:
                row[key] = rec["target"][key]
        for key in ORACLE_METRICS:
            if key in rec["target"].get("open_set_oracle", {}):
                row[f"oracle_{key}"] = rec["target"]["open_set_oracle"][key]
        for m, acc in rec["target"]["probe_acc"].items():
            row[f"target_probe_acc/{m}"] = acc
        for m, acc in rec["val"]["probe_acc"].items():
            row[f"val_probe_acc/{m}"] = acc
        for key in ("missing", "missing_translated"):
            for m, acc in rec["target"].get(key, {}).items():
                row[f"target_{key}/{m}"] = acc
        row.update(_corruption_columns(rec["target"]))
        row.update(_training_columns(run, rec))
        row["train_time_s"] = run_time_s
        row.update(_encoder_columns(run, rec))
        rows.append(row)
    return rows


def _training_columns(run: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What the run did per epoch (``steps_per_epoch``, ``seen_per_epoch``: JSON of the samples
    each source domain contributes to an epoch) and what near-chance tests need (``val_n``,
    ``num_classes``); {} for records written before they were recorded."""
    out: dict[str, Any] = {"val_n": record["val"].get("n")}
    if run.get("num_classes"):
        out["num_classes"] = run["num_classes"]
    plan = run.get("epoch_plan")
    if plan:
        out["steps_per_epoch"] = plan["steps_per_epoch"]
        out["seen_per_epoch"] = json.dumps(plan["seen_per_epoch"])
    return out


def training_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per (modality set, algorithm, column), the steps of one epoch and the samples
    each source domain contributes to it (the balanced sampler takes an equal share of every
    batch from each source, so the smallest source domain sets the epoch length); "" for
    records that do not hold it."""
    seen: dict[tuple[str, str, str], set[tuple[int, str]]] = defaultdict(set)
    for r in rows:
        if r["selection"] == "source_val" and "steps_per_epoch" in r:
            seen[(r["modalities"], r["algorithm"], column_of(r))].add(
                (r["steps_per_epoch"], r["seen_per_epoch"]))
    if not seen:
        return ""
    lines = ["| modalities | algorithm | column | steps per epoch | samples per source domain "
             "and epoch |", "|---|---|---|---|---|"]
    for (mods, algo, column), plans in sorted(seen.items()):
        for steps, per_domain in sorted(plans):
            domains = ", ".join(f"{d} {n}" for d, n in json.loads(per_domain).items())
            lines.append(f"| {mods} | {algo} | {column} | {steps} | {domains} |")
    return "\n".join(lines) + "\n"


def near_chance_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per (modality set, algorithm, modality) whose linear probe on source
    validation is within noise of chance (:func:`merdg.evaluation.chance.near_chance_probes`)
    in some runs, with how many and which columns."""
    flagged: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    total: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if (r["selection"] != "source_val" or not r.get("val_n")
                or int(r.get("num_classes") or 0) < 2):
            continue
        total[(r["modalities"], r["algorithm"])] += 1
        probes = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("val_probe_acc/")}
        for m in near_chance_probes(probes, int(r["val_n"]), int(r["num_classes"])):
            flagged[(r["modalities"], r["algorithm"], m)].append(
                f"{column_of(r)} seed {r['seed']}")
    return [f"- {mods} {algo}: the {m} probe is within noise of chance on source validation in "
            f"{len(where)} of {total[(mods, algo)]} runs ({', '.join(where[:6])}"
            f"{', ...' if len(where) > 6 else ''}): its encoder learned nothing measurable, and "
            "the fused model may ignore the modality"
            for (mods, algo, m), where in sorted(flagged.items())]


def _corruption_columns(target: dict[str, Any]) -> dict[str, float]:
    """The corruption columns of one epoch's target record ({} when it has none)."""
    if "robustness" not in target:
        return {}
    summary = target["robustness"]
    columns = {CORRUPTION_ACC: summary["mean_corruption_acc"],
               CORRUPTION_RELATIVE: summary["relative"]}
    columns.update({CORRUPTION_SEVERITY + s: v for s, v in summary["per_severity"].items()})
    columns.update({CORRUPTION_MODALITY + m: v for m, v in summary["per_modality"].items()})
    for m, per_name in target["corruptions"].items():
        for name, per_severity in per_name.items():
            for s, acc in per_severity.items():
                columns[f"{CORRUPTION_EACH}{m}:{name}:{s}"] = acc
    return columns


def _left_out(run: dict[str, Any]) -> str | None:
    """The one domain a run neither trained on nor evaluated (an inner run of a
    leave-one-domain-out search leaves out its task's target), else None."""
    domains = run.get("domains")
    if not domains or not run["config"].get("sources"):
        return None
    seen = {*run["sources"], run["config"]["target"]}
    left = [d for d in domains if d not in seen]
    return left[0] if len(left) == 1 else None


def _encoder_columns(run: dict[str, Any], record: dict[str, Any]) -> dict[str, float]:
    """``--encoder-probes`` measurements: at initialization (``init_probe_acc/<m>``,
    ``init_erank/<m>``) and at the selected epoch when it was measured there
    (``encoder_probe_acc/<m>``, ``encoder_erank/<m>``)."""
    out = {}
    for prefix, measured in (("init", run.get("encoders_at_init")),
                             ("encoder", record.get("encoders"))):
        for m, values in (measured or {}).items():
            out[f"{prefix}_probe_acc/{m}"] = values["probe_acc"]
            out[f"{prefix}_erank/{m}"] = values["erank"]
    return out


def load_rows(root: str | Path) -> list[dict[str, Any]]:
    """One row per (finished run under ``root``, selection rule), with the run's
    ``settings``."""
    rows = []
    for run_dir in RunDir.finished_under(root):
        records = run_dir.read_records()
        if not records:
            continue
        try:
            config = records[0]["run"]["config"]
            extra = {"settings": settings_of(config)}
            for row in run_rows(records, str(run_dir.path)):
                if "left_out" in row:  # the settings of the task it may serve
                    extra["outer_settings"] = settings_of({**config, "sources": None})
                rows.append({**row, **extra})
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise ValueError(f"{run_dir.records_file}: not a merdg epoch record (missing or "
                             f"malformed entry {err}); move the directory out of {root}, or "
                             "rerun it") from err
    return rows


# --- cells ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """Statistics of one table cell (accuracies as fractions)."""

    mean: float
    std: float  # sample std (ddof=1); 0 for one run
    std_population: float
    n: int
    trial: int | None  # chosen hparams_seed (None for the average column)
    seeds: tuple[int, ...]
    rule: str | None = None  # what chose the trial (merdg.experiments.search.TRIAL_RULES)


Table = dict[tuple[str, str], dict[str, Cell]]  # (modalities, algorithm) -> column -> cell
TaskKey = tuple[str, str, str, str, str]  # dataset, settings, modalities, algorithm, target


def _cell(values: Sequence[float], trial: int | None, seeds: Sequence[int],
          rule: str | None = None) -> Cell:
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return Cell(float(arr.mean()), std, float(arr.std()), len(arr), trial, tuple(seeds), rule)


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
    """Mean over targets within each shared replicate, then statistics over replicates."""
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


# --- views ---------------------------------------------------------------------------------

def format_cell(cell: Cell | None, pm: str = "±") -> str:
    if cell is None:
        return "-"
    return f"{100 * cell.mean:.2f} {pm} {100 * cell.std:.2f}" if cell.n > 1 else (
        f"{100 * cell.mean:.2f}")


def format_trial(cell: Cell | None) -> str:
    return "-" if cell is None or cell.trial is None else f"{cell.trial} ({cell.n})"


def table_title(dataset: str, rule: str, search: bool, settings: str | None = None,
                what: str = "target accuracy", label: str = "",
                trial_rules: Sequence[str] = ("source_val",), single_run: bool = False) -> str:
    """The title of a table: dataset (and setting label), metric, spread, how trials and
    epochs were chosen.

    Args:
        trial_rules: The rules that chose the table's trials (:func:`trial_rules_of`); named
            when ``search``.
        single_run: Every cell holds one run (1 seed: no spread to show).
    """
    chosen = " or ".join(TRIAL_RULES[r] for r in trial_rules or ("source_val",))
    spread = f"over the runs of the trial {chosen}" if search else "over seeds"
    spread = "1 seed, no spread" if single_run else f"mean ± std {spread}"
    where = f"{dataset} ({label})" if label else dataset
    title = f"{where}: {what} (%), {spread}; epochs: {SELECTION_RULES[rule]}"
    return title + (f"; settings {settings}" if settings is not None else "")


def markdown_table(table: Table, title: str = "",
                   fmt: Callable[[Cell | None], str] = format_cell) -> str:
    """Markdown: one row per (modality set, algorithm), columns = targets then avg."""
    columns = table_targets(table)
    lines = [f"**{title}**", ""] if title else []
    lines.append("| modalities | algorithm | " + " | ".join(columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    for (mods, algo), cells in sorted(table.items()):
        lines.append(f"| {mods} | {algo} | " + " | ".join(fmt(cells.get(c)) for c in columns)
                     + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for char in ("&", "%", "_", "#", "$"):
        text = text.replace(char, "\\" + char)
    return text.replace("->", r"$\rightarrow$")


def latex_table(table: Table, title: str = "") -> str:
    """A booktabs ``tabular``; a rule separates modality sets."""
    columns = table_targets(table)
    lines = [f"% {title}"] if title else []
    lines += [r"\begin{tabular}{ll" + "c" * len(columns) + "}", r"\toprule",
              " & ".join(["Modalities", "Algorithm", *(_tex(c) for c in columns[:-1]), "Avg"])
              + r" \\", r"\midrule"]
    previous = None
    for (mods, algo), cells in sorted(table.items()):
        if previous is not None and mods != previous:
            lines.append(r"\midrule")
        first = _tex(mods) if mods != previous else ""
        values = [format_cell(cells.get(c), "$\\pm$") for c in columns]
        lines.append(" & ".join([first, _tex(algo), *values]) + r" \\")
        previous = mods
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def cells_csv(tables: dict[tuple[str, str], Table]) -> str:
    """CSV of every cell (fractions, not %)."""
    out = []
    for (dataset, settings), table in sorted(tables.items(), key=lambda kv: table_order(kv[0])):
        for (mods, algo), cells in sorted(table.items()):
            for column in table_targets(table):
                if column not in cells:
                    continue
                c = cells[column]
                out.append({"dataset": dataset, "settings": settings, "modalities": mods,
                            "algorithm": algo, "target": column, "mean": f"{c.mean:.6f}",
                            "std": f"{c.std:.6f}", "std_population": f"{c.std_population:.6f}",
                            "n": c.n, "hparams_seed": "" if c.trial is None else c.trial,
                            "seeds": " ".join(map(str, c.seeds)) if c.trial is not None
                            else ""})
    return rows_to_csv(out)


def lodo_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: every task's leave-one-domain-out scores per trial (mean accuracy of the
    inner runs on the source they held out, %), the chosen trial marked; "" without inner
    runs."""
    cells, inner = split_inner_rows(rows)
    if not inner:
        return ""
    sources = {_task_key(r): json.loads(r["source_domains"]) for r in cells}
    lines = ["| dataset | modalities | algorithm | target | trial | held-out sources | score | "
             "chosen |", "|---|---|---|---|---|---|---|---|"]
    for key, runs in sorted(inner.items()):
        held_out = sources[key]
        scores = lodo_scores([r for r in runs if r["selection"] == "source_val"], held_out)
        best = choose_trial_lodo([r for r in runs if r["selection"] == "source_val"], held_out)
        for trial, score in scores.items():
            lines.append(f"| {key[0]} | {key[2]} | {key[3]} | {key[4]} | {trial} | "
                         f"{' '.join(held_out)} | {100 * score:.2f} | "
                         f"{'yes' if trial == best else ''} |")
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of the rows (columns: the union of keys, stable order)."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _average_columns(rows: Sequence[dict[str, Any]], metrics: Sequence[str], rule: str
                     ) -> dict[tuple[str, str], dict[tuple[str, str], list[Cell | None]]]:
    """``{(dataset, settings): {(modalities, algorithm): [avg cell of each metric]}}``."""
    per_metric = [build_tables(rows, rule, metric) for metric in metrics]
    out = {}
    for key in sorted(per_metric[0], key=table_order):
        out[key] = {row: [tables.get(key, {}).get(row, {}).get("avg") for tables in per_metric]
                    for row in sorted(per_metric[0][key])}
    return out


def _flat_average_columns(rows: Sequence[dict[str, Any]], metrics: Sequence[str], rule: str
                          ) -> dict[tuple[str, str], list[Cell | None]]:
    """:func:`_average_columns` over every (dataset, settings) table, as one
    ``{(modalities, algorithm): [avg cell of each metric]}`` (the first table wins a key that
    several have; the robustness views come from one experiment)."""
    flat: dict[tuple[str, str], list[Cell | None]] = {}
    for table in _average_columns(rows, metrics, rule).values():
        for key, cells in table.items():
            flat.setdefault(key, cells)
    return flat


def table_heading(key: tuple[str, str], keys: Sequence[tuple[str, str]]) -> str:
    """``dataset (setting label)`` of a table, with its other settings when another of ``keys``
    has the same dataset and label."""
    label, rest = setting_label(key[1])
    same = [k for k in keys if k[0] == key[0] and setting_label(k[1])[0] == label]
    where = f"{key[0]} ({label})" if label else key[0]
    return where + (f"; settings {rest}" if len(same) > 1 else "")


def _per_table(sections: dict[tuple[str, str], list[str]], header: list[str]) -> str:
    """One markdown table per (dataset, settings) table (headed when there are several);
    "" when no table has a line."""
    sections = {k: lines for k, lines in sections.items() if lines}
    parts = []
    for key, lines in sections.items():
        heading = [f"*{table_heading(key, list(sections))}*", ""] if len(sections) > 1 else []
        parts.append("\n".join([*heading, *header, *lines]) + "\n")
    return "\n".join(parts)


def probe_table(rows: Sequence[dict[str, Any]], rule: str = "source_val") -> str:
    """Markdown: average target accuracy of the fused model and of each modality's probe
    (each cell the ``avg`` of :func:`build_tables`, comparable with the main table's)."""
    modalities = sorted({k.split("/", 1)[1] for r in rows for k in r
                         if k.startswith("target_probe_acc/")})
    metrics = ["target_acc"] + [f"target_probe_acc/{m}" for m in modalities]
    header = ["| modalities | algorithm | fused | " + " | ".join(modalities) + " |",
              "|---|---|---|" + "---|" * len(modalities)]
    sections = {key: [f"| {mods} | {algo} | " + " | ".join(map(format_cell, cells)) + " |"
                      for (mods, algo), cells in table.items()]
                for key, table in _average_columns(rows, metrics, rule).items()}
    return _per_table(sections, header)


def missing_modality_table(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                           kind: str = "missing") -> str:
    """Markdown: average target accuracy with all modalities and with each one missing.

    Args:
        rows: Rows of :func:`load_rows`.
        rule: Selection rule of the epochs reported.
        kind: ``"missing"`` (zero-filled) or ``"missing_translated"`` (imputed by translation).

    Returns:
        The table (one per (dataset, settings) table, headed when there are several), or ""
        when no row holds the metric.
    """
    prefix = f"target_{kind}/"
    modalities = sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})
    if not modalities:
        return ""
    metrics = ["target_acc"] + [prefix + m for m in modalities]
    header = ["| modalities | algorithm | all | " + " | ".join(f"no {m}" for m in modalities)
              + " |", "|---|---|---|" + "---|" * len(modalities)]
    sections = {key: [f"| {mods} | {algo} | " + " | ".join(map(format_cell, cells)) + " |"
                      for (mods, algo), cells in table.items()
                      if any(c is not None for c in cells[1:])]
                for key, table in _average_columns(rows, metrics, rule).items()}
    return _per_table(sections, header)


def robustness_rule(rows: Sequence[dict[str, Any]], rule: str = "source_val") -> str:
    """The epoch rule of the robustness views: ``rule`` when every run with corruption results
    has them at the epoch ``rule`` selects (``--eval-corruptions every``), else ``"last"``
    (the epoch ``--eval-corruptions last`` evaluates)."""
    evaluated = {r["path"] for r in rows if r.get(CORRUPTION_ACC) is not None}
    at_rule = {r["path"] for r in rows
               if r["selection"] == rule and r.get(CORRUPTION_ACC) is not None}
    return rule if evaluated <= at_rule else "last"


def _prefixed(rows: Sequence[dict[str, Any]], prefix: str) -> list[str]:
    """The suffixes of the row columns named ``prefix<suffix>``, sorted."""
    return sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})


def robustness_table(rows: Sequence[dict[str, Any]], rule: str = "source_val") -> str:
    """Markdown: per (modality set, algorithm), the clean target accuracy, the mean corruption
    accuracy, their ratio (% of clean), the mean at each severity and over each modality's
    corruptions; each cell the ``avg`` of :func:`build_tables` (targets averaged within a
    replicate, then mean ± std over replicates). "" when no row has corruption results.

    Args:
        rows: Rows of :func:`load_rows`.
        rule: The epoch rule (see :func:`robustness_rule`); the clean column uses the same
            epochs.
    """
    severities = _prefixed(rows, CORRUPTION_SEVERITY)
    modalities = _prefixed(rows, CORRUPTION_MODALITY)
    if not any(r.get(CORRUPTION_ACC) is not None for r in rows):
        return ""
    metrics = (["target_acc", CORRUPTION_ACC, CORRUPTION_RELATIVE]
               + [CORRUPTION_SEVERITY + s for s in severities]
               + [CORRUPTION_MODALITY + m for m in modalities])
    header = (["clean", "corrupted (mean)", "% of clean"]
              + [f"severity {s}" for s in severities] + [f"{m} corrupted" for m in modalities])
    lines = ["| modalities | algorithm | " + " | ".join(header) + " |",
             "|---|---|" + "---|" * len(header)]
    for (mods, algo), cells in _flat_average_columns(rows, metrics, rule).items():
        if cells[1] is not None:
            lines.append(f"| {mods} | {algo} | " + " | ".join(map(format_cell, cells)) + " |")
    return "\n".join(lines) + "\n"


def severity_curves(rows: Sequence[dict[str, Any]], rule: str = "source_val"
                    ) -> tuple[dict[str, dict[tuple[str, int], float]], dict[str, float]]:
    """Inputs of :func:`merdg.experiments.plots.plot_severity_curves`.

    Returns:
        ``({label: {(corruption, severity): accuracy}}, {label: clean accuracy})``: each
        accuracy the ``avg`` cell's mean (targets averaged within a replicate, then over
        replicates), a corruption's value the mean over the modalities that have it (its name
        means each modality kind's corruption of that name, as on the command line). Labels
        are algorithms, prefixed by the modality set when there are several; graded
        corruptions only (``missing`` has no severity), and only the (corruption, severity)
        pairs every label has.
    """
    keys = [k for k in _prefixed(rows, CORRUPTION_EACH) if not k.endswith(":-")]
    if not keys:
        return {}, {}
    metrics = ["target_acc"] + [CORRUPTION_EACH + k for k in keys]
    columns = _flat_average_columns(rows, metrics, rule)
    several_sets = len({mods for mods, _ in columns}) > 1
    accuracy: dict[str, dict[tuple[str, int], float]] = {}
    clean: dict[str, float] = {}
    for (mods, algo), cells in columns.items():
        per_pair: dict[tuple[str, int], list[float]] = defaultdict(list)
        for key, cell in zip(keys, cells[1:]):
            _, name, severity = key.split(":")
            if cell is not None:
                per_pair[(name, int(severity))].append(cell.mean)
        if per_pair and cells[0] is not None:
            label = f"{mods} {algo}" if several_sets else algo
            accuracy[label] = {pair: float(np.mean(v)) for pair, v in per_pair.items()}
            clean[label] = cells[0].mean
    shared = set.intersection(*(set(v) for v in accuracy.values())) if accuracy else set()
    accuracy = {label: {p: v for p, v in per.items() if p in shared}
                for label, per in accuracy.items()}
    return accuracy, clean


def plot_robustness(rows: Sequence[dict[str, Any]], path: str | Path,
                    rule: str = "source_val") -> Path | None:
    """Accuracy against severity (:func:`severity_curves`) as a PNG; None when no row has a
    graded corruption, or (with a printed note) when matplotlib is not installed."""
    from merdg.experiments.plots import plot_severity_curves

    accuracy, clean = severity_curves(rows, rule)
    if not accuracy or not next(iter(accuracy.values())):
        return None
    epochs = SELECTION_RULES[rule].split(" (")[0]
    title = f"Target accuracy under corruptions (epochs: {epochs}; targets, seeds averaged)"
    return plot_severity_curves(accuracy, clean, path, title)


def time_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: mean ± std wall time of one run (all its epochs and evaluations), seconds."""
    times: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if "train_time_s" in r:
            times[(r["modalities"], r["algorithm"])][r["path"]] = r["train_time_s"]
    lines = ["| modalities | algorithm | runs | seconds per run |", "|---|---|---|---|"]
    for (mods, algo), per_run in sorted(times.items()):
        arr = np.asarray(list(per_run.values()), dtype=float)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        lines.append(f"| {mods} | {algo} | {len(per_run)} | {arr.mean():.1f} ± {std:.1f} |")
    return "\n".join(lines) + "\n"


def _partial_average(cells: dict[str, Cell], columns: Sequence[str]) -> str:
    """The ``avg`` cell, or, when some column lacks the metric (undefined, e.g. AUROC with no
    wrong prediction), the mean of the columns that have it, saying how many."""
    if "avg" in cells:
        return format_cell(cells["avg"])
    present = [cells[c].mean for c in columns if c in cells]
    if not present:
        return "-"
    return f"{100 * float(np.mean(present)):.2f} ({len(present)} of {len(columns)})"


def average_tables(rows: Sequence[dict[str, Any]], metrics: Sequence[str],
                   headers: Sequence[str], rule: str = "source_val"
                   ) -> dict[tuple[str, str], str]:
    """Markdown per (dataset, settings) table: one row per (modality set, algorithm), one
    column per metric, each cell the metric averaged over the table's columns (targets or
    source->target pairs) as the main table's ``avg``, in % (x100).

    NaN-aware: runs whose metric is undefined are left out; a cell whose columns do not all
    have the metric shows the mean over those that do, with ``(k of n)``. Tables in which no
    run has any of the metrics are left out.
    """
    per_metric = [build_tables(rows, rule, metric) for metric in metrics]
    main = build_tables(rows, rule, "target_acc")
    out = {}
    for key in sorted({k for tables in per_metric for k in tables}, key=table_order):
        columns = [c for c in table_targets(main.get(key, {})) if c != "avg"]
        lines = ["| modalities | algorithm | " + " | ".join(headers) + " |",
                 "|---|---|" + "---|" * len(headers)]
        for mods, algo in sorted({r for tables in per_metric for r in tables.get(key, {})}):
            cells = [_partial_average(tables.get(key, {}).get((mods, algo), {}), columns)
                     for tables in per_metric]
            lines.append(f"| {mods} | {algo} | " + " | ".join(cells) + " |")
        out[key] = "\n".join(lines) + "\n"
    return out


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

    def markdown(self) -> str:
        return self.note + "\n" if self.note else paired_difference_markdown(self.results)

    def words(self, what: str | None = None) -> str:
        """The comparison in words (``what``: the metric in words)."""
        if self.note:
            return self.note + "\n"
        return describe_paired_differences(self.results, what=what, pairs="(column, seed)")


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


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | Path,
                  rule: str = "source_val") -> Path | None:
    """Bar chart of source-val and target accuracy per target and algorithm (mean ± std);
    None (with a printed note) when matplotlib is not installed."""
    from merdg.experiments.plots import plot_accuracy_bars

    merged = lambda tables: {k: v for t in tables.values() for k, v in t.items()}  # noqa: E731
    tables = {"source validation": merged(build_tables(rows, rule, "val_acc")),
              "target": merged(build_tables(rows, rule, "target_acc"))}
    return plot_accuracy_bars(tables, path, rule)
