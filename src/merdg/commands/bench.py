"""``merdg bench`` and ``merdg demo``: a whole comparison, then tables, report and plot."""

from __future__ import annotations

import argparse

from merdg.commands._common import (
    add_dataset_args,
    add_launcher_args,
    add_threads_arg,
    add_training_args,
    apply_threads,
    launcher_options,
    parse_hparams,
    parse_options,
    split_list,
    training_options,
)

DEMO_OUT = "merdg-demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="compare algorithms under leave-one-domain-out",
                       description="Run every algorithm x modality set x target x seed, then "
                       "write results.csv, table.md, report.md and accuracy.png to --out.")
    add_dataset_args(p)
    p.add_argument("--algorithms", default="ERM,MERDG", help="comma-separated algorithm names")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    p.add_argument("--targets", help="comma-separated target domains (default: every domain)")
    p.add_argument("--modality-sets", nargs="+", metavar="A,B",
                   help="modality sets to compare, e.g. inertial,skeleton inertial,skeleton,depth"
                   " (default: the dataset's BENCH_MODALITY_SETS, else all modalities together)")
    p.add_argument("--out", default=None, help="output directory (default: bench-<dataset>)")
    add_diagnose_arg(p)
    add_training_args(p)
    add_launcher_args(p)
    p.set_defaults(func=run)

    d = sub.add_parser("demo", help="ERM vs MER-DG on the built-in synthetic benchmark (CPU, "
                       "a few minutes)",
                       description="`merdg bench` on the built-in synthetic benchmark with its "
                       "defaults: ERM and MERDG, every target domain, 3 seeds, and diagnostics "
                       "of seed 0.")
    d.add_argument("--out", default=DEMO_OUT, help=f"output directory (default: {DEMO_OUT})")
    d.add_argument("--seeds", type=int, default=3)
    add_diagnose_arg(d, default=1)  # about 1 of the demo's 2.5 minutes (docs/diagnostics.md)
    add_threads_arg(d)
    d.set_defaults(func=run_demo)


def add_diagnose_arg(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--diagnose", type=int, nargs="?", const=1, default=default,
                        metavar="SEEDS",
                        help="also run `merdg diagnose` on the first SEEDS seeds (1 if SEEDS is "
                        "omitted) of every modality set and target, saving those runs' weights, "
                        f"and link the results from the report (default {default}; 0 disables; "
                        "docs/diagnostics.md)")


def _print_result(result: dict) -> None:
    print(result["table"])
    print(f"report: {result['report']}  ({result['elapsed_s'] / 60:.1f} min)")


def run(args: argparse.Namespace) -> int:
    from merdg.bench import BenchConfig, parse_modality_sets, run_bench

    apply_threads(args)
    bench = BenchConfig(
        dataset=args.dataset, algorithms=split_list(args.algorithms), seeds=args.seeds,
        out_dir=args.out or f"bench-{args.dataset}", targets=split_list(args.targets),
        modality_sets=parse_modality_sets(args.modality_sets),
        hparams=parse_hparams(args.hparams), dataset_options=parse_options(args.dataset_option),
        data_root=args.data_root, diagnose_seeds=args.diagnose, **training_options(args))
    _print_result(run_bench(bench, launcher=launcher_options(args)))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from merdg.bench import BenchConfig, run_bench

    apply_threads(args)
    bench = BenchConfig(dataset="synthetic", algorithms=["ERM", "MERDG"], seeds=args.seeds,
                        out_dir=args.out, diagnose_seeds=args.diagnose)
    _print_result(run_bench(bench))
    return 0
