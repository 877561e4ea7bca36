"""Result tables from run records alone (``records.jsonl`` files), as markdown, CSV and a plot.

Rows of :func:`load_runs` are one per (run, selection rule). :func:`aggregate` groups them into
cells ``(modalities, algorithm) x target`` with mean and sample std (ddof=1) over seeds. The
``avg`` column averages over targets within each seed first, then takes mean and std over
seeds.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merdg.model_selection import SELECTION_RULES, select_epoch
from merdg.records import read_jsonl

__all__ = ["aggregate", "load_runs", "markdown_table", "probe_table", "rows_to_csv", "plot_bench",
           "missing_modality_table", "time_table"]


def find_record_files(root: str | Path) -> list[Path]:
    """Every ``records.jsonl`` under ``root`` whose run finished (``done`` marker present)."""
    return sorted(p for p in Path(root).rglob("records.jsonl") if (p.parent / "done").exists())


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
        row["train_time_s"] = run_time_s
        rows.append(row)
    return rows


def load_runs(root: str | Path) -> list[dict[str, Any]]:
    """Rows for every finished run under ``root``."""
    rows = []
    for path in find_record_files(root):
        records = list(read_jsonl(path))
        if records:
            rows.extend(run_rows(records, str(path.parent)))
    return rows


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(rows: Iterable[dict[str, Any]], selection: str = "source_val",
              metric: str = "target_acc") -> dict[tuple[str, str], dict[str, Any]]:
    """``{(modalities, algorithm): {target: (mean, std, n), "avg": (mean, std, n)}}``."""
    by_key: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict))
    for r in rows:
        if r["selection"] == selection and metric in r:
            by_key[(r["modalities"], r["algorithm"])][r["target"]][r["seed"]] = r[metric]
    table = {}
    for key, per_target in by_key.items():
        cells: dict[str, Any] = {t: (*_mean_std(list(s.values())), len(s))
                                 for t, s in sorted(per_target.items())}
        seeds = set.intersection(*(set(s) for s in per_target.values()))
        if seeds:
            avg = [np.mean([per_target[t][s] for t in per_target]) for s in sorted(seeds)]
            cells["avg"] = (*_mean_std(avg), len(avg))
        table[key] = cells
    return table


def _fmt(cell: tuple[float, float, int] | None, scale: float = 100.0) -> str:
    if cell is None:
        return "-"
    mean, std, n = cell
    return f"{mean * scale:.2f} ± {std * scale:.2f}" if n > 1 else f"{mean * scale:.2f}"


def markdown_table(table: dict[tuple[str, str], dict[str, Any]], title: str = "") -> str:
    """Markdown: one row per (modalities, algorithm), columns = targets then avg (in %)."""
    targets = sorted({t for cells in table.values() for t in cells if t != "avg"})
    lines = [f"**{title}**", ""] if title else []
    lines.append("| modalities | algorithm | " + " | ".join(targets) + " | avg |")
    lines.append("|---|---|" + "---|" * (len(targets) + 1))
    for (mods, algo), cells in sorted(table.items()):
        vals = [_fmt(cells.get(t)) for t in [*targets, "avg"]]
        lines.append(f"| {mods} | {algo} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def probe_table(rows: Sequence[dict[str, Any]], selection: str = "source_val") -> str:
    """Markdown: average target accuracy of the fused model and of each modality's probe.

    Each cell is the ``avg`` of :func:`aggregate` (targets averaged within a seed, then mean ±
    std over seeds), so it is comparable with the main table's ``avg`` column.
    """
    modalities = sorted({k.split("/", 1)[1] for r in rows for k in r
                         if k.startswith("target_probe_acc/")})
    metrics = ["target_acc"] + [f"target_probe_acc/{m}" for m in modalities]
    tables = [aggregate(rows, selection, metric) for metric in metrics]
    lines = ["| modalities | algorithm | fused | " + " | ".join(modalities) + " |",
             "|---|---|---|" + "---|" * len(modalities)]
    for key in sorted(tables[0]):
        cells = [_fmt(t.get(key, {}).get("avg")) for t in tables]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def missing_modality_table(rows: Sequence[dict[str, Any]], selection: str = "source_val",
                           kind: str = "missing") -> str:
    """Markdown: average target accuracy with all modalities and with each one missing.

    Args:
        rows: Rows of :func:`load_runs`.
        selection: Selection rule of the epochs reported.
        kind: ``"missing"`` (zero-filled) or ``"missing_translated"`` (imputed by translation).

    Returns:
        The table, or "" when no row holds the metric. Cells as in :func:`probe_table`.
    """
    prefix = f"target_{kind}/"
    modalities = sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})
    if not modalities:
        return ""
    metrics = ["target_acc"] + [prefix + m for m in modalities]
    tables = [aggregate(rows, selection, metric) for metric in metrics]
    lines = ["| modalities | algorithm | all | " + " | ".join(f"no {m}" for m in modalities) + " |",
             "|---|---|---|" + "---|" * len(modalities)]
    for key in sorted(k for k in tables[1] if k in tables[0]):
        cells = [_fmt(t.get(key, {}).get("avg")) for t in tables]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def time_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: mean ± std wall time of one run (all its epochs and evaluations), in seconds."""
    times: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if "train_time_s" in r:
            times[(r["modalities"], r["algorithm"])][r["path"]] = r["train_time_s"]
    lines = ["| modalities | algorithm | runs | seconds per run |", "|---|---|---|---|"]
    for (mods, algo), per_run in sorted(times.items()):
        mean, std = _mean_std(list(per_run.values()))
        lines.append(f"| {mods} | {algo} | {len(per_run)} | {mean:.1f} ± {std:.1f} |")
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


def plot_bench(rows: Sequence[dict[str, Any]], path: str | Path,
               selection: str = "source_val") -> Path | None:
    """Bar chart of source-val and target accuracy per target and algorithm (mean ± std).

    Returns the path, or None (with a printed reason) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install 'merdg[plot]'); no plot written")
        return None
    val = aggregate(rows, selection, "val_acc")
    tgt = aggregate(rows, selection, "target_acc")
    keys = sorted(tgt)
    targets = sorted({t for cells in tgt.values() for t in cells if t != "avg"}) + ["avg"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(targets) * 2), 4), sharey=True)
    width = 0.8 / max(len(keys), 1)
    for ax, table, name in ((axes[0], val, "source validation"), (axes[1], tgt, "target")):
        for k, key in enumerate(keys):
            cells = table[key]
            means = [cells[t][0] * 100 if t in cells else math.nan for t in targets]
            stds = [cells[t][1] * 100 if t in cells else 0.0 for t in targets]
            xs = np.arange(len(targets)) + (k - (len(keys) - 1) / 2) * width
            ax.bar(xs, means, width, yerr=stds, capsize=2, label=" ".join(key))
        ax.set_xticks(np.arange(len(targets)), [f"target {t}" if t != "avg" else "avg"
                                                for t in targets], rotation=20)
        ax.set_title(f"{name} accuracy ({SELECTION_RULES[selection].split(' (')[0]})")
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
