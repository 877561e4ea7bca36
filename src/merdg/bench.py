"""``merdg bench``: every algorithm x modality set x target x seed, then tables, report and plot.

Each run writes to ``<out>/runs/<modalities>/<algorithm>/<target>/seed<k>/`` and is launched
as a job (:mod:`merdg.jobs`): a run whose directory already holds a ``done`` marker from the
same config is skipped, and a half-finished one resumes from its checkpoint, so an interrupted
bench continues where it stopped.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merdg.checkpoint import CHECKPOINT_NAME
from merdg.datasets import build_dataset
from merdg.jobs import Job
from merdg.launchers import LauncherOptions, launch
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
from merdg.training import RunConfig, config_identity

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
    diagnose_seeds: int = 0
    eval_missing: str = "none"


def run_configs(bench: BenchConfig) -> list[RunConfig]:
    """The runs of a bench, in execution order."""
    dataset = build_dataset(bench.dataset, bench.data_root, None, **bench.dataset_options)
    targets = bench.targets or dataset.domains
    dataset.check_domains(targets)
    modality_sets = (bench.modality_sets or [list(m) for m in dataset.BENCH_MODALITY_SETS]
                     or [list(dataset.modalities)])
    configs = []
    for mods, algo, target, seed in itertools.product(modality_sets, bench.algorithms, targets,
                                                      range(bench.seeds)):
        out = Path(bench.out_dir, "runs", "+".join(sorted(mods)), algo, target, f"seed{seed}")
        configs.append(RunConfig(
            dataset=bench.dataset, target=target, algorithm=algo, modalities=sorted(mods),
            seed=seed, hparams=dict(bench.hparams), data_root=bench.data_root,
            dataset_options=dict(bench.dataset_options), holdout_fraction=bench.holdout_fraction,
            out_dir=str(out), device=bench.device, num_workers=bench.num_workers,
            precision=bench.precision, save_model=seed < bench.diagnose_seeds,
            eval_missing=bench.eval_missing))
    return configs


def _discard_other_run(job: Job) -> None:
    """Bench directories are named by axes, not by config: when one holds a run of another
    config (e.g. the hparams changed), clear it so that the new config starts afresh."""
    config_file = job.path / "config.json"
    if not config_file.exists():
        return
    saved = json.loads(config_file.read_text())["config"]
    if config_identity(saved) == job.config.identity():
        return
    print(f"note: {job.path} holds a run of another config; starting it over")
    for name in ("records.jsonl", "summary.json", "done", CHECKPOINT_NAME, "failed", "config.json"):
        (job.path / name).unlink(missing_ok=True)


def _discard_run_without_weights(job: Job) -> None:
    """A finished run that diagnostics need but that did not save its weights is redone."""
    if job.config.save_model and (job.path / "done").exists() and not (
            job.path / "model.pt").exists():
        print(f"note: {job.path} has no saved weights for diagnostics; running it again")
        for name in ("records.jsonl", "summary.json", "done", CHECKPOINT_NAME, "failed"):
            (job.path / name).unlink(missing_ok=True)


def run_bench(bench: BenchConfig, progress: bool = True,
              launcher: LauncherOptions | None = None) -> dict[str, Any]:
    """Run (or resume) every run of the bench, then write the report; returns its paths.

    Finished runs are skipped and interrupted ones resume from their checkpoints
    (:mod:`merdg.jobs`); ``launcher`` runs them elsewhere (worker processes, Slurm).

    Raises:
        RuntimeError: Some runs failed (the others are kept), or are not finished yet.
    """
    jobs = [Job(config) for config in run_configs(bench)]
    for job in jobs:
        _discard_other_run(job)
        _discard_run_without_weights(job)
    start = time.perf_counter()
    report = launch(jobs, launcher, progress)
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} of {len(jobs)} runs failed (finished runs are "
                           f"kept; run the command again to retry):\n{report.failures()}")
    if report.submitted or report.busy:
        raise RuntimeError(f"{len(report.submitted) + len(report.busy)} runs are not finished "
                           "yet (submitted, or running elsewhere); run the command again later")
    diagnostics = _diagnose(bench, [job.config for job in jobs], progress)
    elapsed = time.perf_counter() - start
    return write_report(bench, elapsed, len(report.skipped), diagnostics)


def _diagnose(bench: BenchConfig, configs: list[RunConfig], progress: bool) -> list[str]:
    """``merdg diagnose`` on the first ``diagnose_seeds`` seeds; the report section's lines."""
    if bench.diagnose_seeds <= 0:
        return []
    from merdg.diagnostics.bench import diagnose_bench

    return diagnose_bench(bench, configs, progress)


def write_report(bench: BenchConfig, elapsed_s: float, skipped: int = 0,
                 sections: Sequence[str] = ()) -> dict[str, Any]:
    """Tables (markdown, CSV), a PNG plot and ``report.md`` from the records under ``out_dir``;
    ``sections`` (markdown lines, e.g. the diagnostics) go before the configuration."""
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
    report += list(sections)
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
