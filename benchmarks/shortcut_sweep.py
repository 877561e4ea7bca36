"""ERM vs MER-DG on the built-in benchmark over several shortcut strengths (docs/synthetic.md).

Runs ``merdg bench`` on the synthetic dataset once per ``shortcut_strength`` (every target,
several seeds; finished runs are reused), then prints one markdown table: source-validation
accuracy, target accuracy and the encoders' unimodal probe accuracy on the target, each the
average over targets (mean ± std over seeds), with source-validation model selection.

Usage: OMP_NUM_THREADS=1 python benchmarks/shortcut_sweep.py [--out DIR] [--seeds 3]
       [--strengths 0,0.5,0.8,0.9,0.98] [--algorithms ERM,MERDG] [--hparams JSON]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from merdg.experiments.plan import ExperimentConfig
from merdg.experiments.report import format_cell
from merdg.experiments.results import Cell, build_tables
from merdg.experiments.runner import run_experiment
from merdg.run.config import RunConfig


def avg_cells(rows: list[dict], rule: str, metric: str) -> dict[tuple[str, str], Cell]:
    """``{(modalities, algorithm): avg cell}`` of one metric (one dataset, one settings)."""
    tables = build_tables(rows, rule, metric)
    return {key: cells["avg"] for table in tables.values() for key, cells in table.items()}


def probe_average(rows: list[dict], key: tuple[str, str]) -> Cell:
    """Mean over modalities of each modality's avg probe accuracy (mean, std over seeds)."""
    modalities = sorted({k.split("/", 1)[1] for r in rows for k in r
                         if k.startswith("target_probe_acc/")})
    cells = [avg_cells(rows, "source_val", f"target_probe_acc/{m}")[key] for m in modalities]
    std = float(np.mean([c.std for c in cells]))
    return Cell(float(np.mean([c.mean for c in cells])), std, std / np.sqrt(cells[0].n),
                cells[0].n, 0.0, None, ())


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-shortcut-sweep")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strengths", default="0,0.5,0.8,0.9,0.98")
    parser.add_argument("--algorithms", default="ERM,MERDG")
    parser.add_argument("--hparams", default="{}", help="JSON hparam overrides for every run")
    args = parser.parse_args()
    algorithms = args.algorithms.split(",")
    start = time.perf_counter()
    lines = ["| shortcut strength | algorithm | source val | target | target (oracle) | "
             "unimodal probes on target |", "|---|---|---|---|---|---|"]
    for strength in [float(s) for s in args.strengths.split(",")]:
        base = RunConfig(dataset="synthetic", dataset_options={"shortcut_strength": strength},
                         hparams=json.loads(args.hparams))
        bench = ExperimentConfig(base=base, algorithms=algorithms, seeds=args.seeds,
                                 out_dir=str(Path(args.out, f"strength{strength:g}")))
        rows = run_experiment(bench, progress=False).tables["rows"]
        val = avg_cells(rows, "source_val", "val_acc")
        tgt = avg_cells(rows, "source_val", "target_acc")
        oracle = avg_cells(rows, "oracle", "target_acc")
        for key in sorted(tgt):
            lines.append(f"| {strength:g} | {key[1]} | {format_cell(val[key])} | "
                         f"{format_cell(tgt[key])} | {format_cell(oracle[key])} | "
                         f"{format_cell(probe_average(rows, key))} |")
        print(f"strength {strength:g} done ({(time.perf_counter() - start) / 60:.1f} min)",
              flush=True)
    print("\n".join(lines))
    print(f"\ntotal {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
