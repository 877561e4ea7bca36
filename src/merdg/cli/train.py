"""``merdg train``: one run (one algorithm, modality set, target domain and seed)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from merdg.cli.options import (
    REQUIRED,
    add_run_options,
    add_threads_arg,
    apply_threads,
    log_progress_to_stderr,
    run_settings,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one configuration",
                       description="Train one algorithm on the source domains, evaluate on the "
                       "target domain every epoch, evaluate the model of the epoch source "
                       "validation selects (and save it), and write records to --out. Started "
                       "again "
                       "with the same arguments, an interrupted run resumes from its last "
                       "checkpoint and a finished one prints its summary. Under torchrun "
                       "(e.g. torchrun --nproc_per_node 4 -m merdg.cli train ...) it trains "
                       "data-parallel.")
    add_run_options(p, required={"dataset": "required unless --preset", "target": REQUIRED,
                                 "out_dir": "required unless --preset"})
    p.add_argument("--json", action="store_true",
                   help="print the run's summary (every number of summary.json) as JSON instead "
                   "of the few lines saying the selected epoch, its accuracies and where the "
                   "files are")
    p.add_argument("--restart", action="store_true",
                   help="start an unfinished run over instead of resuming its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds: a finished run, a run of another config, or "
                   "files merdg did not write (otherwise refused)")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run_config(args: argparse.Namespace):
    """The :class:`~merdg.run.config.RunConfig` of the command line; a preset fills in its
    dataset, modalities, algorithm, evaluation batch size and a default ``--out``."""
    from merdg.run.config import RunConfig

    settings = run_settings(args)
    if "preset" in settings:
        settings = _with_preset(settings)
    if not ("dataset" in settings and "out_dir" in settings):
        raise ValueError("--dataset and --out are required unless --preset is given")
    if "target" not in settings:
        raise ValueError("--target is required")
    return RunConfig(**settings)


def _with_preset(settings: dict) -> dict:
    from merdg.presets import get_preset

    preset = get_preset(settings["preset"])
    if settings.get("dataset", preset.dataset) != preset.dataset:
        raise ValueError(f"preset {preset.name} is for --dataset {preset.dataset}")
    if "modalities" in settings:
        raise ValueError("a preset fixes the modalities; pick the preset of the modality set")
    sources = "+".join(settings.get("sources") or ["all"])
    algorithm = settings.get("algorithm", preset.algorithm or "ERM")
    name = preset.name if preset.algorithm else f"{preset.name}/{algorithm}"
    out = (f"runs/{name}/{sources}-to-{settings.get('target')}/"
           f"seed{settings.get('seed', 0)}")
    return {"dataset": preset.dataset, "modalities": list(preset.modalities),
            "algorithm": algorithm, "eval_batch_size": preset.eval_batch_size,
            "out_dir": out, **settings}


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from merdg.run.training import train

    apply_threads(args)
    config = run_config(args)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, only rank 0 prints
    if main_rank:
        log_progress_to_stderr()
    with logging_redirect_tqdm(loggers=[logging.getLogger("merdg")]):
        summary = train(config, resume=not args.restart, overwrite=args.overwrite)
    if main_rank:
        print(json.dumps(summary, indent=2) if args.json
              else "\n".join(summary_lines(summary, config.out_dir)))
        for line in summary.get("near_chance_probes", []):
            print(f"warning: {line}", file=sys.stderr)
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _evaluation_words(summary: dict, row: dict) -> tuple[str, str]:
    """How the closing lines name an evaluation and count them: ``("epoch", "15 epochs")``
    when the run evaluated after every epoch, else ``("evaluation", "50 evaluations every 200
    steps")`` (a step budget with ``eval_every``)."""
    steps = summary.get("evaluation_steps") or []
    per_epoch = row.get("steps_per_epoch")
    n = summary["epochs"]
    if not steps or (per_epoch and steps == [per_epoch * (i + 1) for i in range(len(steps))]):
        return "epoch", f"{n} {'epoch' if n == 1 else 'epochs'}"
    return "evaluation", f"{n} {'evaluation' if n == 1 else 'evaluations'} over {steps[-1]} steps"


def _at(name: str, summary: dict, index: int) -> str:
    """``epoch 3`` or ``evaluation 3 (step 600)``."""
    steps = summary.get("evaluation_steps") or []
    if name == "epoch" or not 0 < index <= len(steps):
        return f"{name} {index}"
    return f"{name} {index} (step {steps[index - 1]})"


def summary_lines(summary: dict, out_dir: str | None) -> list[str]:
    """What a finished run reports in a few lines: what ran, the epoch (or, with a step budget,
    the evaluation) source validation selected with its source-validation and target accuracy
    (Acc-2 and MAE for a regression task; H-score for open set), the last and oracle ones for
    comparison, and where the files are."""
    from merdg.run.directory import RunDir

    rows = summary["selection"]
    chosen, last, oracle = rows["source_val"], rows.get("last"), rows.get("oracle")
    what = (f"{chosen['algorithm']}, {chosen['modalities']}, {chosen['sources']} -> "
            f"{chosen['target']}, seed {chosen['seed']}")
    name, count = _evaluation_words(summary, chosen)
    open_set = chosen.get("h_score") is not None
    regression = chosen.get("task") == "regression"
    acc = "Acc-2" if regression else "acc"
    target = "target acc (known classes, no rejection)" if open_set else f"target {acc}"

    def target_words(row: dict) -> str:
        words = f"{target} {_percent(row['target_acc'])}"
        if regression and row.get("target_mae") is not None:
            words += f", target MAE {row['target_mae']:.4f}"
        return words

    lines = [f"done: {what} ({count}, {summary['train_time_s']:.1f} s of training)",
             f"selected {_at(name, summary, chosen['epoch'])} of {summary['epochs']} (best "
             f"source-validation {'Acc-2' if regression else 'accuracy'}): source-val {acc} "
             f"{_percent(chosen['val_acc'])}, {target_words(chosen)}"]
    if open_set:
        lines.append(f"open set: H-score {_percent(chosen['h_score'])} (known-class acc "
                     f"{_percent(chosen.get('known_acc'))}, unknown rejected "
                     f"{_percent(chosen.get('unknown_acc'))})")
    others = [f"last {_at(name, summary, r['epoch'])}: {target_words(r)}"
              for r in (last,) if r is not None]
    others += [f"oracle {_at(name, summary, r['epoch'])} (chosen on the target, for comparison "
               f"only): {_percent(r['target_acc'])}" for r in (oracle,) if r is not None]
    if others:
        lines.append("; ".join(others))
    if out_dir:
        directory = RunDir(out_dir)
        names = [n for n in (RunDir.SUMMARY, RunDir.RECORDS, RunDir.LOG, RunDir.MODEL,
                             RunDir.LAST_MODEL, RunDir.EVALUATIONS)
                 if directory.file(n).exists()]
        lines.append(f"files: {directory.path} ({', '.join(names)}; every number: "
                     f"{RunDir.SUMMARY}, or --json)")
    return lines
