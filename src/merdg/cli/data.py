"""``merdg data check``: validate a dataset on disk and print counts, without training."""

from __future__ import annotations

import argparse

from merdg.cli.options import REQUIRED, add_run_options, run_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = data_sub.add_parser("check", help="validate a dataset and print per-domain/class counts")
    add_run_options(c, title="dataset",
                    only=("dataset", "data_root", "dataset_options", "modalities"),
                    required={"dataset": REQUIRED})
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from merdg.datasets import DATASETS, check_dataset_options

    settings = run_settings(args)
    if "dataset" not in settings:
        raise ValueError("--dataset is required (see `merdg list datasets`)")
    check_dataset_options(settings["dataset"], settings.get("dataset_options", {}))
    cls = DATASETS.get(settings["dataset"])
    report = cls.check(settings.get("data_root"), modalities=settings.get("modalities"),
                       **settings.get("dataset_options", {}))
    print(report.text())
    return 0 if report.ok else 1
