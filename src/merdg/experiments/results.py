"""Results: run records -> rows -> cells -> markdown, LaTeX, CSV and plots.

This is the one result pipeline: ``merdg bench``, ``merdg sweep``, ``merdg collect``, ``merdg
demo`` and the diagnostics report all build their tables here, from the records alone (every
finished run's ``records.jsonl``), so tables can be rebuilt from copied records and ``merdg
collect DIR`` prints exactly the tables the command that wrote ``DIR`` printed.

1. **Rows** (:func:`load_rows`): one per (finished run, epoch-selection rule), with the run's
   accuracies at the selected epoch and its ``settings`` (config identity beyond the axes).
2. **Cells** (:func:`build_tables`): runs are grouped into *tasks* (dataset, settings, modality
   set, algorithm, target). Each task's hparam trial is chosen on source validation
   (:func:`merdg.experiments.search.choose_trial`; one trial in a plain comparison); the cell
   holds mean, sample std (ddof=1) and population std of the metric over the chosen trial's
   runs (its search run plus its retrained seeds).
3. The ``avg`` column averages the targets replicate by replicate, then takes mean and std over
   replicates. A replicate is identified by its seed, except that each task's search run (the
   chosen trial's run with the lowest seed, whose seed is the trial index in a fair search)
   counts as one replicate "search" shared by every target. Only the replicates every target
   has enter the average (so a missing or failed run lowers ``n`` instead of mixing seeds);
   the column is empty when a target has no run at all.
4. **Views**: :func:`markdown_table`, :func:`latex_table`, :func:`cells_csv`,
   :func:`rows_to_csv`, :func:`probe_table`, :func:`missing_modality_table`,
   :func:`robustness_table`, :func:`time_table`, :func:`plot_accuracy`,
   :func:`plot_robustness`.

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
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merdg.experiments.search import choose_trial, search_runs
from merdg.run.config import config_identity
from merdg.run.directory import RunDir
from merdg.run.selection import SELECTION_RULES, select_epoch

__all__ = ["CORRUPTION_ACC", "CORRUPTION_RELATIVE", "Cell", "Table", "build_tables",
           "cells_csv", "latex_table", "load_rows", "markdown_table", "missing_modality_table",
           "plot_accuracy", "plot_robustness", "probe_table", "robustness_rule",
           "robustness_table", "rows_to_csv", "run_rows", "severity_curves", "table_title",
           "time_table"]

# config entries that are table axes or replicate indices, not settings
AXES = ("dataset", "algorithm", "modalities", "target", "seed", "hparams_seed", "split_seed")
# row columns of the corruption evaluation (module docstring)
CORRUPTION_ACC = "target_corruption_acc"
CORRUPTION_RELATIVE = "target_corruption_relative"
CORRUPTION_SEVERITY = "target_corruption_severity/"
CORRUPTION_MODALITY = "target_corruption_modality/"
CORRUPTION_EACH = "target_corruption/"


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
            "val_loss": rec["val"]["loss"],
        }
        for m, acc in rec["target"]["probe_acc"].items():
            row[f"target_probe_acc/{m}"] = acc
        for m, acc in rec["val"]["probe_acc"].items():
            row[f"val_probe_acc/{m}"] = acc
        for key in ("missing", "missing_translated"):
            for m, acc in rec["target"].get(key, {}).items():
                row[f"target_{key}/{m}"] = acc
        row.update(_corruption_columns(rec["target"]))
        row["train_time_s"] = run_time_s
        rows.append(row)
    return rows


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


def load_rows(root: str | Path) -> list[dict[str, Any]]:
    """One row per (finished run under ``root``, selection rule), with the run's
    ``settings``."""
    rows = []
    for run_dir in RunDir.finished_under(root):
        records = run_dir.read_records()
        if not records:
            continue
        settings = settings_of(records[0]["run"]["config"])
        rows += [{**row, "settings": settings} for row in run_rows(records, str(run_dir.path))]
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


Table = dict[tuple[str, str], dict[str, Cell]]  # (modalities, algorithm) -> column -> cell
TaskKey = tuple[str, str, str, str, str]  # dataset, settings, modalities, algorithm, target


def _cell(values: Sequence[float], trial: int | None, seeds: Sequence[int]) -> Cell:
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return Cell(float(arr.mean()), std, float(arr.std()), len(arr), trial, tuple(seeds))


def _task_key(row: dict[str, Any]) -> TaskKey:
    return (row["dataset"], row.get("settings", ""), row["modalities"], row["algorithm"],
            row["target"])


def chosen_runs(rows: Sequence[dict[str, Any]], rule: str = "source_val"
                ) -> dict[TaskKey, tuple[int, list[dict[str, Any]]]]:
    """Per task: the chosen trial and its rows under ``rule``, sorted by seed."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {list(SELECTION_RULES)}")
    search: dict[TaskKey, list[dict]] = defaultdict(list)
    report: dict[TaskKey, list[dict]] = defaultdict(list)
    for row in rows:
        if row["selection"] == "source_val":
            search[_task_key(row)].append(row)
        if row["selection"] == rule:
            report[_task_key(row)].append(row)
    chosen = {}
    for key in sorted(search):
        trial = choose_trial(search[key])
        chosen[key] = (trial, sorted((r for r in report[key] if r["hparams_seed"] == trial),
                                     key=lambda r: r["seed"]))
    return chosen


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
    for key, (trial, runs) in chosen_runs(rows, rule).items():
        dataset, settings, mods, algo, target = key
        runs = [r for r in runs if r.get(metric) is not None]
        if not runs:
            continue
        tables[(dataset, settings)].setdefault((mods, algo), {})[target] = _cell(
            [r[metric] for r in runs], trial, [r["seed"] for r in runs])
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
    """Whether some task has runs of several hparam trials (tables then name the trial)."""
    trials: dict[TaskKey, set[int]] = defaultdict(set)
    for row in rows:
        trials[_task_key(row)].add(row["hparams_seed"])
    return any(len(t) > 1 for t in trials.values())


# --- views ---------------------------------------------------------------------------------

def format_cell(cell: Cell | None, pm: str = "±") -> str:
    if cell is None:
        return "-"
    return f"{100 * cell.mean:.2f} {pm} {100 * cell.std:.2f}" if cell.n > 1 else (
        f"{100 * cell.mean:.2f}")


def format_trial(cell: Cell | None) -> str:
    return "-" if cell is None or cell.trial is None else f"{cell.trial} ({cell.n})"


def table_title(dataset: str, rule: str, search: bool, settings: str | None = None,
                what: str = "target accuracy") -> str:
    spread = ("over the runs of the trial chosen on source validation" if search
              else "over seeds")
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
    for (mods, algo), cells in _average_columns(rows, metrics, rule).items():
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
    columns = _average_columns(rows, metrics, rule)
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


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | Path,
                  rule: str = "source_val") -> Path | None:
    """Bar chart of source-val and target accuracy per target and algorithm (mean ± std);
    None (with a printed note) when matplotlib is not installed."""
    from merdg.experiments.plots import plot_accuracy_bars

    merged = lambda tables: {k: v for t in tables.values() for k, v in t.items()}  # noqa: E731
    tables = {"source validation": merged(build_tables(rows, rule, "val_acc")),
              "target": merged(build_tables(rows, rule, "target_acc"))}
    return plot_accuracy_bars(tables, path, rule)
