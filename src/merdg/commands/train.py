"""``merdg train``: one run (one algorithm, modality set, target domain and seed)."""

from __future__ import annotations

import argparse
import json
import logging
import os

from merdg.commands._common import (
    add_dataset_args,
    add_training_args,
    apply_threads,
    log_progress_to_stderr,
    parse_hparams,
    parse_options,
    split_list,
    training_options,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one configuration",
                       description="Train one algorithm on the source domains, evaluate on the "
                       "target domain every epoch, and write records to --out. Started again "
                       "with the same arguments, an interrupted run resumes from its last "
                       "checkpoint. Under torchrun (e.g. torchrun --nproc_per_node 4 -m "
                       "merdg.cli train ...) it trains data-parallel.")
    add_dataset_args(p, required=False)
    p.add_argument("--preset", help="a paper configuration (`merdg list presets`); it sets the "
                   "dataset, algorithm, modalities and hparams, which other options override")
    p.add_argument("--checkpoint-dir", help="folder with the public pretrained checkpoints "
                   "(presets; see docs/paper-setting.md)")
    p.add_argument("--algorithm", help="algorithm name (default ERM); X+MER adds MER-DG to X")
    p.add_argument("--target", required=True, help="held-out target domain")
    p.add_argument("--source", nargs="+", help="source domains (default: every other domain)")
    p.add_argument("--modalities", help="comma-separated modalities (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hparams-seed", type=int, default=0, help="0: defaults; k: random trial k")
    p.add_argument("--out", help="run directory (required without --preset)")
    p.add_argument("--save-model", action="store_true", help="save the final weights")
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming from --out's checkpoint")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log scalars to TensorBoard under OUT/tensorboard "
                   "(pip install 'merdg[tensorboard]')")
    add_training_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from merdg.training import RunConfig, train

    apply_threads(args)
    config = preset_config(args) if args.preset else None
    if config is None and not (args.dataset and args.out):
        raise ValueError("--dataset and --out are required unless --preset is given")
    config = config or RunConfig(
        dataset=args.dataset, target=args.target, algorithm=args.algorithm or "ERM",
        modalities=split_list(args.modalities), sources=args.source, seed=args.seed,
        hparams_seed=args.hparams_seed, hparams=parse_hparams(args.hparams),
        data_root=args.data_root, dataset_options=parse_options(args.dataset_option),
        out_dir=args.out, save_model=args.save_model, tensorboard=args.tensorboard,
        **training_options(args))
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, only rank 0 prints
    if main_rank:
        log_progress_to_stderr()
    with logging_redirect_tqdm(loggers=[logging.getLogger("merdg")]):
        summary = train(config, resume=not args.restart)
    if main_rank:
        print(json.dumps(summary["selection"], indent=2))
    return 0


def preset_config(args: argparse.Namespace):
    """The RunConfig of ``--preset``; explicit options override the preset's values."""
    from merdg.presets import get_preset
    from merdg.training import RunConfig

    preset = get_preset(args.preset)
    if args.dataset and args.dataset != preset.dataset:
        raise ValueError(f"preset {preset.name} is for --dataset {preset.dataset}")
    if args.modalities:
        raise ValueError("a preset fixes the modalities; pick the preset of the modality set")
    if not args.checkpoint_dir:
        raise ValueError("presets load the public pretrained checkpoints: pass --checkpoint-dir "
                         "DIR (docs/paper-setting.md lists the files), or --checkpoint-dir none "
                         "to start from random weights")
    checkpoints = None if args.checkpoint_dir.lower() == "none" else args.checkpoint_dir
    sources = "+".join(args.source) if args.source else "all"
    out = args.out or f"runs/{preset.name}/{sources}-to-{args.target}/seed{args.seed}"
    return RunConfig(
        dataset=preset.dataset, target=args.target, algorithm=args.algorithm or preset.algorithm,
        modalities=preset.modalities, sources=args.source,
        seed=args.seed, hparams_seed=args.hparams_seed,
        hparams=preset.resolved_hparams(checkpoints, parse_hparams(args.hparams)),
        data_root=args.data_root, dataset_options=parse_options(args.dataset_option),
        out_dir=out, eval_batch_size=preset.eval_batch_size, save_model=args.save_model,
        tensorboard=args.tensorboard, **training_options(args))
