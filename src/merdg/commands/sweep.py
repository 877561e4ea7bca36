"""``merdg sweep``: a resumable sweep under the fair search protocol; ``merdg collect``: tables."""

from __future__ import annotations

import argparse

from merdg.commands._common import (
    add_dataset_args,
    add_launcher_args,
    add_training_args,
    launcher_options,
    parse_hparams,
    parse_options,
    split_list,
    training_options,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run algorithms x modality sets x targets x hparam trials x seeds as jobs",
        description="Enumerate the sweep into jobs (one directory per config hash under "
        "OUT/jobs), run those not done yet, and write the tables (tables.md/.tex/.csv) to OUT. "
        "Run the same command again to resume an interrupted sweep. Protocol 'fair' "
        "(MMDG-Bench): the default plus --trials random hparam trials per task, the best on "
        "source validation retrained to --seeds runs; 'grid': every trial with every seed.")
    add_dataset_args(p)
    p.add_argument("--algorithms", default="ERM,MERDG", help="comma-separated algorithm names")
    p.add_argument("--modality-sets", nargs="+", metavar="A,B",
                   help="modality sets, e.g. video,audio video,audio,flow (default: all)")
    p.add_argument("--targets", help="comma-separated target domains (default: every domain)")
    p.add_argument("--trials", type=int, default=10,
                   help="random hparam trials besides the default (MMDG-Bench: 10)")
    p.add_argument("--seeds", type=int, default=3, help="runs reported per task (fair), or "
                   "seeds of every trial (grid)")
    p.add_argument("--protocol", default="fair", choices=["fair", "grid"])
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the source train/val split shared by every run")
    p.add_argument("--out", required=True, help="sweep directory")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their status only")
    add_training_args(p)
    add_launcher_args(p)
    p.set_defaults(func=run)

    c = sub.add_parser("collect", help="result tables from the records under a directory",
                       description="Read every finished run (records.jsonl + done) under DIR, "
                       "choose each task's hparam trial on source validation, and write "
                       "tables.md, tables.tex, tables.csv (cells) and runs.csv.")
    c.add_argument("dir", help="a sweep or bench directory (searched recursively)")
    c.add_argument("--out", help="where to write the tables (default: DIR)")
    c.add_argument("--rule", default="source_val", choices=["source_val", "oracle", "last"],
                   help="epoch selection within each run for the reported accuracy")
    c.set_defaults(func=run_collect)


def sweep_config(args: argparse.Namespace):
    from merdg.bench import parse_modality_sets
    from merdg.sweep import SweepConfig

    return SweepConfig(
        dataset=args.dataset, algorithms=split_list(args.algorithms), out_dir=args.out,
        modality_sets=parse_modality_sets(args.modality_sets), targets=split_list(args.targets),
        trials=args.trials, seeds=args.seeds, protocol=args.protocol, split_seed=args.split_seed,
        hparams=parse_hparams(args.hparams), dataset_options=parse_options(args.dataset_option),
        data_root=args.data_root, **training_options(args))


def print_plan(sweep) -> None:
    from merdg.sweep import check_names, plan

    check_names(sweep)
    jobs, waiting = plan(sweep)
    for job in jobs:
        print(f"{job.status():10s} {job.path.name}  {job.describe()}")
    counts = {}
    for job in jobs:
        counts[job.status()] = counts.get(job.status(), 0) + 1
    print(f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if waiting:
        print(f"{len(waiting)} tasks wait for their search to finish before their retrain jobs "
              "exist")


def run(args: argparse.Namespace) -> int:
    from merdg.sweep import run_sweep

    sweep = sweep_config(args)
    if args.dry_run:
        print_plan(sweep)
        return 0
    result = run_sweep(sweep, launcher_options(args))
    for phase, report in zip(("jobs", "retrain jobs"), result.reports):
        print(f"{phase}: {report.summary()}")
        if report.failed:
            print("failed:\n" + report.failures())
    if result.waiting:
        print(f"{len(result.waiting)} tasks still wait for their search jobs; run this command "
              "again once they are done")
    if result.tables is not None:
        print(result.tables["markdown"])
        print("tables: " + ", ".join(str(p) for p in result.tables["paths"]))
    failed = any(report.failed for report in result.reports)
    return 1 if failed else 0


def run_collect(args: argparse.Namespace) -> int:
    from merdg.collect import write_tables

    result = write_tables(args.dir, args.out, args.rule)
    print(result["markdown"])
    print("tables: " + ", ".join(str(p) for p in result["paths"]))
    return 0
