"""Compare training settings without touching the target: leave-one-SOURCE-domain-out.

For every outer target domain T, every other domain C in turn is a pseudo-target: a run trains
on the remaining domains (neither T nor C) and is scored on C. A setting's inner accuracy for
fold T is the mean over its pseudo-targets C. Domain T is never trained on, normalized with or
evaluated, so the inner accuracy of fold T may be used to choose a setting for fold T (nested
leave-one-domain-out, DomainBed's "leave-one-domain-out cross-validation").

    PYTHONPATH=src python benchmarks/inner_lodo.py --dataset utd-mhad --data-root DIR \\
        --modalities inertial,skeleton --out inner-lodo

Prints one markdown table (setting x outer fold, inner accuracy in %) and, per outer fold, the
setting it would select. Runs are resumable (a finished run directory is skipped).

This script compares a fixed list of named settings (it produced the table of docs/utd-mhad.md).
To choose random hparam trials the same way as part of a sweep, with the tables and their
rule recomputed by ``merdg collect``, use ``merdg sweep --selection lodo`` (docs/sweeps.md).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from merdg.datasets import build_dataset
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.selection import select_epoch
from merdg.run.training import train

# name: (algorithm, hparam overrides); MERDG defaults: lambda 3, loss on the 128-d projections
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "ERM": ("ERM", {}),
    "MERDG lambda=0.3": ("MERDG", {"mer_lambda": 0.3}),
    "MERDG lambda=1": ("MERDG", {"mer_lambda": 1.0}),
    "MERDG lambda=3 (default)": ("MERDG", {}),
    "MERDG lambda=10": ("MERDG", {"mer_lambda": 10.0}),
    "MERDG lambda=3 normalized_projection": ("MERDG", {"mer_target": "normalized_projection"}),
    "MERDG lambda=3 embedding": ("MERDG", {"mer_target": "embedding"}),
    "MERDG lambda=3 proj_dim=16": ("MERDG", {"proj_dim": 16}),
}


def inner_configs(args: argparse.Namespace, domains: list[str]) -> list[tuple[str, str, RunConfig]]:
    """(setting, outer target, config) for every setting x outer fold x pseudo-target x seed."""
    options = {"progress": False, **json.loads(args.dataset_options)}
    runs = []
    for name, (algorithm, hparams) in SETTINGS.items():
        for outer in domains:
            for pseudo in (d for d in domains if d != outer):
                sources = [d for d in domains if d not in (outer, pseudo)]
                for seed in range(args.seeds):
                    out = Path(args.out, "runs", name.replace(" ", "_"), outer, pseudo,
                               f"seed{seed}")
                    runs.append((name, outer, RunConfig(
                        dataset=args.dataset, target=pseudo, sources=sources,
                        algorithm=algorithm, modalities=args.modalities.split(","), seed=seed,
                        hparams=dict(hparams), data_root=args.data_root,
                        dataset_options=options, out_dir=str(out))))
    return runs


def _finished(config: RunConfig) -> bool:
    return RunDir(config.out_dir).finished(config)


def pseudo_target_acc(config: RunConfig) -> float:
    records = RunDir(config.out_dir).read_records()
    return select_epoch(records, "source_val")["target"]["acc"]


def table(results: dict[str, dict[str, list[float]]], domains: list[str]) -> str:
    lines = ["| setting | " + " | ".join(f"fold {d}" for d in domains) + " | mean |",
             "|---|" + "---|" * (len(domains) + 1)]
    for name, per_fold in results.items():
        means = [100 * float(np.mean(per_fold[d])) for d in domains]
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" for m in means)
                     + f" | {np.mean(means):.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="utd-mhad")
    p.add_argument("--data-root", required=True)
    p.add_argument("--modalities", default="inertial,skeleton")
    p.add_argument("--dataset-options", default="{}", help="JSON dataset constructor options")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default="inner-lodo")
    args = p.parse_args()
    domains = build_dataset(args.dataset, args.data_root, args.modalities.split(","),
                            progress=False, **json.loads(args.dataset_options)).domains
    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    runs = inner_configs(args, domains)
    for k, (name, outer, config) in enumerate(runs, 1):
        if not _finished(config):
            train(config, progress=False)
        results[name][outer].append(pseudo_target_acc(config))
        print(f"[{k}/{len(runs)}] {name} fold {outer} pseudo-target {config.target} "
              f"seed {config.seed}: {results[name][outer][-1]:.3f}", flush=True)
    print(table(results, domains))
    for outer in domains:
        best = max(results, key=lambda n: np.mean(results[n][outer]))
        print(f"fold {outer}: inner leave-one-source-domain-out selects {best!r}")


if __name__ == "__main__":
    main()
