"""``merdg bench``: every algorithm x modality set x target x seed, then tables and report."""

from __future__ import annotations

import argparse

from merdg.cli.options import (
    add_experiment_options,
    add_launcher_args,
    add_run_options,
    add_threads_arg,
    apply_threads,
    experiment_base,
    experiment_settings,
    launcher_options,
    split_items,
)
from merdg.words import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="compare algorithms under leave-one-domain-out",
                       description="Run every algorithm x modality set x (sources -> target) "
                       "x seed (runs in OUT/runs/<modalities>/<algorithm>/<target>/seed<k>, "
                       "single-source runs in .../<source>-to-<target>/seed<k>; with "
                       "--datasets, OUT/<dataset>/runs/...), then write table.md, table.tex, "
                       "cells.csv, results.csv, report.md and accuracy.png to --out. Run the "
                       "same command again to resume.")
    add_experiment_options(p, out_required=False)
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="runs per task, seeds 0 to N-1 (DomainBed's --n_trials)")
    add_diagnose_arg(p)
    add_run_options(p, axes=False, required={"dataset": "required unless --datasets"})
    add_launcher_args(p)
    add_threads_arg(p)
    p.set_defaults(func=run)


def add_diagnose_arg(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--diagnose", type=int, nargs="?", const=1, default=default,
                        metavar="SEEDS",
                        help="also run `merdg diagnose` on the first SEEDS seeds (1 if SEEDS is "
                        "omitted, 0: none) of every modality set and target, saving those runs' "
                        "weights, and link the results from the report (docs/diagnostics.md)")


def experiment_config(args: argparse.Namespace):
    """The :class:`~merdg.experiments.plan.ExperimentConfig` of the command line."""
    from merdg.experiments.plan import ExperimentConfig

    base = experiment_base(args)
    default_out = "bench-" + "-".join(split_items(args.datasets) or [base.dataset])
    return ExperimentConfig(base=base, out_dir=args.out or default_out,
                            seeds=args.seeds, diagnose_seeds=args.diagnose, layout="named",
                            **experiment_settings(args))


def print_result(result, command: str) -> int:
    """Tables, the report's path and failures; the exit status (1 if some runs failed or
    did not finish)."""
    if result.tables is not None:
        print(result.tables["markdown"])
        if result.tables["console"]:
            print(result.tables["console"])
    if result.report is not None:
        print(f"report: {result.report}  ({result.elapsed_s / 60:.1f} min)")
    evaluated = sum(len(r.evaluated) for r in result.reports)
    if evaluated:
        print(f"{command}: {count(evaluated, 'finished run')} evaluated without training")
    for phase, report in zip(("jobs", "retrain jobs"), result.reports):
        if report.failed:
            print(f"{command}: {phase}: {report.summary()}\nfailed (finished runs are kept; run "
                  f"the command again to retry):\n{report.failures()}")
    if result.unfinished:
        verb = "is" if result.unfinished == 1 else "are"
        print(f"{command}: {count(result.unfinished, 'run or task', 'runs or tasks')} {verb} not "
              "finished yet (submitted, running elsewhere, or waiting for their search); run the "
              "command again later")
    return 1 if result.failed or result.unfinished else 0


def run(args: argparse.Namespace) -> int:
    from merdg.experiments.runner import run_experiment

    apply_threads(args)
    experiment = experiment_config(args)
    result = run_experiment(experiment, launcher_options(args, experiment.base.device),
                            overwrite=args.overwrite)
    return print_result(result, "merdg bench")
