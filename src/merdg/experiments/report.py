"""What an experiment directory holds besides its runs, written from the rows and cells of
:mod:`merdg.experiments.results`:

- ``table.md``: the main table(s): target accuracy under source-validation selection (plus the
  chosen trial of each cell when there was a search; multi-source, single-source and open-set
  runs in separate tables), what evaluators add there (the H-score tables of open-set runs),
  the leave-one-domain-out scores of a search, and the paired differences of every algorithm
  against the reference (``--reference``, default ERM); ``table.tex``: the main tables in
  LaTeX;
- ``cells.csv``: every cell (fractions); ``results.csv``: one row per (run, selection rule);
- the files of evaluators (``robustness.md`` and ``robustness.png`` of runs evaluated under
  corruptions, ``docs/robustness.md``);
- ``report.md`` and ``accuracy.png`` (experiments only): the tables, the paired differences in
  words, every evaluator's section (:meth:`merdg.evaluators.Evaluator.report`, written through
  :class:`ExperimentView`), the oracle numbers (labelled), timing, diagnostics, configuration;
- ``experiment.json``: the experiment's configuration and versions.

``±`` is the sample standard deviation over seeds by default, or the standard error of the
mean with ``error="se"`` (``--error se``; DomainBed's ``collect_results.py`` reports the standard
error); every title says which, and a cell of one run shows its value alone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from merdg.evaluators import EVALUATORS, ORDER, Column, Evaluator, wanted_settings
from merdg.evaluators.clean import ACC2_WORDS, near_chance_lines
from merdg.experiments.plots import Panel, plot_accuracy_panels
from merdg.experiments.results import (
    Cell,
    Table,
    average_cells,
    build_tables,
    has_search,
    load_rows,
    lodo_rows,
    paired_tables,
    setting_label,
    table_order,
    table_targets,
    time_cells,
    trial_rules_of,
)
from merdg.experiments.search import TRIAL_RULES
from merdg.run.selection import SELECTION_RULES
from merdg.words import count

__all__ = ["DEFAULT_REFERENCE", "ERRORS", "EXPERIMENT_FILE", "OUTPUT_FILES", "ExperimentView",
           "accuracy_panels", "cells_csv", "check_error", "datasets_table",
           "experiment_error", "experiment_evaluations", "experiment_reference", "format_cell",
           "latex_table", "lodo_table", "markdown_table", "paired_section", "plot_accuracy",
           "rows_to_csv", "rules_table", "spread_words", "table_title", "tables_text",
           "write_report", "write_tables"]

DEFAULT_REFERENCE = "ERM"
# what ± means in a table (--error): the sample std over seeds, or the standard error of the
# mean (std / sqrt(n); DomainBed's tables report a standard error)
ERRORS = {"std": "std", "se": "standard error"}
EXPERIMENT_FILE = "experiment.json"
OUTPUT_FILES = {"table": "table.md", "latex": "table.tex", "cells": "cells.csv",
                "rows": "results.csv", "report": "report.md", "plot": "accuracy.png"}


# --- cells and tables as text --------------------------------------------------------------

def check_error(error: str) -> str:
    """``error`` if it is one of :data:`ERRORS`.

    Raises:
        ValueError: Another value (naming ``--error``).
    """
    if error not in ERRORS:
        raise ValueError(f"--error must be one of {', '.join(ERRORS)}, got {error!r}")
    return error


def spread_words(error: str = "std") -> str:
    """``"mean ± std"`` or ``"mean ± standard error"`` (table titles)."""
    return f"mean ± {ERRORS[check_error(error)]}"


def format_cell(cell: Cell | None, pm: str = "±", percent: bool = True,
                error: str = "std") -> str:
    """``mean ± std`` (``error="se"``: ``mean ± standard error``; in % for ``percent``), the
    mean alone for one run, ``-`` for none, and ``mean (k of n columns)`` for a partial
    average."""
    if cell is None:
        return "-"
    scale = 100 if percent else 1
    if cell.trial is None and cell.seeds and isinstance(cell.seeds[0], str):
        return f"{scale * cell.mean:.2f} ({cell.seeds[0].replace(' columns', '')})"
    spread = cell.std if check_error(error) == "std" else cell.se
    return f"{scale * cell.mean:.2f} {pm} {scale * spread:.2f}" if cell.n > 1 else (
        f"{scale * cell.mean:.2f}")


def format_trial(cell: Cell | None) -> str:
    return "-" if cell is None or cell.trial is None else f"{cell.trial} ({cell.n})"


def table_title(dataset: str, rule: str, search: bool, settings: str | None = None,
                what: str = "target accuracy", label: str = "",
                trial_rules: Sequence[str] = ("source_val",), single_run: bool = False,
                error: str = "std", percent: bool = True) -> str:
    """The title of a table: dataset (and setting label), metric, spread, how trials and
    epochs were chosen.

    Args:
        trial_rules: The rules that chose the table's trials (:func:`trial_rules_of`); named
            when ``search``.
        single_run: Every cell holds one run (1 seed: no spread to show).
        error: What ``±`` is: ``"std"`` or ``"se"`` (:data:`ERRORS`).
        percent: The metric is shown in % (else as is, e.g. an MAE).
    """
    chosen = " or ".join(TRIAL_RULES[r] for r in trial_rules or ("source_val",))
    spread = f"over the runs of the trial {chosen}" if search else "over seeds"
    spread = "1 seed, no spread" if single_run else f"{spread_words(error)} {spread}"
    where = f"{dataset} ({label})" if label else dataset
    title = f"{where}: {what}{' (%)' if percent else ''}, {spread}; epochs: " \
            f"{SELECTION_RULES[rule]}"
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


def latex_table(table: Table, title: str = "", error: str = "std", percent: bool = True
                ) -> str:
    """A booktabs ``tabular``; a rule separates modality sets (values in % for
    ``percent``; ``±``: ``error``)."""
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
        values = [format_cell(cells.get(c), "$\\pm$", percent, error) for c in columns]
        lines.append(" & ".join([first, _tex(algo), *values]) + r" \\")
        previous = mods
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of the rows (columns: the union of keys, stable order)."""
    import csv
    import io

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


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
                            "std": f"{c.std:.6f}", "se": f"{c.se:.6f}",
                            "std_population": f"{c.std_population:.6f}",
                            "n": c.n, "hparams_seed": "" if c.trial is None else c.trial,
                            "seeds": " ".join(map(str, c.seeds)) if c.trial is not None
                            else ""})
    return rows_to_csv(out)


def regression_datasets(rows: Sequence[dict[str, Any]]) -> set[str]:
    """The datasets whose runs are regression tasks (their ``target_acc`` is Acc-2)."""
    return {r["dataset"] for r in rows if r.get("task") == "regression"}


def tables_text(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                metric: str = "target_acc", what: str = "target accuracy", error: str = "std",
                percent: bool = True) -> tuple[str, str, dict]:
    """Markdown and LaTeX of the per-target tables of ``metric`` (``±``: ``error``), and the
    tables themselves (values in % for ``percent``; a regression data set's ``target_acc`` is
    titled Acc-2)."""
    tables = build_tables(rows, rule, metric)
    search = has_search(rows)
    per_setting: dict[tuple[str, str], int] = defaultdict(int)
    for dataset, settings in tables:
        per_setting[(dataset, setting_label(settings)[0])] += 1
    md, tex = [], []
    regression = regression_datasets(rows)
    fmt = lambda cell: format_cell(cell, percent=percent, error=error)  # noqa: E731
    for (dataset, settings), table in sorted(tables.items(), key=lambda kv: table_order(kv[0])):
        label, rest = setting_label(settings)
        measured = what
        if metric == "target_acc" and dataset in regression:
            measured = ACC2_WORDS
        if metric == "target_acc" and "open-set" in label:
            measured = f"{what} on the known classes (no rejection)"
        trial_rules = trial_rules_of(table)
        single_run = all(c.n == 1 for cells in table.values() for c in cells.values())
        title = table_title(dataset, rule, search,
                            rest if per_setting[(dataset, label)] > 1 else None, measured,
                            label, trial_rules, single_run, error, percent)
        md.append(markdown_table(table, title, fmt))
        if search:
            chosen = " or ".join(TRIAL_RULES[r] for r in trial_rules)
            md.append(markdown_table(table, f"chosen trial (hparams_seed; {chosen}) and its "
                                     "number of runs", format_trial))
        tex.append(latex_table(table, title, error, percent))
    return "\n".join(md), "\n".join(tex), tables


def table_heading(key: tuple[str, str], keys: Sequence[tuple[str, str]]) -> str:
    """``dataset (setting label)`` of a table, with its other settings when another of ``keys``
    has the same dataset and label."""
    label, rest = setting_label(key[1])
    same = [k for k in keys if k[0] == key[0] and setting_label(k[1])[0] == label]
    where = f"{key[0]} ({label})" if label else key[0]
    return where + (f"; settings {rest}" if len(same) > 1 else "")


def _paired_title(key: tuple[str, str], metric_words: str, reference: str,
                  show_settings: bool, percent: bool = True) -> str:
    dataset, settings = key
    label, rest = setting_label(settings)
    where = f"{dataset} ({label})" if label else dataset
    extra = f"; settings {rest}" if show_settings else ""
    unit = "percentage points" if percent else "its own units"
    return (f"**{where}: paired difference in {metric_words} against {reference} "
            f"({unit}) over matched (column, seed) pairs of the table's runs; 95% "
            f"paired t-interval (verdict) and paired bootstrap interval{extra}**")


def paired_section(rows: Sequence[dict[str, Any]], reference: str, rule: str = "source_val",
                   words: bool = False, metric: str = "target_acc",
                   metric_words: str = "target accuracy", percent: bool = True,
                   higher_better: bool = True) -> str:
    """Markdown of the paired-difference tables of ``metric`` against ``reference``, on the
    main table's (column, replicate) pairs; ``words`` adds the sentences saying which
    differences are beyond noise (better or worse by ``higher_better``). Differences are in
    percentage points for ``percent`` metrics, else in the metric's units (an MAE). Tables
    with a single algorithm are left out; a regression data set's ``target_acc`` is called
    Acc-2."""
    parts = []
    tables = paired_tables(rows, reference, metric, rule)
    labels = [(t.key[0], setting_label(t.key[1])[0]) for t in tables]
    regression = regression_datasets(rows)
    scale = 100.0 if percent else 1.0
    for table, label in zip(tables, labels):
        if not table.results and not table.note:
            continue
        what = (ACC2_WORDS if metric == "target_acc" and table.key[0] in regression
                else metric_words)
        title = _paired_title(table.key, what, reference, labels.count(label) > 1, percent)
        parts += [title, "", table.markdown(scale)]
        if words:
            parts += [table.words(what, scale, higher_better)]
    return "\n".join(parts)


# --- the view evaluators write their sections through ---------------------------------------

class ExperimentView:
    """The rows of an experiment at one epoch rule, as :class:`merdg.evaluators.ResultView`:
    the tables an evaluator's report section and files are made of.

    Args:
        rows: Rows of :func:`merdg.experiments.results.load_rows`.
        rule: The epoch rule the tables report.
        reference: The algorithm of the paired differences.
        error: What ``±`` is in its tables: ``"std"`` or ``"se"``.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], rule: str = "source_val",
                 reference: str = DEFAULT_REFERENCE, error: str = "std") -> None:
        self.rows, self.rule, self.reference = list(rows), rule, reference
        self.error = check_error(error)
        self._keys = {k for r in self.rows if r["selection"] == rule for k, v in r.items()
                      if v is not None}

    @property
    def epochs_words(self) -> str:
        return SELECTION_RULES[self.rule]

    @property
    def spread_words(self) -> str:
        return spread_words(self.error)

    def at_rule(self, rule: str) -> ExperimentView:
        return ExperimentView(self.rows, rule, self.reference, self.error)

    def has(self, column: Column) -> bool:
        return bool(self.members(column)) if column.family else column.name in self._keys

    def members(self, column: Column) -> list[str]:
        return column.members(self._keys)

    def main_tables(self, column: Column, what: str) -> str:
        if not self.has(column):
            return ""
        return tables_text(self.rows, self.rule, column.name, what, self.error,
                           column.percent)[0]

    def average_tables(self, columns: Sequence[tuple], what: str) -> str:
        """One markdown table per (dataset, settings) table (headed when there are several);
        ``columns``: ``(row key, header)`` or ``(row key, header, percent)``."""
        keys = [c[0] for c in columns]
        percent = [c[2] if len(c) > 2 else True for c in columns]
        tables = average_cells(self.rows, keys, self.rule)
        tables = {k: t for k, t in tables.items()
                  if any(c is not None for cells in t.values() for c in cells)}
        header = ["| modalities | algorithm | " + " | ".join(c[1] for c in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        parts = []
        for key, table in tables.items():
            lines = [f"| {mods} | {algo} | " + " | ".join(
                format_cell(c, percent=p, error=self.error) for c, p in zip(cells, percent))
                + " |"
                for (mods, algo), cells in table.items()
                if any(c is not None for c in cells[1:] or cells)]
            heading = ([f"*{table_heading(key, list(tables))}: {what}*", ""]
                       if len(tables) > 1 else [])
            parts.append("\n".join([*heading, *header, *lines]) + "\n")
        return "\n".join(parts)

    def paired(self, column: Column, what: str, words: bool = False) -> str:
        if not self.has(column):
            return ""
        return paired_section(self.rows, self.reference, self.rule, words, column.name, what,
                              column.percent, column.better != "lower")

    def averages(self, keys: Sequence[str]) -> dict[tuple[str, str, str], list[Cell | None]]:
        tables = average_cells(self.rows, keys, self.rule)
        return {(table_heading(key, list(tables)), mods, algo): cells
                for key, table in tables.items() for (mods, algo), cells in table.items()}


def report_evaluators(evaluations: Mapping[str, Mapping[str, Any]] | None = None
                      ) -> list[Evaluator]:
    """One evaluator of every kind, with the experiment's settings where it has them (their
    report sections read the rows; settings only word them)."""
    wanted = wanted_settings(evaluations or {})
    return [EVALUATORS.get(name).reporter(wanted.get(name)) for name in ORDER]


# --- the files -----------------------------------------------------------------------------

def experiment_evaluations(root: str | Path) -> dict[str, dict[str, Any]] | None:
    """The evaluator settings recorded in ``root/experiment.json`` (those of the last accepted
    bench or sweep command), or None without the file."""
    experiment = _experiment(root)
    if experiment is None:
        return None
    return dict(experiment.get("base", {}).get("evaluations") or {})


def _experiment(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / EXPERIMENT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("experiment", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err


def experiment_error(root: str | Path) -> str:
    """The ``--error`` recorded in ``root/experiment.json`` (``"std"`` without one)."""
    return (_experiment(root) or {}).get("error") or "std"


def experiment_reference(root: str | Path) -> str:
    """The reference algorithm recorded in ``root/experiment.json`` (``--reference`` of the
    bench or sweep), else ERM."""
    experiment = _experiment(root) or {}
    return experiment.get("reference") or DEFAULT_REFERENCE


def write_tables(root: str | Path, out_dir: str | Path | None = None,
                 rule: str = "source_val", reference: str | None = None,
                 evaluations: Mapping[str, Mapping[str, Any]] | None = None,
                 error: str | None = None) -> dict[str, Any]:
    """Write ``table.md``, ``table.tex``, ``cells.csv``, ``results.csv`` and the evaluators'
    files (``robustness.md``, ...) from every finished run under ``root``.

    Args:
        root: The experiment (or any) directory.
        out_dir: Where to write (default: ``root``).
        rule: Epoch selection within each run.
        reference: The algorithm of the paired comparison (None: the one recorded in
            ``root/experiment.json``, else ERM; a table without it says so in one line).
        evaluations: Evaluator settings whose evaluations the rows report when runs hold
            several (None: those of ``root/experiment.json``, else the newest).
        error: What ``±`` is: ``"std"`` or ``"se"`` (None: the ``--error`` recorded in
            ``root/experiment.json``, else ``"std"``).

    Returns:
        ``{"markdown": text, "console": what evaluators add to the printed tables (the
        robustness table), "rules": every epoch-selection rule side by side
        (:func:`rules_table`), "paths": [...], "tables": ..., "rows": rows}``.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        RuntimeError: No finished run under ``root``.
        ValueError: A record that is not a merdg epoch record (naming its file).
        ValueError: ``reference`` was given and no run has that algorithm.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root} is not a directory (a bench or sweep directory, or a "
                                "folder of run directories)")
    if evaluations is None:
        evaluations = experiment_evaluations(root)
    rows = load_rows(root, wanted_settings(evaluations) if evaluations is not None else None)
    if not rows:
        raise RuntimeError(f"no finished runs (records.jsonl next to a done marker) under {root}")
    if reference is not None and reference not in {r["algorithm"] for r in rows}:
        raise ValueError(f"--reference {reference}: no finished run of that algorithm under "
                         f"{root} (algorithms: {sorted({r['algorithm'] for r in rows})})")
    reference = reference or experiment_reference(root)
    error = check_error(error or experiment_error(root))
    view = ExperimentView(rows, rule, reference, error)
    evaluators = report_evaluators(evaluations)
    markdown, tex, tables = tables_text(rows, rule, error=error)
    headlines = [e.headline(view) for e in evaluators]
    markdown = "\n".join(p for p in (markdown, datasets_table(rows, rule, error),
                                     _lodo_text(rows), *headlines,
                                     paired_section(rows, reference, rule)) if p)
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / OUTPUT_FILES[k] for k in ("table", "latex", "cells", "rows")]
    paths[0].write_text(markdown)
    paths[1].write_text(tex)
    paths[2].write_text(cells_csv(tables))
    paths[3].write_text(rows_to_csv(rows))
    for evaluator in evaluators:
        paths += evaluator.files(view, out)
    console = "\n".join(t for t in (e.console(view) for e in evaluators) if t)
    return {"markdown": markdown, "console": console, "rules": rules_table(rows, error),
            "paths": paths, "tables": tables, "rows": rows}


RULE_HEADERS = {"source_val": "source validation", "oracle": "oracle (target labels)",
                "last": "last epoch"}


def rules_table(rows: Sequence[dict[str, Any]], error: str = "std") -> str:
    """Markdown: the ``avg`` column of every table under every epoch-selection rule side by
    side (DomainBed's ``collect_results.py`` prints every model-selection method at once):
    one table per (dataset, settings), one row per (modality set, algorithm), one column per
    rule of :data:`merdg.run.selection.SELECTION_RULES`; each task's trial is chosen as in
    the main table."""
    per_rule = {rule: build_tables(rows, rule) for rule in SELECTION_RULES}
    keys = sorted({k for tables in per_rule.values() for k in tables}, key=table_order)
    parts = []
    for key in keys:
        lines = [f"**{table_heading(key, keys)}: target accuracy (%) averaged over the targets "
                 f"(`avg`) under each epoch-selection rule, {spread_words(error)} over "
                 "seeds**", "",
                 "| modalities | algorithm | " + " | ".join(RULE_HEADERS[r] for r in per_rule)
                 + " |", "|---|---|" + "---|" * len(per_rule)]
        for mods, algo in sorted({r for t in per_rule.values() for r in t.get(key, {})}):
            cells = [t.get(key, {}).get((mods, algo), {}).get("avg") for t in per_rule.values()]
            lines.append(f"| {mods} | {algo} | "
                         + " | ".join(format_cell(c, error=error) for c in cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def datasets_table(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                   error: str = "std") -> str:
    """Markdown: the average over data sets ("" unless the rows hold several), as DomainBed's
    "Averages" table: per setting (multi-source, single-source, open-set, ...), one row per
    algorithm, one column per (data set, modality set) with its ``avg`` cell (targets averaged
    within a seed, then mean ± spread over seeds), and ``avg``: the mean of those columns'
    means (when the algorithm has every column)."""
    tables = build_tables(rows, rule)
    if len({dataset for dataset, _ in tables}) < 2:
        return ""
    per_label: dict[str, dict[str, dict[str, Cell]]] = defaultdict(lambda: defaultdict(dict))
    keys = sorted(tables, key=table_order)
    for key in keys:
        label, rest = setting_label(key[1])
        same = [k for k in keys if k[0] == key[0] and setting_label(k[1])[0] == label]
        for (mods, algo), cells in tables[key].items():
            if "avg" in cells:
                name = f"{key[0]} ({mods})" + (f" {rest}" if len(same) > 1 else "")
                per_label[label][name][algo] = cells["avg"]
    parts = []
    for label, columns in per_label.items():
        if len(columns) < 2:
            continue
        names = list(columns)
        algorithms = sorted({a for cells in columns.values() for a in cells})
        lines = [f"**Average over data sets{f' ({label})' if label else ''}: target accuracy "
                 f"(%) of each data set's `avg` column, {spread_words(error)} over seeds; "
                 "`avg`: the mean over the data sets; epochs: "
                 f"{SELECTION_RULES[rule]}**", "",
                 "| algorithm | " + " | ".join(names) + " | avg |",
                 "|---|" + "---|" * (len(names) + 1)]
        for algo in algorithms:
            cells = [columns[n].get(algo) for n in names]
            mean = (f"{100 * sum(c.mean for c in cells) / len(cells):.2f}"
                    if all(c is not None for c in cells) else "-")
            lines.append(f"| {algo} | " + " | ".join(format_cell(c, error=error) for c in cells)
                         + f" | {mean} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def lodo_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: every task's leave-one-domain-out scores per trial (mean accuracy of the
    inner runs on the source they held out, %), the chosen trial marked; "" without inner
    runs."""
    scores = lodo_rows(rows)
    if not scores:
        return ""
    lines = ["| dataset | modalities | algorithm | target | trial | held-out sources | score | "
             "chosen |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s['dataset']} | {s['modalities']} | {s['algorithm']} | {s['target']} | "
              f"{s['trial']} | {' '.join(s['held_out'])} | {100 * s['score']:.2f} | "
              f"{'yes' if s['chosen'] else ''} |" for s in scores]
    return "\n".join(lines) + "\n"


def _lodo_text(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`lodo_table` with its title ("" without inner runs)."""
    table = lodo_table(rows)
    if not table:
        return ""
    return ("Leave-one-domain-out scores of every trial (mean accuracy (%) of its inner runs on "
            "the source domain each held out; each inner run's epoch chosen on its own source "
            "validation):\n\n" + table)


def _spread_words(seeds: int, error: str = "std") -> str:
    spread = "sample std" if error == "std" else "standard error (sample std / sqrt(n))"
    return "1 seed, no spread" if seeds == 1 else f"mean ± {spread} over {seeds} seeds"


def write_report(root: str | Path, experiment: dict[str, Any], rows: Sequence[dict[str, Any]],
                 elapsed_s: float, skipped: int = 0, sections: Sequence[str] = ()) -> Path:
    """``report.md`` (and ``accuracy.png``) of an experiment from its rows.

    Args:
        root: The experiment directory.
        experiment: Its configuration (``ExperimentConfig.to_dict()``), shown at the end.
        rows: Rows of every finished run (:func:`merdg.experiments.results.load_rows`).
        elapsed_s: Wall time of this invocation.
        skipped: Runs reused from an earlier invocation.
        sections: Markdown lines (e.g. the diagnostics) placed before the configuration.
    """
    out = Path(root)
    reference = experiment.get("reference") or DEFAULT_REFERENCE
    error = check_error(experiment.get("error") or "std")
    view = ExperimentView(rows, "source_val", reference, error)
    evaluators = report_evaluators(experiment["base"].get("evaluations"))
    main, _, _ = tables_text(rows, "source_val", error=error)
    headlines = [h for h in (e.headline(view) for e in evaluators) if h]
    paired = paired_section(rows, reference, words=True)
    lodo = _lodo_text(rows)
    oracle, _, _ = tables_text(rows, "oracle", error=error)
    plot = plot_accuracy(rows, out / OUTPUT_FILES["plot"], error=error)
    n_runs = len({r["path"] for r in rows})
    dataset = ", ".join(experiment.get("datasets") or [experiment["base"]["dataset"]])
    kind = "sweep" if experiment.get("trials", 0) > 0 else "bench"
    report = [
        f"# merdg {kind}: {dataset}", "",
        f"{count(n_runs, 'run')} ({skipped} reused from an earlier invocation), "
        f"{elapsed_s / 60:.1f} min of wall time in this invocation. Cells: "
        f"{_spread_words(experiment.get('seeds', 1), error)}; `avg` averages the targets "
        "within a seed first.", "",
        main, datasets_table(rows, "source_val", error), *([lodo] if lodo else []), *headlines,
        *_near_chance_section(rows),
        "## Paired differences", "",
        f"Each algorithm minus {reference} on the same (column, seed) pairs (the runs of the "
        "tables above). The 95% interval is a paired t-interval over the pairs (with few pairs "
        "the percentile bootstrap, also shown, is too narrow); a difference is beyond noise "
        "when its t-interval excludes 0.", "",
        paired or "Nothing to compare: every table holds one algorithm.\n",
    ]
    for evaluator in evaluators:
        report += evaluator.report(view)
    report += [oracle,
               "The oracle rule selects each run's epoch on the target domain, as the official "
               "MER-DG code logs it; it is shown for comparison with published numbers, not as "
               "a result. Every rule side by side:", "", rules_table(rows, error)]
    report += _epoch_section(rows)
    report += ["Wall time of one run (training and every evaluation):", "", _time_table(rows)]
    if plot is not None:
        report += [f"![accuracy]({plot.name})", ""]
    report += list(sections)
    report += ["## Configuration", "", "```json", json.dumps(experiment, indent=2,
                                                             sort_keys=True), "```", ""]
    path = out / OUTPUT_FILES["report"]
    path.write_text("\n".join(report))
    return path


# what a table's row of panels plots: closed set, and open set (MOOSA, arXiv 2407.01518)
PANEL_METRICS = {"closed": (("val_acc", "source-validation accuracy"),
                            ("target_acc", "target accuracy")),
                 "open": (("h_score", "target H-score"),
                          ("known_acc", "known-class accuracy (rejections wrong)"),
                          ("unknown_acc", "unknown-class accuracy (share rejected)"))}


def accuracy_panels(rows: Sequence[dict[str, Any]], rule: str = "source_val"
                    ) -> list[list[Panel]]:
    """The panels of ``accuracy.png``: one row per (dataset, settings) table, the metrics of
    :data:`PANEL_METRICS` (open-set tables: the H-score, known- and unknown-class accuracy, the
    open-set table's headline; others: source-validation and target accuracy)."""
    per_metric: dict[str, dict] = {}
    keys = sorted(build_tables(rows, rule), key=table_order)
    out = []
    for key in keys:
        label, _ = setting_label(key[1])
        kind = "open" if "open-set" in label else "closed"
        panels = []
        for metric, words in PANEL_METRICS[kind]:
            if metric not in per_metric:
                per_metric[metric] = build_tables(rows, rule, metric)
            cells = per_metric[metric].get(key)
            if cells:
                unit = "H-score (%)" if metric == "h_score" else "accuracy (%)"
                panels.append(Panel(f"{table_heading(key, keys)}: {words}", cells, unit))
        if panels:
            out.append(panels)
    return out


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | Path,
                  rule: str = "source_val", error: str = "std") -> Path | None:
    """``accuracy.png``: :func:`accuracy_panels` as bars (mean ± ``error``, n = 1 as points;
    :func:`merdg.experiments.plots.figure_accuracy`); None (with a printed note) when
    matplotlib is not installed."""
    title = f"Epochs chosen by {SELECTION_RULES[rule].split(' (')[0]}"
    return plot_accuracy_panels(accuracy_panels(rows, rule), path, check_error(error), title)


def _near_chance_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Report lines flagging encoders whose probe is within noise of chance ([] when none)."""
    lines = near_chance_lines([r for r in rows if r["selection"] == "source_val"])
    if not lines:
        return []
    return ["**Warning: encoders that learned nothing measurable** (one-sided exact binomial "
            "test of the linear probe's source-validation accuracy against chance, level "
            "0.01; docs/manifest.md):", "", *lines, ""]


def _epoch_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Report lines: what one epoch is, per column (the balanced sampler's plan)."""
    seen: dict[tuple[str, str, str], set[tuple[int, str]]] = defaultdict(set)
    for r in rows:
        if r["selection"] == "source_val" and "steps_per_epoch" in r:
            seen[(r["modalities"], r["algorithm"], r["column"])].add(
                (r["steps_per_epoch"], r["seen_per_epoch"]))
    if not seen:
        return []
    lines = ["| modalities | algorithm | column | steps per epoch | samples per source domain "
             "and epoch |", "|---|---|---|---|---|"]
    for (mods, algo, column), plans in sorted(seen.items()):
        for steps, per_domain in sorted(plans):
            domains = ", ".join(f"{d} {n}" for d, n in json.loads(per_domain).items())
            lines.append(f"| {mods} | {algo} | {column} | {steps} | {domains} |")
    return ["What one epoch is (the balanced sampler takes an equal share of every batch from "
            "each source domain, so the smallest source domain sets the number of steps):", "",
            "\n".join(lines) + "\n"]


def _time_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: mean ± std wall time of one run (all its epochs and evaluations), seconds."""
    lines = ["| modalities | algorithm | runs | seconds per run |", "|---|---|---|---|"]
    for (mods, algo), cell in time_cells(rows).items():
        lines.append(f"| {mods} | {algo} | {cell.n} | {cell.mean:.1f} ± {cell.std:.1f} |")
    return "\n".join(lines) + "\n"
