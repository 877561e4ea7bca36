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


def add_dataset_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--dataset", default=default, required=default is None,
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
