"""``merdg pretrain``: pretrain one encoder per modality alone and write them for ``--init``.

The external pretraining step of the paper's regime (Kinetics / VGGSound before EPIC-Kitchens;
MER-DG, arXiv 2605.01967, Section 5) at any scale: each encoder trains alone with a linear head
on the ``train`` split of the chosen domains, its epoch is selected on their ``val`` split, and
the selected encoders are written as a plain state dict that ``merdg train --init FILE`` (and
``bench`` / ``sweep``) load. For the built-in benchmark, ``--dataset synthetic-pretrain`` draws
the corpus from other domains of the benchmark's generative model (docs/regimes.md).
"""

from __future__ import annotations

import argparse
import json

from merdg.cli.options import (
    DATA_ROOT_ENV,
    add_threads_arg,
    apply_threads,
    parse_json_object,
    parse_options,
    split_items,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain encoders alone (linear heads) and write them for --init",
        description="Train each encoder alone with a linear head on the training split of "
        "--domains, keep each one's epoch with the best validation accuracy, and write the "
        "encoders to --out ({'state_dict': {'<modality>.<name>': tensor}, 'pretraining': "
        "{...}}), the file `merdg train --init FILE` loads. The run that loads it must build "
        "the same encoders (same --encoders options) on data of the same shapes.")
    p.add_argument("--dataset", default="synthetic-pretrain", metavar="NAME",
                   help="registered dataset (synthetic-pretrain: the corpus of the built-in "
                   "benchmark)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="file to write (refused if it exists, unless --overwrite)")
    p.add_argument("--data-root", metavar="DIR", help=f"dataset root (default: ${DATA_ROOT_ENV})")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                   help="dataset constructor option, repeatable (the synthetic corpus needs "
                   "the benchmark's options, e.g. n_classes=3)")
    p.add_argument("--domains", nargs="+", metavar="DOMAIN",
                   help="domains to pretrain on (default: all)")
    p.add_argument("--modalities", nargs="+", metavar="MODALITY",
                   help="encoders to pretrain (default: every modality)")
    p.add_argument("--encoders", metavar="JSON",
                   help="encoder options per modality as JSON, merged into the dataset's "
                   "default specs (as `merdg train --encoders`)")
    p.add_argument("--epochs", type=int, default=10, metavar="N", help="epochs")
    p.add_argument("--lr", type=float, default=1e-3, metavar="NUMBER",
                   help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4, metavar="NUMBER",
                   help="Adam weight decay")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="batch size")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of initialization and batch order")
    p.add_argument("--holdout-fraction", type=float, default=0.2, metavar="FRACTION",
                   help="share of each domain held out for epoch selection")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--num-workers", type=int, default=0, metavar="N", help="DataLoader workers")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from merdg.datasets import build_dataset
    from merdg.run.pretraining import check_out_file, pretrain_encoders
    from merdg.run.setup import resolve_device

    apply_threads(args)
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--seed", args.seed, 0), ("--num-workers", args.num_workers, 0)):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if not 0.0 < args.holdout_fraction < 1.0:
        raise ValueError(f"--holdout-fraction must be > 0 and < 1, got {args.holdout_fraction}")
    check_out_file(args.out, args.overwrite, name="--out")
    device = resolve_device(args.device)
    options = parse_options(args.dataset_option)
    dataset = build_dataset(args.dataset, args.data_root or os.environ.get(DATA_ROOT_ENV),
                            split_items(args.modalities), **options)
    result = pretrain_encoders(
        dataset, args.out, domains=split_items(args.domains),
        modalities=split_items(args.modalities),
        encoders=parse_json_object(args.encoders, "--encoders"), epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
        holdout_fraction=args.holdout_fraction, device=str(device),
        num_workers=args.num_workers, overwrite=args.overwrite, dataset_options=options)
    print(json.dumps({"selected": result.selected, "encoders": result.encoders}, indent=2))
    print(f"encoders: {result.path} (load with --init {result.path})")
    return 0
