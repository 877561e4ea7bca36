"""Results: run records -> rows -> cells -> markdown, LaTeX, CSV and plots.

This is the one result pipeline: ``merdg bench``, ``merdg sweep``, ``merdg collect``, ``merdg
demo`` and the diagnostics report all build their tables here, from the records alone (every
finished run's ``records.jsonl``), so tables can be rebuilt from copied records and ``merdg
collect DIR`` prints exactly the tables the command that wrote ``DIR`` printed.

1. **Rows** (:func:`load_rows`): one per (finished run, epoch-selection rule), with the run's
   accuracies at the selected epoch and its ``settings`` (config identity beyond the axes).
2. **Cells** (:func:`build_tables`): runs are grouped into *tasks* (dataset, settings, modality
   set, algorithm, target). Each task's hparam trial is chosen on source validation
   (:func:`merdg.experiments.search.choose_trial`; one trial in a plain comparison), or, when
   the records hold the task's *inner runs* (runs trained without the task's target at all,
   each holding out one source domain: ``merdg sweep --selection lodo``), by leave-one-domain-out
   cross-validation (:func:`merdg.experiments.search.choose_trial_lodo`); the cell holds mean,
   sample std (ddof=1) and population std of the metric over the chosen trial's runs (its
   search run plus its retrained seeds), and the rule that chose the trial, which every table
   title names. Inner runs serve their task's choice and are not cells themselves
   (:func:`lodo_table` lists their scores).
3. The ``avg`` column averages the targets replicate by replicate, then takes mean and std over
   replicates. A replicate is identified by its seed, except that each task's search run (the
   chosen trial's run with the lowest seed, whose seed is the trial index in a fair search)
   counts as one replicate "search" shared by every target. Only the replicates every target
   has enter the average (so a missing or failed run lowers ``n`` instead of mixing seeds);
   the column is empty when a target has no run at all.
4. **Views**: :func:`markdown_table`, :func:`latex_table`, :func:`cells_csv`,
   :func:`rows_to_csv`, :func:`probe_table`, :func:`missing_modality_table`,
   :func:`time_table`, :func:`plot_accuracy`.

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

__all__ = ["Cell", "Table", "build_tables", "cells_csv", "latex_table", "load_rows",
           "lodo_table", "markdown_table", "missing_modality_table", "plot_accuracy",
           "probe_table", "rows_to_csv", "run_rows", "table_title", "time_table",
           "trial_rules_of"]

# config entries that are table axes or replicate indices, not settings
AXES = ("dataset", "algorithm", "modalities", "target", "seed", "hparams_seed", "split_seed")


# --- rows ----------------------------------------------------------------------------------

def settings_of(config: dict[str, Any]) -> str:
    """Canonical JSON of a run's settings beyond the table axes."""
    settings = {k: v for k, v in config_identity(config).items() if k not in AXES}
    if config.get("split_seed") is not None:
        settings["split_seed"] = config["split_seed"]
    return json.dumps(settings, sort_keys=True)


def run_rows(records: Sequence[dict[str, Any]], path: str = "") -> list[dict[str, Any]]:
    """One flat row per selection rule for one run's records."""
    run = records[0]["run"]
    cfg = run["config"]
    run_time_s = sum(r.get("time_s", 0.0) for r in records)
    rows = []
    for rule in SELECTION_RULES:
        rec = select_epoch(records, rule)
        row = {
            "dataset": cfg["dataset"], "modalities": "+".join(run["modalities"]),
            "algorithm": cfg["algorithm"], "target": cfg["target"], "seed": cfg["seed"],
            "hparams_seed": cfg["hparams_seed"], "selection": rule, "epoch": rec["epoch"],
            "val_acc": rec["val"]["acc"], "target_acc": rec["target"]["acc"], "path": path,
            "val_loss": rec["val"]["loss"], "sources": json.dumps(run.get("sources", [])),
        }
        left_out = _left_out(run)
        if left_out is not None:
            row["left_out"] = left_out
        for m, acc in rec["target"]["probe_acc"].items():
            row[f"target_probe_acc/{m}"] = acc
        for m, acc in rec["val"]["probe_acc"].items():
            row[f"val_probe_acc/{m}"] = acc
        for key in ("missing", "missing_translated"):
            for m, acc in rec["target"].get(key, {}).items():
                row[f"target_{key}/{m}"] = acc
        row["train_time_s"] = run_time_s
        row.update(_encoder_columns(run, rec))
        rows.append(row)
    return rows


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
        config = records[0]["run"]["config"]
        extra = {"settings": settings_of(config)}
        for row in run_rows(records, str(run_dir.path)):
            if "left_out" in row:  # the settings of the task it may serve
                extra["outer_settings"] = settings_of({**config, "sources": None})
            rows.append({**row, **extra})
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
            row["target"])


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
        else:
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
        held_out = json.loads(search[key][0]["sources"])
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


def table_targets(table: Table) -> list[str]:
    """The table's columns: targets in sorted order, then ``avg``."""
    return sorted({t for cells in table.values() for t in cells if t != "avg"}) + ["avg"]


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
                what: str = "target accuracy", trial_rules: Sequence[str] = ("source_val",)
                ) -> str:
    """The title of a table: dataset, metric, spread, how trials and epochs were chosen.

    Args:
        trial_rules: The rules that chose the table's trials (:func:`trial_rules_of`); named
            when ``search``.
    """
    chosen = " or ".join(TRIAL_RULES[r] for r in trial_rules or ("source_val",))
    spread = f"over the runs of the trial {chosen}" if search else "over seeds"
    title = f"{dataset}: {what} (%), mean ± std {spread}; epochs: {SELECTION_RULES[rule]}"
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
    return text


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
    for (dataset, settings), table in sorted(tables.items()):
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
    sources = {_task_key(r): json.loads(r["sources"]) for r in cells}
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
                     ) -> dict[tuple[str, str], list[Cell | None]]:
    """``{(modalities, algorithm): [avg cell of each metric]}`` over every (dataset,
    settings) table of the rows."""
    out: dict[tuple[str, str], list[Cell | None]] = {}
    per_metric = [build_tables(rows, rule, metric) for metric in metrics]
    keys = sorted({k for tables in per_metric[:1] for t in tables.values() for k in t})
    for key in keys:
        out[key] = [next((t[key].get("avg") for t in tables.values() if key in t), None)
                    for tables in per_metric]
    return out


def probe_table(rows: Sequence[dict[str, Any]], rule: str = "source_val") -> str:
    """Markdown: average target accuracy of the fused model and of each modality's probe
    (each cell the ``avg`` of :func:`build_tables`, comparable with the main table's)."""
    modalities = sorted({k.split("/", 1)[1] for r in rows for k in r
                         if k.startswith("target_probe_acc/")})
    metrics = ["target_acc"] + [f"target_probe_acc/{m}" for m in modalities]
    lines = ["| modalities | algorithm | fused | " + " | ".join(modalities) + " |",
             "|---|---|---|" + "---|" * len(modalities)]
    for (mods, algo), cells in _average_columns(rows, metrics, rule).items():
        lines.append(f"| {mods} | {algo} | " + " | ".join(map(format_cell, cells)) + " |")
    return "\n".join(lines) + "\n"


def missing_modality_table(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                           kind: str = "missing") -> str:
    """Markdown: average target accuracy with all modalities and with each one missing.

    Args:
        rows: Rows of :func:`load_rows`.
        rule: Selection rule of the epochs reported.
        kind: ``"missing"`` (zero-filled) or ``"missing_translated"`` (imputed by translation).

    Returns:
        The table, or "" when no row holds the metric.
    """
    prefix = f"target_{kind}/"
    modalities = sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})
    if not modalities:
        return ""
    metrics = ["target_acc"] + [prefix + m for m in modalities]
    lines = ["| modalities | algorithm | all | " + " | ".join(f"no {m}" for m in modalities) + " |",
             "|---|---|---|" + "---|" * len(modalities)]
    for (mods, algo), cells in _average_columns(rows, metrics, rule).items():
        if any(c is not None for c in cells[1:]):
            lines.append(f"| {mods} | {algo} | " + " | ".join(map(format_cell, cells)) + " |")
    return "\n".join(lines) + "\n"


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


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | Path,
                  rule: str = "source_val") -> Path | None:
    """Bar chart of source-val and target accuracy per target and algorithm (mean ± std);
    None (with a printed note) when matplotlib is not installed."""
    from merdg.experiments.plots import plot_accuracy_bars

    merged = lambda tables: {k: v for t in tables.values() for k, v in t.items()}  # noqa: E731
    tables = {"source validation": merged(build_tables(rows, rule, "val_acc")),
              "target": merged(build_tables(rows, rule, "target_acc"))}
    return plot_accuracy_bars(tables, path, rule)
