"""``merdg data check``: validate a dataset on disk and print counts, without training."""

from __future__ import annotations

import argparse

from merdg.commands._common import add_dataset_args, parse_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = data_sub.add_parser("check", help="validate a dataset and print per-domain/class counts")
    add_dataset_args(c)
    c.add_argument("--modalities", help="comma-separated modalities to check (default: all)")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from merdg.commands._common import split_list
    from merdg.datasets import DATASETS

    cls = DATASETS.get(args.dataset)
    report = cls.check(args.data_root, modalities=split_list(args.modalities),
                       **parse_options(args.dataset_option))
    print(report.text())
    return 0 if report.ok else 1
