"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

DATA_ROOT_ENV = "MERDG_DATA_ROOT"


def parse_value(text: str) -> Any:
    """JSON if it parses (numbers, booleans, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``."""
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip()] = parse_value(value)
    return options


def parse_hparams(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--hparams must be a JSON object, got {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"--hparams must be a JSON object, got {text!r}")
    return value


def split_list(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def add_dataset_args(parser: argparse.ArgumentParser, default: str | None = None,
                     required: bool | None = None) -> None:
    required = default is None if required is None else required
    parser.add_argument("--dataset", default=default, required=required,
                        help="registered dataset name (see `merdg list datasets`)")
    parser.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV),
                        help=f"dataset root directory (default: ${DATA_ROOT_ENV})")
    parser.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                        help="dataset constructor option, repeatable (e.g. shortcut_strength=0.5)")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per process (default 1: the small CPU models gain "
                        "nothing from more, and 2 OpenMP threads on a busy 2-core machine can "
                        "run 10-100x slower; 0 keeps torch's default)")


def apply_threads(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)


def add_training_args(parser: argparse.ArgumentParser) -> None:
    add_threads_arg(parser)
    parser.add_argument("--hparams", help='JSON overrides, e.g. \'{"lr": 1e-3, "epochs": 5}\'')
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="autocast precision of forward passes (MER-DG stays float32)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2,
                        help="share of each source domain held out for model selection")
    parser.add_argument("--eval-missing", default="none", choices=["none", "last", "every"],
                        help="also evaluate the target with each modality missing (zero-filled; "
                        "translated for SimMMDG/MOOSA) at the last or every epoch")


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options of :func:`add_training_args` (``--hparams`` aside), as the keyword
    arguments RunConfig, BenchConfig and SweepConfig share: every command passes them all."""
    return {"device": args.device, "num_workers": args.num_workers, "precision": args.precision,
            "holdout_fraction": args.holdout_fraction, "eval_missing": args.eval_missing}


def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """Options of :class:`merdg.launchers.LauncherOptions`."""
    g = parser.add_argument_group("launcher")
    g.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                   help="local: this machine; slurm: a Slurm job array through submitit "
                   "(pip install 'merdg[slurm]'); submitit-local: submitit on this machine")
    g.add_argument("--workers", type=int, default=1,
                   help="local launcher: concurrent worker processes (1: in this process)")
    g.add_argument("--no-wait", action="store_true",
                   help="submitit launchers: submit and return (run the command again later)")
    g.add_argument("--timeout-min", type=int, default=24 * 60, help="submitit: minutes per job")
    g.add_argument("--gpus-per-job", type=int,
                   help="submitit: GPUs per job (default: 1 with --device cuda, else 0)")
    g.add_argument("--cpus-per-job", type=int, default=4, help="submitit: CPUs per job")
    g.add_argument("--mem-gb", type=float, help="submitit: memory per job (GB)")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--max-parallel", type=int, help="Slurm: at most this many jobs at once")
    g.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                   help="further Slurm parameter, repeatable (e.g. account=lab, qos=high)")


def launcher_options(args: argparse.Namespace):
    """:class:`merdg.launchers.LauncherOptions` from :func:`add_launcher_args`' arguments."""
    from merdg.launchers import LauncherOptions

    return LauncherOptions(
        name=args.launcher, workers=args.workers, wait=not args.no_wait,
        timeout_min=args.timeout_min,
        gpus_per_job=args.gpus_per_job if args.gpus_per_job is not None else int(
            args.device.startswith("cuda")),
        cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb, partition=args.partition,
        max_parallel=args.max_parallel, slurm_options=parse_options(args.slurm_option))


def log_progress_to_stderr() -> None:
    """Show merdg's INFO messages (resuming, one line per epoch) on stderr, once."""
    import logging

    logger = logging.getLogger("merdg")
    if not any(getattr(h, "_merdg_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._merdg_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
