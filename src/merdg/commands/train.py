"""``merdg train``: one run (one algorithm, modality set, target domain and seed)."""

from __future__ import annotations

import argparse
import json

from merdg.commands._common import (
    add_dataset_args,
    add_training_args,
    apply_threads,
    parse_hparams,
    parse_options,
    split_list,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one configuration",
                       description="Train one algorithm on the source domains, evaluate on the "
                       "target domain every epoch, and write records to --out.")
    add_dataset_args(p)
    p.add_argument("--algorithm", default="ERM", help="algorithm name; X+MER adds MER-DG to X")
    p.add_argument("--target", required=True, help="held-out target domain")
    p.add_argument("--source", nargs="+", help="source domains (default: every other domain)")
    p.add_argument("--modalities", help="comma-separated modalities (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hparams-seed", type=int, default=0, help="0: defaults; k: random trial k")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--save-model", action="store_true", help="save the final weights")
    add_training_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merdg.training import RunConfig, train

    apply_threads(args)
    config = RunConfig(
        dataset=args.dataset, target=args.target, algorithm=args.algorithm,
        modalities=split_list(args.modalities), sources=args.source, seed=args.seed,
        hparams_seed=args.hparams_seed, hparams=parse_hparams(args.hparams),
        data_root=args.data_root, dataset_options=parse_options(args.dataset_option),
        holdout_fraction=args.holdout_fraction, out_dir=args.out, device=args.device,
        num_workers=args.num_workers, save_model=args.save_model,
        precision=args.precision, eval_missing=args.eval_missing)
    summary = train(config)
    print(json.dumps(summary["selection"], indent=2))
    return 0
