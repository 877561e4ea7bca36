"""``merdg list``: what is registered (algorithms with their hparams, datasets, encoders)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered algorithms, datasets or encoders")
    p.add_argument("what", choices=["algorithms", "datasets", "encoders", "presets"])
    p.set_defaults(func=run)


def _first_line(obj: object) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""


def run(args: argparse.Namespace) -> int:
    from merdg.algorithms import ALGORITHMS
    from merdg.datasets import DATASETS
    from merdg.hparams import describe_search
    from merdg.models import ENCODERS

    if args.what == "algorithms":
        for name in ALGORITHMS:
            cls = ALGORITHMS.get(name)
            print(f"{name}: {_first_line(cls)}")
            for hp_name, hp in cls.HPARAMS.items():
                print(f"    {hp_name} = {hp.default!r}  search {describe_search(hp)}  -- {hp.help}")
        print("Any algorithm X also runs with MER-DG added as 'X+MER' (MERDG is 'ERM+MER').")
    elif args.what == "datasets":
        for name in DATASETS:
            cls = DATASETS.get(name)
            mods = ", ".join(cls.ALL_MODALITIES) or "(set by options)"
            print(f"{name}: {_first_line(cls)}\n    modalities: {mods}")
    elif args.what == "presets":
        from merdg.presets import PRESETS

        for name, preset in PRESETS.items():
            print(f"{name}: {preset.description}")
    else:
        for name in ENCODERS:
            print(f"{name}: {_first_line(ENCODERS.get(name))}")
    return 0
