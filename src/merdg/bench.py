"""``merdg bench``: every algorithm x modality set x target x seed, then tables, report and plot.

Each run writes to ``<out>/runs/<modalities>/<algorithm>/<target>/seed<k>/``. A run whose
directory already holds a ``done`` marker from the same config is skipped, so an interrupted
bench resumes where it stopped; a half-written run is redone.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from merdg.datasets import build_dataset
from merdg.model_selection import SELECTION_RULES
from merdg.records import write_json_atomic
from merdg.reporting import (
    aggregate,
    load_runs,
    markdown_table,
    missing_modality_table,
    plot_bench,
    probe_table,
    rows_to_csv,
    time_table,
)
from merdg.training import RunConfig, train

__all__ = ["BenchConfig", "run_bench", "write_report"]


@dataclass
class BenchConfig:
    """A comparison: algorithms x modality sets x targets x seeds on one dataset."""

    dataset: str
    algorithms: list[str]
    out_dir: str
    seeds: int = 3
    targets: list[str] | None = None
    modality_sets: list[list[str]] | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    device: str = "cpu"
    num_workers: int = 0
    holdout_fraction: float = 0.2
    precision: str = "fp32"
    eval_missing: str = "none"


def run_configs(bench: BenchConfig) -> list[RunConfig]:
    """The runs of a bench, in execution order."""
    dataset = build_dataset(bench.dataset, bench.data_root, None, **bench.dataset_options)
    targets = bench.targets or dataset.domains
    dataset.check_domains(targets)
    modality_sets = bench.modality_sets or [list(dataset.modalities)]
    configs = []
    for mods, algo, target, seed in itertools.product(modality_sets, bench.algorithms, targets,
                                                      range(bench.seeds)):
        out = Path(bench.out_dir, "runs", "+".join(sorted(mods)), algo, target, f"seed{seed}")
        configs.append(RunConfig(
            dataset=bench.dataset, target=target, algorithm=algo, modalities=sorted(mods),
            seed=seed, hparams=dict(bench.hparams), data_root=bench.data_root,
            dataset_options=dict(bench.dataset_options), holdout_fraction=bench.holdout_fraction,
            out_dir=str(out), device=bench.device, num_workers=bench.num_workers,
            precision=bench.precision, eval_missing=bench.eval_missing))
    return configs


def _finished(config: RunConfig) -> bool:
    out = Path(config.out_dir)
    if not (out / "done").exists():
        return False
    saved = json.loads((out / "config.json").read_text())["config"]
    return saved == config.to_dict()


def run_bench(bench: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every run of the bench, then write the report; returns its paths."""
    configs = run_configs(bench)
    start = time.perf_counter()
    skipped = 0
    for config in tqdm(configs, desc=f"bench {bench.dataset}", disable=not progress):
        if _finished(config):
            skipped += 1
            continue
        train(config, progress=False)
    elapsed = time.perf_counter() - start
    return write_report(bench, elapsed, skipped)


def write_report(bench: BenchConfig, elapsed_s: float, skipped: int = 0) -> dict[str, Any]:
    """Tables (markdown, CSV), a PNG plot and ``report.md`` from the records under ``out_dir``."""
    out = Path(bench.out_dir)
    rows = [r for r in load_runs(out / "runs") if r["algorithm"] in bench.algorithms]
    if not rows:
        raise RuntimeError(f"no finished runs under {out / 'runs'}")
    (out / "results.csv").write_text(rows_to_csv(rows))
    tables = {rule: markdown_table(aggregate(rows, rule), f"target accuracy (%), selection: "
                                   f"{SELECTION_RULES[rule]}")
              for rule in ("source_val", "oracle")}
    val_table = markdown_table(aggregate(rows, "source_val", "val_acc"),
                               "source-validation accuracy (%), same selected epochs")
    (out / "table.md").write_text(tables["source_val"])
    plot = plot_bench(rows, out / "accuracy.png")
    n_runs = len({r["path"] for r in rows})
    report = [
        f"# merdg bench: {bench.dataset}", "",
        f"{n_runs} runs ({skipped} reused from an earlier invocation), "
        f"{elapsed_s / 60:.1f} min of wall time in this invocation. Mean ± sample std over "
        f"{bench.seeds} seeds; `avg` averages the targets within a seed first.", "",
        tables["source_val"], val_table,
        "Unimodal accuracy on the target (linear probes on each encoder's detached embedding):", "",
        probe_table(rows), tables["oracle"],
        "The oracle rule selects each run's epoch on the target domain, as the official MER-DG "
        "code logs it; it is shown for comparison with published numbers, not as a result.", "",
    ]
    report += _missing_section(rows, bench.eval_missing)
    report += ["Wall time of one run (training and every evaluation):", "", time_table(rows)]
    if plot is not None:
        report += [f"![accuracy]({plot.name})", ""]
    report += ["## Configuration", "", "```json",
               json.dumps({k: v for k, v in bench.__dict__.items()}, indent=2, sort_keys=True),
               "```", ""]
    (out / "report.md").write_text("\n".join(report))
    write_json_atomic(out / "bench.json", {"bench": bench.__dict__, "elapsed_s": elapsed_s,
                                           "runs": n_runs, "skipped": skipped})
    return {"report": out / "report.md", "table": tables["source_val"], "rows": rows,
            "plot": plot, "elapsed_s": elapsed_s}


def _missing_section(rows: list[dict[str, Any]], mode: str) -> list[str]:
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


def parse_modality_sets(specs: Sequence[str] | None) -> list[list[str]] | None:
    """``["a,b", "a,b,c"]`` -> ``[["a", "b"], ["a", "b", "c"]]``."""
    if not specs:
        return None
    return [sorted(s.replace("+", ",").split(",")) for s in specs]
