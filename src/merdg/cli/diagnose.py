"""``merdg diagnose RUN_DIR [RUN_DIR ...]``: diagnostics of trained runs (docs/diagnostics.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from merdg.cli.options import add_threads_arg, apply_threads, split_items


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="feature diversity, unimodal probes, cross-modal dependence and "
        "modality reliance of trained runs",
        description="Load trained runs (trained with --save-model) and write report.md, "
        "diagnostics.json and PNG figures. Several runs (same dataset, target, sources and "
        "modalities, e.g. ERM and MERDG) are shown side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: RUN_DIR/diagnostics for one run; required "
                   "for several)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="dataset root, if it moved since training (default: the one recorded "
                   "in each run's config.json)")
    p.add_argument("--probes", nargs="+", default=["linear", "mlp"], metavar="KIND",
                   help="probe kinds to train on frozen embeddings: linear, mlp (the official "
                   "release's), or none")
    p.add_argument("--probe-epochs", type=int, default=25, metavar="N",
                   help="probe epochs (the official release's: 25)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="samples per forward pass")
    p.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="DataLoader workers")
    p.add_argument("--no-figures", action="store_true",
                   help="write report.md and diagnostics.json only")
    add_threads_arg(p)
    p.set_defaults(func=run)


def _output_dir(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    if len(args.runs) > 1:
        raise ValueError("--out is required when comparing several runs")
    return Path(args.runs[0]) / "diagnostics"


def run(args: argparse.Namespace) -> int:
    from merdg.diagnostics import DiagnoseOptions, diagnose

    apply_threads(args)
    probes = split_items(args.probes) or []
    probes = [] if probes == ["none"] else probes
    options = DiagnoseOptions(probes=probes, probe_epochs=args.probe_epochs,
                              batch_size=args.batch_size, num_workers=args.num_workers)
    result = diagnose(args.runs, _output_dir(args), options, device=args.device,
                      data_root=args.data_root, figures=not args.no_figures)
    print(f"report: {result['files']['report']}")
    return 0
