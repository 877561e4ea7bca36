"""What an experiment directory holds besides its runs: tables, CSVs, a plot and ``report.md``.

Written by ``merdg bench`` and ``merdg sweep`` after their runs, and (the tables) by ``merdg
collect``, all from :mod:`merdg.experiments.results`:

- ``table.md``: the main table(s): target accuracy under source-validation selection (plus the
  chosen trial of each cell when there was a search); ``table.tex``: the same in LaTeX;
- ``cells.csv``: every cell (fractions); ``results.csv``: one row per (run, selection rule);
- ``report.md`` and ``accuracy.png`` (experiments only): every table of the comparison, the
  oracle numbers (labeled), missing-modality and timing tables, diagnostics, configuration;
- ``experiment.json``: the experiment's configuration and versions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merdg.experiments.results import (
    build_tables,
    cells_csv,
    format_trial,
    has_search,
    latex_table,
    load_rows,
    lodo_table,
    markdown_table,
    missing_modality_table,
    plot_accuracy,
    probe_table,
    rows_to_csv,
    table_title,
    time_table,
    trial_rules_of,
)
from merdg.experiments.search import TRIAL_RULES
from merdg.run.selection import SELECTION_RULES

__all__ = ["EXPERIMENT_FILE", "OUTPUT_FILES", "tables_text", "write_report", "write_tables"]

EXPERIMENT_FILE = "experiment.json"
OUTPUT_FILES = {"table": "table.md", "latex": "table.tex", "cells": "cells.csv",
                "rows": "results.csv", "report": "report.md", "plot": "accuracy.png"}


def tables_text(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                metric: str = "target_acc", what: str = "target accuracy"
                ) -> tuple[str, str, dict]:
    """Markdown and LaTeX of the main tables of ``rows``, and the tables themselves."""
    tables = build_tables(rows, rule, metric)
    search = has_search(rows)
    per_dataset: dict[str, int] = defaultdict(int)
    for dataset, _ in tables:
        per_dataset[dataset] += 1
    md, tex = [], []
    for (dataset, settings), table in sorted(tables.items()):
        trial_rules = trial_rules_of(table)
        title = table_title(dataset, rule, search,
                            settings if per_dataset[dataset] > 1 else None, what, trial_rules)
        md.append(markdown_table(table, title))
        if search:
            chosen = " or ".join(TRIAL_RULES[r] for r in trial_rules)
            md.append(markdown_table(table, f"chosen trial (hparams_seed; {chosen}) and its "
                                     "number of runs", format_trial))
        tex.append(latex_table(table, title))
    return "\n".join(md), "\n".join(tex), tables


def write_tables(root: str | Path, out_dir: str | Path | None = None,
                 rule: str = "source_val") -> dict[str, Any]:
    """Write ``table.md``, ``table.tex``, ``cells.csv`` and ``results.csv`` from every finished
    run under ``root``.

    Returns:
        ``{"markdown": text, "paths": [...], "tables": ..., "rows": rows}``.

    Raises:
        RuntimeError: No finished run under ``root``.
    """
    rows = load_rows(root)
    if not rows:
        raise RuntimeError(f"no finished runs (records.jsonl next to a done marker) under {root}")
    markdown, tex, tables = tables_text(rows, rule)
    lodo = lodo_table(rows)
    if lodo:
        markdown += ("\nLeave-one-domain-out scores of every trial (mean accuracy (%) of its "
                     "inner runs on the source domain each held out; each inner run's epoch "
                     "chosen on its own source validation):\n\n" + lodo)
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / OUTPUT_FILES[k] for k in ("table", "latex", "cells", "rows")]
    paths[0].write_text(markdown)
    paths[1].write_text(tex)
    paths[2].write_text(cells_csv(tables))
    paths[3].write_text(rows_to_csv(rows))
    return {"markdown": markdown, "paths": paths, "tables": tables, "rows": rows}


def _spread_words(seeds: int) -> str:
    return "1 seed, no spread" if seeds == 1 else f"mean ± sample std over {seeds} seeds"


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
    main, _, _ = tables_text(rows, "source_val")
    lodo = lodo_table(rows)
    if lodo:
        main += ("\nLeave-one-domain-out scores of every trial (mean accuracy (%) of its inner "
                 "runs on the source domain each held out):\n\n" + lodo)
    val, _, _ = tables_text(rows, "source_val", "val_acc", "source-validation accuracy")
    oracle, _, _ = tables_text(rows, "oracle")
    plot = plot_accuracy(rows, out / OUTPUT_FILES["plot"])
    n_runs = len({r["path"] for r in rows})
    dataset = experiment["base"]["dataset"]
    kind = "sweep" if experiment.get("trials", 0) > 0 else "bench"
    report = [
        f"# merdg {kind}: {dataset}", "",
        f"{n_runs} runs ({skipped} reused from an earlier invocation), "
        f"{elapsed_s / 60:.1f} min of wall time in this invocation. Cells: "
        f"{_spread_words(experiment.get('seeds', 1))}; `avg` averages the targets within a "
        "seed first.", "",
        main, "Same selected epochs, source-validation accuracy:", "", val,
        "Unimodal accuracy on the target (linear probes on each encoder's detached embedding):",
        "", probe_table(rows), oracle,
        "The oracle rule selects each run's epoch on the target domain, as the official MER-DG "
        "code logs it; it is shown for comparison with published numbers, not as a result.", "",
    ]
    report += _missing_section(rows, experiment["base"].get("eval_missing", "none"))
    report += ["Wall time of one run (training and every evaluation):", "", time_table(rows)]
    if plot is not None:
        report += [f"![accuracy]({plot.name})", ""]
    report += list(sections)
    report += ["## Configuration", "", "```json", json.dumps(experiment, indent=2,
                                                             sort_keys=True), "```", ""]
    path = out / OUTPUT_FILES["report"]
    path.write_text("\n".join(report))
    return path


def _missing_section(rows: Sequence[dict[str, Any]], mode: str) -> list[str]:
    """Report lines for the missing-modality tables (``eval_missing`` runs only)."""
    rule = "source_val" if mode == "every" else "last"
    section = []
    for kind, how in (("missing", "zero-filled"), ("missing_translated", "imputed by the "
                                                   "method's cross-modal translation")):
        table = missing_modality_table(rows, rule, kind)
        if table:
            section += [f"Target accuracy (%) with one modality missing ({how}; epoch: "
                        f"{SELECTION_RULES[rule]}; targets averaged within a seed):", "", table]
    return section
