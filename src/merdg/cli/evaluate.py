"""``merdg evaluate``: evaluate finished runs' saved weights without retraining."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from merdg.cli.options import (
    add_evaluation_options,
    add_threads_arg,
    apply_threads,
    evaluation_settings,
    log_progress_to_stderr,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate finished runs' saved weights (corruptions, missing "
        "modalities, OOD data, ...) without retraining",
        description="Evaluate the saved weights of finished runs (model.pt: the epoch source "
        "validation selected, the one the tables report) with the evaluator options below: "
        "corruptions, missing modalities, selective prediction, open set, encoder probes and "
        "cross-dataset OOD detection. Each result goes to RUN/evaluations/<evaluator>-<settings "
        "hash>-<model digest>.json; records.jsonl and the other training files are never "
        "touched. `merdg collect` and `merdg bench` pick the evaluations up (docs/evaluation.md).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="finished run directories, or directories searched for them")
    p.add_argument("--model", default="selected", choices=["selected", "last"],
                   help="which saved weights: 'selected' (model.pt, the epoch source validation "
                   "selected) or 'last' (model.last.pt, runs trained with --save-model "
                   "selected+last)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--data-root", metavar="DIR", help="the data's root directory, if it moved "
                   "since training (default: the run's)")
    p.add_argument("--eval-batch-size", type=int, default=256, metavar="N",
                   help="batch size of the evaluation passes")
    p.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="DataLoader worker processes")
    p.add_argument("--force", action="store_true",
                   help="evaluate again what a run directory already holds")
    add_evaluation_options(p)
    add_threads_arg(p)
    p.set_defaults(func=run)


def run_directories(paths: list[str]) -> list[Path]:
    """Each path that is a run directory, or the finished runs under it.

    Raises:
        ValueError: A path that does not exist or holds no finished run.
    """
    from merdg.run.directory import RunDir

    out = []
    for path in paths:
        directory = RunDir(path)
        if directory.file(RunDir.CONFIG).is_file():
            out.append(directory.path)
            continue
        if not Path(path).is_dir():
            raise ValueError(f"{path}: no such run directory")
        found = RunDir.finished_under(path)
        if not found:
            raise ValueError(f"{path} holds no finished run (no done marker next to its "
                             "records)")
        out += [d.path for d in found]
    return out


def run(args: argparse.Namespace) -> int:
    from merdg.evaluators import canonical_evaluations
    from merdg.run.evaluation import evaluate_run

    apply_threads(args)
    for flag, value in (("--eval-batch-size", args.eval_batch_size),
                        ("--num-workers", args.num_workers)):
        if value < (1 if flag == "--eval-batch-size" else 0):
            raise ValueError(f"{flag} must be >= {1 if flag == '--eval-batch-size' else 0}, "
                             f"got {value}")
    evaluations = canonical_evaluations(evaluation_settings(args))
    runs = run_directories(args.runs)
    log_progress_to_stderr()
    logging.getLogger("merdg").setLevel(logging.WARNING)
    rule = "source_val" if args.model == "selected" else "last"
    for path in runs:
        result = evaluate_run(str(path), evaluations, rule, args.device, args.data_root,
                              args.force,
                              eval_batch_size=args.eval_batch_size,
                              num_workers=args.num_workers)
        model = result["model"]
        done = ", ".join(r["evaluator"] for r in result["results"]) or "nothing new"
        print(f"{path}: {model['file']} (epoch {model['epoch']}): target acc "
              f"{100 * result['target_acc']:.2f}; evaluated {done}"
              + (f"; already there: {len(result['skipped'])}" if result["skipped"] else ""))
        for record in result["results"]:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in list(record["columns"].items())[:6]
                              if v is not None)
            print(f"    {record['evaluator']}: {shown}"
                  + (" ..." if len(record["columns"]) > 6 else ""), file=sys.stdout)
    return 0
