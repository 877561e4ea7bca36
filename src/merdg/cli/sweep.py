"""``merdg sweep``: a resumable hyperparameter sweep under the fair search protocol."""

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
)
from merdg.words import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run algorithms x modality sets x targets x hparam trials x seeds as jobs",
        description="Enumerate the sweep into jobs (one directory per config hash under "
        "OUT/jobs), run those not done yet, and write the tables (table.md/.tex, cells.csv, "
        "results.csv) and report.md to OUT. Run the same command again to resume an "
        "interrupted sweep. Protocol 'fair' (MMDG-Bench): the default plus --trials random "
        "hparam trials per task, the best on source validation (or, with --selection lodo, by "
        "leave-one-domain-out cross-validation on the sources) retrained to --seeds runs; "
        "'grid': every trial with every seed. Every run shares one source train/val split "
        "(--split-seed, 0 unless given).")
    add_experiment_options(p, out_required=True)
    p.add_argument("--trials", type=int, default=10, metavar="N",
                   help="random hparam trials per task besides the default hparams (MMDG-Bench: "
                   "10; DomainBed's --n_hparams K is --trials K-1, and DomainBed's --n_trials is "
                   "--seeds)")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="runs reported per task (fair), or seeds of every trial (grid); "
                   "DomainBed's --n_trials")
    p.add_argument("--protocol", default="fair", choices=["fair", "grid"],
                   help="fair: the default hparams and --trials random trials per task, the "
                   "best on --selection retrained to --seeds runs (MMDG-Bench); grid: every "
                   "trial with every seed, the best trial chosen per task afterwards")
    p.add_argument("--selection", default="source_val", choices=["source_val", "lodo"],
                   help="how each task's trial is chosen: source_val (its search run's "
                   "accuracy on the held-out part of the sources) or lodo "
                   "(leave-one-domain-out cross-validation: every trial trained once per "
                   "source domain held out, scored on it, the best trial then trained on all "
                   "sources with --seeds seeds; the target is never used; docs/sweeps.md)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their status only")
    add_run_options(p, axes=False, required={"dataset": "required unless --datasets"})
    add_launcher_args(p)
    add_threads_arg(p)
    p.set_defaults(func=run)


def experiment_config(args: argparse.Namespace):
    """The :class:`~merdg.experiments.plan.ExperimentConfig` of the command line."""
    from merdg.experiments.plan import ExperimentConfig

    return ExperimentConfig(base=experiment_base(args, split_seed=0), out_dir=args.out,
                            trials=args.trials,
                            seeds=args.seeds, protocol=args.protocol, layout="hashed",
                            selection=args.selection,
                            **experiment_settings(args))


def print_plan(experiment) -> None:
    from merdg.experiments.jobs import count_statuses
    from merdg.experiments.runner import check_experiments, plan_experiments

    jobs, waiting = plan_experiments(check_experiments(experiment))
    for job in jobs:
        dataset = f"{job.config.dataset} " if experiment.datasets else ""
        print(f"{job.status():10s} {job.path.name}  {dataset}{job.describe()}")
    counts = {s: n for s, n in count_statuses(jobs).items() if n}
    print(f"{count(len(jobs), 'job')}: " + ", ".join(f"{n} {s}"
                                                      for s, n in sorted(counts.items())))
    if waiting:
        one = len(waiting) == 1
        its = "its" if one else "their"
        print(f"{count(len(waiting), 'task')} {'waits' if one else 'wait'} for {its} search to "
              f"finish before {its} retrain jobs exist")


def run(args: argparse.Namespace) -> int:
    from merdg.cli.bench import print_result
    from merdg.experiments.runner import run_experiment

    apply_threads(args)
    experiment = experiment_config(args)
    if args.dry_run:
        print_plan(experiment)
        return 0
    result = run_experiment(experiment, launcher_options(args, experiment.base.device),
                            overwrite=args.overwrite)
    for phase, report in zip(("jobs", "retrain jobs"), result.reports):
        print(f"{phase}: {report.summary()}")
    return print_result(result, "merdg sweep")
