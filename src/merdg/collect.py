"""``merdg collect``: result tables from run records alone, under the fair search protocol.

Every finished run under a directory (a ``records.jsonl`` next to a ``done`` marker) is read;
nothing else is needed, so tables can be rebuilt from copied records. Runs are grouped into
*tasks* (dataset, settings, modality set, algorithm, target). Within a task (MMDG-Bench's
``tools/search_hparams.py`` protocol, peers.md section 6):

1. each hyperparameter trial (``hparams_seed``; 0 is the default configuration) is represented
   by its *search run*, the run with its lowest seed (a sweep searches trial ``k`` with seed
   ``k`` and retrains the chosen trial with seeds above every search seed);
2. the chosen trial has the best source-validation accuracy, ties going to the lower
   source-validation loss, then to the lower trial index (both measured at the epoch the
   source-validation rule selects within the run);
3. the cell reports mean, sample std (ddof=1) and population std of the target accuracy over
   every run of the chosen trial (the search run plus its retrained seeds).

The ``avg`` column averages the targets replicate by replicate (the i-th run of each target by
seed order), then takes mean and std over replicates; it is left empty unless every target
has the same number of runs. Runs whose settings differ beyond the table axes (hparams
overrides, dataset options, fixed split seed, ...) go to separate tables.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merdg.model_selection import SELECTION_RULES
from merdg.records import read_jsonl
from merdg.reporting import find_record_files, rows_to_csv, run_rows
from merdg.training import config_identity

__all__ = ["Cell", "build_tables", "choose_trial", "latex_table", "load_rows",
           "markdown_table", "write_tables"]

# config entries that are table axes or replicate indices, not settings
AXES = ("dataset", "algorithm", "modalities", "target", "seed", "hparams_seed", "split_seed")


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


def settings_of(config: dict[str, Any]) -> str:
    """Canonical JSON of a run's settings beyond the table axes."""
    settings = {k: v for k, v in config_identity(config).items() if k not in AXES}
    if config.get("split_seed") is not None:
        settings["split_seed"] = config["split_seed"]
    return json.dumps(settings, sort_keys=True)


def load_rows(root: str | Path) -> list[dict[str, Any]]:
    """One row per (finished run, selection rule), with the run's ``settings``."""
    rows = []
    for path in find_record_files(root):
        records = list(read_jsonl(path))
        if not records:
            continue
        settings = settings_of(records[0]["run"]["config"])
        rows += [{**row, "settings": settings} for row in run_rows(records, str(path.parent))]
    return rows


def choose_trial(search_rows: Iterable[dict[str, Any]]) -> int:
    """The ``hparams_seed`` chosen among one task's runs (source_val rows; module docstring)."""
    first: dict[int, dict[str, Any]] = {}
    for row in search_rows:
        k = row["hparams_seed"]
        if k not in first or row["seed"] < first[k]["seed"]:
            first[k] = row
    if not first:
        raise ValueError("no runs to choose a trial from")

    def rank(row: dict[str, Any]) -> tuple[float, float, int]:
        loss = row.get("val_loss")
        return (-row["val_acc"], math.inf if loss is None else loss, row["hparams_seed"])

    return min(first.values(), key=rank)["hparams_seed"]


def _cell(values: Sequence[float], trial: int | None, seeds: Sequence[int]) -> Cell:
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return Cell(float(arr.mean()), std, float(arr.std()), len(arr), trial, tuple(seeds))


def _task_key(row: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return (row["dataset"], row["settings"], row["modalities"], row["algorithm"], row["target"])


def _average_cell(runs: dict[str, list[float]]) -> Cell | None:
    """Replicate-wise mean over targets (``runs``: target -> values sorted by seed)."""
    counts = {len(v) for v in runs.values()}
    if len(counts) != 1:
        return None
    replicates = np.mean([runs[t] for t in sorted(runs)], axis=0)  # (n,): mean over targets
    return _cell(replicates.tolist(), None, range(len(replicates)))


def build_tables(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                 metric: str = "target_acc") -> dict[tuple[str, str], Table]:
    """``{(dataset, settings): {(modalities, algorithm): {target | "avg": Cell}}}``.

    Args:
        rows: From :func:`load_rows`.
        rule: Epoch selection rule within each run for the reported ``metric`` (trials are
            always chosen on source validation).
        metric: Row field to report (``target_acc`` or ``val_acc``).
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {list(SELECTION_RULES)}")
    search: dict[tuple, list[dict]] = defaultdict(list)
    report: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if row["selection"] == "source_val":
            search[_task_key(row)].append(row)
        if row["selection"] == rule:
            report[_task_key(row)].append(row)
    tables: dict[tuple[str, str], Table] = defaultdict(dict)
    runs: dict[tuple, dict[str, list[float]]] = defaultdict(dict)
    for key in sorted(search):
        dataset, settings, mods, algo, target = key
        trial = choose_trial(search[key])
        chosen = sorted((r for r in report[key] if r["hparams_seed"] == trial),
                        key=lambda r: r["seed"])
        values = [r[metric] for r in chosen]
        tables[(dataset, settings)].setdefault((mods, algo), {})[target] = _cell(
            values, trial, [r["seed"] for r in chosen])
        runs[(dataset, settings, mods, algo)][target] = values
    for (dataset, settings, mods, algo), per_target in runs.items():
        every_target = set(_targets(tables[(dataset, settings)])) - {"avg"}
        avg = _average_cell(per_target) if set(per_target) == every_target else None
        if avg is not None:
            tables[(dataset, settings)][(mods, algo)]["avg"] = avg
    return dict(tables)


def _targets(table: Table) -> list[str]:
    return sorted({t for cells in table.values() for t in cells if t != "avg"}) + ["avg"]


def _fmt(cell: Cell | None, pm: str = "±") -> str:
    if cell is None:
        return "-"
    return f"{100 * cell.mean:.2f} {pm} {100 * cell.std:.2f}" if cell.n > 1 else (
        f"{100 * cell.mean:.2f}")


def _fmt_trial(cell: Cell | None) -> str:
    return "-" if cell is None or cell.trial is None else f"{cell.trial} ({cell.n})"


def markdown_table(table: Table, title: str = "", fmt=_fmt) -> str:
    """Markdown: one row per (modality set, algorithm), columns = targets then avg."""
    columns = _targets(table)
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
    columns = _targets(table)
    lines = [f"% {title}"] if title else []
    lines += [r"\begin{tabular}{ll" + "c" * len(columns) + "}", r"\toprule",
              " & ".join(["Modalities", "Algorithm", *(_tex(c) for c in columns[:-1]), "Avg"])
              + r" \\", r"\midrule"]
    previous = None
    for (mods, algo), cells in sorted(table.items()):
        if previous is not None and mods != previous:
            lines.append(r"\midrule")
        first = _tex(mods) if mods != previous else ""
        values = [_fmt(cells.get(c), "$\\pm$") for c in columns]
        lines.append(" & ".join([first, _tex(algo), *values]) + r" \\")
        previous = mods
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def cells_csv(tables: dict[tuple[str, str], Table]) -> str:
    """CSV of every cell (fractions, not %)."""
    out = []
    for (dataset, settings), table in sorted(tables.items()):
        for (mods, algo), cells in sorted(table.items()):
            for column in _targets(table):
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


def _title(dataset: str, settings: str, several: bool, rule: str) -> str:
    title = (f"{dataset}: target accuracy (%), mean ± std over the runs of the trial chosen on "
             f"source validation; epochs: {SELECTION_RULES[rule]}")
    return title + (f"; settings {settings}" if several else "")


def write_tables(root: str | Path, out_dir: str | Path | None = None,
                 rule: str = "source_val") -> dict[str, Any]:
    """Write ``tables.md``, ``tables.tex``, ``tables.csv`` (cells) and ``runs.csv``.

    Returns:
        ``{"markdown": text, "paths": [...], "tables": ...}``.

    Raises:
        RuntimeError: No finished run under ``root``.
    """
    rows = load_rows(root)
    if not rows:
        raise RuntimeError(f"no finished runs (records.jsonl next to a done marker) under {root}")
    tables = build_tables(rows, rule)
    per_dataset = defaultdict(int)
    for dataset, _ in tables:
        per_dataset[dataset] += 1
    md, tex = [], []
    for (dataset, settings), table in sorted(tables.items()):
        title = _title(dataset, settings, per_dataset[dataset] > 1, rule)
        md += [markdown_table(table, title),
               markdown_table(table, "chosen trial (hparams_seed) and its number of runs",
                              _fmt_trial)]
        tex.append(latex_table(table, title))
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "tables.md", out / "tables.tex", out / "tables.csv", out / "runs.csv"]
    paths[0].write_text("\n".join(md))
    paths[1].write_text("\n".join(tex))
    paths[2].write_text(cells_csv(tables))
    paths[3].write_text(rows_to_csv([r for r in rows if r["selection"] == rule]))
    return {"markdown": "\n".join(md), "paths": paths, "tables": tables}
