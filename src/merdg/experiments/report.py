"""What an experiment directory holds besides its runs: tables, CSVs, a plot and ``report.md``.

Written by ``merdg bench`` and ``merdg sweep`` after their runs, and (the tables) by ``merdg
collect``, all from :mod:`merdg.experiments.results`:

- ``table.md``: the main table(s): target accuracy under source-validation selection (plus the
  chosen trial of each cell when there was a search; multi-source, single-source and open-set
  runs in separate tables), the H-score tables of open-set runs, and the paired differences of
  every algorithm against the reference (``--reference``, default ERM); ``table.tex``: the
  main tables in LaTeX;
- ``cells.csv``: every cell (fractions); ``results.csv``: one row per (run, selection rule);
- ``robustness.md`` and ``robustness.png`` (runs with ``--corruptions`` only): the robustness
  table (clean and mean corruption accuracy, their ratio, per severity and modality) and the
  accuracy against corruption severity (``docs/robustness.md``);
- ``report.md`` and ``accuracy.png`` (experiments only): every table of the comparison, the
  paired differences in words, the selective-prediction (AURC, AUROC, FPR@95TPR, ECE) and
  open-set tables, the oracle numbers (labeled), missing-modality and timing tables,
  diagnostics, configuration;
- ``experiment.json``: the experiment's configuration and versions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merdg.evaluation.statistics import paired_difference_markdown, paired_differences
from merdg.experiments.results import (
    CORRUPTION_ACC,
    OPEN_SET_METRICS,
    SELECTIVE_METRICS,
    average_tables,
    build_tables,
    cells_csv,
    format_trial,
    has_search,
    latex_table,
    load_rows,
    lodo_table,
    markdown_table,
    missing_modality_table,
    near_chance_lines,
    paired_tables,
    plot_accuracy,
    plot_robustness,
    probe_table,
    robustness_rule,
    robustness_table,
    rows_to_csv,
    setting_label,
    table_order,
    table_title,
    time_table,
    training_table,
    trial_rules_of,
)
from merdg.experiments.search import TRIAL_RULES
from merdg.run.selection import SELECTION_RULES

__all__ = ["DEFAULT_REFERENCE", "EXPERIMENT_FILE", "OUTPUT_FILES", "experiment_reference",
           "paired_section", "tables_text", "write_report", "write_tables"]

DEFAULT_REFERENCE = "ERM"
H_SCORE = "H-score (unknowns rejected below the source-validation threshold)"

EXPERIMENT_FILE = "experiment.json"
OUTPUT_FILES = {"table": "table.md", "latex": "table.tex", "cells": "cells.csv",
                "rows": "results.csv", "report": "report.md", "plot": "accuracy.png",
                "robustness": "robustness.md", "robustness_plot": "robustness.png"}


def tables_text(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                metric: str = "target_acc", what: str = "target accuracy"
                ) -> tuple[str, str, dict]:
    """Markdown and LaTeX of the main tables of ``rows``, and the tables themselves."""
    tables = build_tables(rows, rule, metric)
    search = has_search(rows)
    per_setting: dict[tuple[str, str], int] = defaultdict(int)
    for dataset, settings in tables:
        per_setting[(dataset, setting_label(settings)[0])] += 1
    md, tex = [], []
    for (dataset, settings), table in sorted(tables.items(), key=lambda kv: table_order(kv[0])):
        label, rest = setting_label(settings)
        measured = what
        if metric == "target_acc" and "open-set" in label:
            measured = f"{what} on the known classes (no rejection)"
        trial_rules = trial_rules_of(table)
        single_run = all(c.n == 1 for cells in table.values() for c in cells.values())
        title = table_title(dataset, rule, search,
                            rest if per_setting[(dataset, label)] > 1 else None, measured,
                            label, trial_rules, single_run)
        md.append(markdown_table(table, title))
        if search:
            chosen = " or ".join(TRIAL_RULES[r] for r in trial_rules)
            md.append(markdown_table(table, f"chosen trial (hparams_seed; {chosen}) and its "
                                     "number of runs", format_trial))
        tex.append(latex_table(table, title))
    return "\n".join(md), "\n".join(tex), tables


def experiment_reference(root: str | Path) -> str:
    """The reference algorithm recorded in ``root/experiment.json`` (``--reference`` of the
    bench or sweep), else ERM."""
    path = Path(root) / EXPERIMENT_FILE
    if not path.is_file():
        return DEFAULT_REFERENCE
    try:
        experiment = json.loads(path.read_text(encoding="utf-8")).get("experiment", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err})") from err
    return experiment.get("reference") or DEFAULT_REFERENCE


def _paired_title(key: tuple[str, str], metric_words: str, reference: str,
                  show_settings: bool) -> str:
    dataset, settings = key
    label, rest = setting_label(settings)
    where = f"{dataset} ({label})" if label else dataset
    extra = f"; settings {rest}" if show_settings else ""
    return (f"**{where}: paired difference in {metric_words} against {reference} "
            "(percentage points) over matched (column, seed) pairs of the table's runs; 95% "
            f"paired t-interval (verdict) and paired bootstrap interval{extra}**")


def paired_section(rows: Sequence[dict[str, Any]], reference: str, rule: str = "source_val",
                   words: bool = False) -> str:
    """Markdown of the paired-difference tables (target accuracy, and H-score for open-set
    tables); ``words`` adds the sentences saying which differences are beyond noise. Tables
    with a single algorithm have nothing to compare and are left out."""
    parts = []
    for metric, metric_words in (("target_acc", "target accuracy"), ("h_score", "H-score")):
        tables = paired_tables(rows, reference, metric, rule)
        labels = [(t.key[0], setting_label(t.key[1])[0]) for t in tables]
        for table, label in zip(tables, labels):
            if not table.results and not table.note:
                continue
            title = _paired_title(table.key, metric_words, reference, labels.count(label) > 1)
            parts += [title, "", table.markdown()]
            if words:
                parts += [table.words(metric_words)]
    return "\n".join(parts)


def robustness_text(rows: Sequence[dict[str, Any]], rule: str = "source_val",
                    reference: str = DEFAULT_REFERENCE) -> str:
    """The robustness table of ``rows`` with its title ("" without corruption results), and
    the paired difference of each algorithm's mean corruption accuracy against ``reference``
    over matched (target, seed) pairs (:mod:`merdg.evaluation.statistics`; when ``reference``
    ran and no hparam search multiplies the runs of a pair)."""
    rule = robustness_rule(rows, rule)
    table = robustness_table(rows, rule)
    if not table:
        return ""
    epochs = SELECTION_RULES[rule]
    text = (f"**Target accuracy (%) under corruptions (--corruptions), mean ± std over "
            f"replicates (targets averaged within a replicate); epochs: {epochs}. `corrupted "
            "(mean)` averages every (modality, corruption, severity) evaluated, `missing` "
            "once; `% of clean` is that mean over the clean accuracy of the same run; "
            "`severity s` averages the graded corruptions at s.**\n\n" + table)
    evaluated = [r for r in rows if r.get(CORRUPTION_ACC) is not None]
    algorithms = {r["algorithm"] for r in evaluated}
    if reference in algorithms and len(algorithms) > 1 and not has_search(rows):
        differences = paired_differences(evaluated, CORRUPTION_ACC, reference, rule)
        text += (f"\nPaired difference in mean corruption accuracy (percentage points) "
                 f"against {reference} over matched (target, seed) pairs; verdict by the 95% "
                 "paired t-interval:\n\n" + paired_difference_markdown(differences))
    return text


def write_tables(root: str | Path, out_dir: str | Path | None = None,
                 rule: str = "source_val", reference: str | None = None) -> dict[str, Any]:
    """Write ``table.md``, ``table.tex``, ``cells.csv`` and ``results.csv`` from every finished
    run under ``root``, and ``robustness.md`` and ``robustness.png`` when runs evaluated
    corruptions.

    Args:
        root: The experiment (or any) directory.
        out_dir: Where to write (default: ``root``).
        rule: Epoch selection within each run.
        reference: The algorithm of the paired comparison (None: the one recorded in
            ``root/experiment.json``, else ERM; a table without it says so in one line).

    Returns:
        ``{"markdown": text, "robustness": text ("" without corruption results), "paths":
        [...], "tables": ..., "rows": rows}``.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        RuntimeError: No finished run under ``root``.
        ValueError: A record that is not a merdg epoch record (naming its file).
        ValueError: ``reference`` was given and no run has that algorithm.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root} is not a directory (a bench or sweep directory, or a "
                                "folder of run directories)")
    rows = load_rows(root)
    if not rows:
        raise RuntimeError(f"no finished runs (records.jsonl next to a done marker) under {root}")
    if reference is not None and reference not in {r["algorithm"] for r in rows}:
        raise ValueError(f"--reference {reference}: no finished run of that algorithm under "
                         f"{root} (algorithms: {sorted({r['algorithm'] for r in rows})})")
    reference = reference or experiment_reference(root)
    markdown, tex, tables = tables_text(rows, rule)
    h_score, _, _ = tables_text(rows, rule, "h_score", H_SCORE)
    lodo = lodo_table(rows)
    if lodo:
        markdown += ("\nLeave-one-domain-out scores of every trial (mean accuracy (%) of its "
                     "inner runs on the source domain each held out; each inner run's epoch "
                     "chosen on its own source validation):\n\n" + lodo)
    markdown = "\n".join(p for p in (markdown, h_score, paired_section(rows, reference, rule))
                         if p)
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / OUTPUT_FILES[k] for k in ("table", "latex", "cells", "rows")]
    paths[0].write_text(markdown)
    paths[1].write_text(tex)
    paths[2].write_text(cells_csv(tables))
    paths[3].write_text(rows_to_csv(rows))
    robustness = robustness_text(rows, rule, reference)
    if robustness:
        paths.append(out / OUTPUT_FILES["robustness"])
        paths[-1].write_text(robustness)
        plot = plot_robustness(rows, out / OUTPUT_FILES["robustness_plot"],
                               robustness_rule(rows, rule))
        paths += [plot] if plot is not None else []
    return {"markdown": markdown, "robustness": robustness, "paths": paths, "tables": tables,
            "rows": rows}


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
    h_score, _, _ = tables_text(rows, "source_val", "h_score", H_SCORE)
    reference = experiment.get("reference") or DEFAULT_REFERENCE
    paired = paired_section(rows, reference, words=True)
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
        main, *([h_score] if h_score else []), *_near_chance_section(rows),
        "## Paired differences", "",
        f"Each algorithm minus {reference} on the same (column, seed) pairs (the runs of the "
        "tables above). The 95% interval is a paired t-interval over the pairs (with few pairs "
        "the percentile bootstrap, also shown, is too narrow); a difference is beyond noise "
        "when its t-interval excludes 0.", "",
        paired or "Nothing to compare: every table holds one algorithm.\n",
        *_selective_section(rows), *_open_set_section(rows),
        "Same selected epochs, source-validation accuracy:", "", val,
        "Unimodal accuracy on the target (linear probes on each encoder's detached embedding):",
        "", probe_table(rows), oracle,
        "The oracle rule selects each run's epoch on the target domain, as the official MER-DG "
        "code logs it; it is shown for comparison with published numbers, not as a result.", "",
    ]
    report += _missing_section(rows, experiment["base"].get("eval_missing", "none"))
    report += _robustness_section(rows, out, reference)
    report += _epoch_section(rows)
    report += ["Wall time of one run (training and every evaluation):", "", time_table(rows)]
    if plot is not None:
        report += [f"![accuracy]({plot.name})", ""]
    report += list(sections)
    report += ["## Configuration", "", "```json", json.dumps(experiment, indent=2,
                                                             sort_keys=True), "```", ""]
    path = out / OUTPUT_FILES["report"]
    path.write_text("\n".join(report))
    return path


def _near_chance_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Report lines flagging encoders whose probe is within noise of chance ([] when none)."""
    lines = near_chance_lines(rows)
    if not lines:
        return []
    return ["**Warning: encoders that learned nothing measurable** (one-sided exact binomial "
            "test of the linear probe's source-validation accuracy against chance, level "
            "0.01; docs/manifest.md):", "", *lines, ""]


def _epoch_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Report lines: what one epoch is, per column (the balanced sampler's plan)."""
    table = training_table(rows)
    if not table:
        return []
    return ["What one epoch is (the balanced sampler takes an equal share of every batch from "
            "each source domain, so the smallest source domain sets the number of steps):", "",
            table]


def _titled(tables: dict[tuple[str, str], str], what: str) -> list[str]:
    lines = []
    labels = [(dataset, setting_label(settings)[0]) for dataset, settings in tables]
    for ((dataset, settings), table), key in zip(tables.items(), labels):
        label, rest = setting_label(settings)
        where = f"{dataset} ({label})" if label else dataset
        settings_words = f"; settings {rest}" if labels.count(key) > 1 else ""
        lines += [f"**{where}: {what}{settings_words}**", "", table]
    return lines


def _selective_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Report lines: selective prediction and calibration on the target (averaged over the
    table's columns, as ``avg``)."""
    tables = average_tables(rows, SELECTIVE_METRICS, ["AURC (MSP)", "AURC (energy)",
                                                      "AUROC (MSP)", "AUROC (energy)",
                                                      "FPR@95TPR (MSP)", "FPR@95TPR (energy)",
                                                      "ECE"])
    if not tables:
        return []
    return ["## Selective prediction on the target", "",
            "Misclassification detection from the fused logits (a correct prediction is the "
            "positive class; docs/settings.md): AURC (lower is better), AUROC (higher), "
            "FPR@95TPR (lower), each with the maximum softmax probability (MSP) and the energy "
            "score, and the ECE (15 bins, lower), in % at the selected epochs, averaged over "
            "the table's columns (mean ± std over seeds; `(k of n)`: the metric is undefined "
            "on the other columns, e.g. AUROC when every prediction is right).", "",
            *_titled(tables, "selective prediction (%)")]


def _open_set_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Report lines: open-set metrics (H-score, known / unknown accuracy, and MOOSA's
    target-tuned H-score as a labeled oracle)."""
    metrics = [*OPEN_SET_METRICS[:3], "oracle_h_score"]
    tables = average_tables(rows, metrics, ["H-score", "known acc", "unknown acc",
                                            "H-score, target-tuned threshold (oracle)"])
    if not tables:
        return []
    return ["## Open set", "",
            "Unknown-class target samples are rejected when their MSP is below the threshold "
            "that accepts 95% of the source-validation samples; known acc counts a rejected "
            "known sample as wrong; the H-score is the harmonic mean of known and unknown "
            "accuracy (docs/settings.md). The last column picks the threshold on the target "
            "labels as MOOSA's script reports it: an oracle, for comparison with published "
            "numbers only.", "", *_titled(tables, "open-set metrics (%)")]


def _robustness_section(rows: Sequence[dict[str, Any]], out: Path,
                        reference: str = DEFAULT_REFERENCE) -> list[str]:
    """Report lines for the robustness table and figure (runs with corruptions only)."""
    text = robustness_text(rows, reference=reference)
    if not text:
        return []
    section = [text]
    if (out / OUTPUT_FILES["robustness_plot"]).exists():
        section += [f"![accuracy under corruptions]({OUTPUT_FILES['robustness_plot']})", ""]
    return section


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
