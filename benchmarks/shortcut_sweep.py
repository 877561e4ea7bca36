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

from merdg.experiments.report import _fmt, aggregate
from merdg.experiments.runner import BenchConfig, run_bench


def probe_average(rows: list[dict], key: tuple[str, str]) -> tuple[float, float, int]:
    """Mean over modalities of each modality's avg probe accuracy (mean, std over seeds, n)."""
    modalities = sorted({k.split("/", 1)[1] for r in rows for k in r
                         if k.startswith("target_probe_acc/")})
    per_seed = []
    for m in modalities:
        table = aggregate(rows, "source_val", f"target_probe_acc/{m}")
        per_seed.append(table[key]["avg"])
    means = [c[0] for c in per_seed]
    stds = [c[1] for c in per_seed]
    return float(np.mean(means)), float(np.mean(stds)), per_seed[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        bench = BenchConfig(dataset="synthetic", algorithms=algorithms, seeds=args.seeds,
                            out_dir=str(Path(args.out, f"strength{strength:g}")),
                            dataset_options={"shortcut_strength": strength},
                            hparams=json.loads(args.hparams))
        rows = run_bench(bench, progress=False)["rows"]
        val = aggregate(rows, "source_val", "val_acc")
        tgt = aggregate(rows, "source_val", "target_acc")
        oracle = aggregate(rows, "oracle", "target_acc")
        for key in sorted(tgt):
            lines.append(f"| {strength:g} | {key[1]} | {_fmt(val[key]['avg'])} | "
                         f"{_fmt(tgt[key]['avg'])} | {_fmt(oracle[key]['avg'])} | "
                         f"{_fmt(probe_average(rows, key))} |")
        print(f"strength {strength:g} done ({(time.perf_counter() - start) / 60:.1f} min)",
              flush=True)
    print("\n".join(lines))
    print(f"\ntotal {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
