"""``merdg demo``: ERM vs MER-DG on the built-in synthetic benchmark (CPU, a few minutes)."""

from __future__ import annotations

import argparse

from merdg.cli.bench import add_diagnose_arg, print_result
from merdg.cli.options import add_threads_arg, apply_threads

DEMO_OUT = "merdg-demo"


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="ERM vs MER-DG on the built-in synthetic benchmark (CPU, "
                       "a few minutes)",
                       description="`merdg bench` on the built-in synthetic benchmark with its "
                       "defaults: ERM and MERDG, every target domain, 3 seeds, and diagnostics "
                       "of seed 0.")
    d.add_argument("--out", default=DEMO_OUT, metavar="DIR", help="output directory")
    d.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="runs per task, seeds 0 to N-1")
    add_diagnose_arg(d, default=1)  # about 1 of the demo's 2.5 minutes (docs/diagnostics.md)
    add_threads_arg(d)
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merdg.experiments.plan import ExperimentConfig
    from merdg.experiments.runner import run_experiment
    from merdg.run.config import RunConfig

    apply_threads(args)
    experiment = ExperimentConfig(base=RunConfig(dataset="synthetic"), out_dir=args.out,
                                  algorithms=["ERM", "MERDG"], seeds=args.seeds,
                                  diagnose_seeds=args.diagnose)
    return print_result(run_experiment(experiment), "merdg demo")
