"""``merdg list``: what is registered (algorithms, datasets, encoders, presets, corruptions)
and a run's resolved hyperparameters."""

from __future__ import annotations

import argparse
import json

from merdg.cli.options import add_run_options

# what `merdg list WHAT` lists (`merdg list` alone prints this)
WHAT = {"algorithms": "registered algorithms, their hparams (default, range, search space)",
        "datasets": "registered datasets and their modalities",
        "encoders": "registered encoders",
        "presets": "the paper configurations (--preset)",
        "corruptions": "the corruptions of each modality kind (--corruptions)",
        "evaluators": "every kind of evaluation, its flags and result columns",
        "hparams": "the hparams a run would use and where each comes from (needs --dataset)"}
CHOICES = list(WHAT)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered algorithms, datasets, encoders, presets, "
                       "corruptions or evaluators, or a run's resolved hparams",
                       description="`merdg list` alone says what can be listed. `merdg list "
                       "hparams --dataset D --algorithm A [run settings]` prints the hparams "
                       "and encoder specs a run with these settings would use, and where each "
                       "value comes from.")
    p.add_argument("what", nargs="?", choices=CHOICES, metavar="WHAT",
                   help="one of " + ", ".join(CHOICES) + " (nothing: what each lists)")
    add_run_options(p, title="run settings (for `list hparams`)",
                    required={"dataset": "required for `list hparams`"})
    p.set_defaults(func=run)


def _first_line(obj: object) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""


def list_hparams(args: argparse.Namespace) -> None:
    from merdg.datasets import build_dataset
    from merdg.run.config import RunConfig
    from merdg.run.hparams import resolve_run_hparams

    settings = run_settings_for_listing(args)
    config = RunConfig(**settings)
    dataset = build_dataset(config.dataset, config.data_root, config.modalities,
                            **config.dataset_options)
    provenance: dict[str, str] = {}
    hparams = resolve_run_hparams(config, dataset, provenance)
    print(f"{config.algorithm} on {config.dataset} (order: training < dataset < algorithm < "
          "preset < trial < override)")
    for name in sorted(k for k in hparams if k != "encoders"):
        print(f"    {name} = {hparams[name]!r}  ({provenance[name]})")
    for m, spec in hparams["encoders"].items():
        print(f"    encoders.{m} = {json.dumps(spec, sort_keys=True)}")


def list_corruptions() -> None:
    """The corruption registry, one table per modality kind, with each definition's source."""
    from merdg.evaluation import CORRUPTIONS, corruption_table

    print("Corruptions per modality kind (--corruptions NAME [NAME ...]|all, --severities "
          "1 3 5; docs/robustness.md). A name applies to every modality whose kind has it.")
    for kind in CORRUPTIONS:
        print(f"\n{kind}:")
        print("\n".join("    " + line for line in corruption_table(kind).splitlines()))


def list_evaluators() -> None:
    """Every kind of evaluation, when it runs, its flags and result columns."""
    from merdg.evaluators import EVALUATORS, ORDER

    print("Evaluators (docs/evaluation.md); 'model' ones run on the weights of the epoch "
          "source validation selects, at the end of training or with `merdg evaluate`.")
    for name in ORDER:
        cls = EVALUATORS.get(name)
        flags = [cls.request_flag] if cls.request_flag else []
        flags += [opt.flag for _, opt, _ in cls.Settings.options()]
        when = ", ".join(sorted(cls.times)) + (", always" if cls.always else "")
        print(f"{name} ({when}): {cls.description}")
        if flags:
            print(f"    flags: {' '.join(flags)}")
        print("    columns: " + ", ".join(c.name + ("/*" if c.family else "")
                                          for c in cls.columns))


def run_settings_for_listing(args: argparse.Namespace) -> dict:
    from merdg.cli.options import run_settings

    settings = run_settings(args)
    if "dataset" not in settings:
        raise ValueError("merdg list hparams needs --dataset (and usually --algorithm)")
    return settings


def run(args: argparse.Namespace) -> int:
    from merdg.algorithms import ALGORITHMS
    from merdg.datasets import DATASETS
    from merdg.hparams import describe_search
    from merdg.models import ENCODERS

    if args.what is None:
        print("merdg list WHAT, with WHAT one of:")
        print("\n".join(f"    {name:12s} {words}" for name, words in WHAT.items()))
    elif args.what == "hparams":
        list_hparams(args)
    elif args.what == "corruptions":
        list_corruptions()
    elif args.what == "evaluators":
        list_evaluators()
    elif args.what == "algorithms":
        for name in ALGORITHMS:
            cls = ALGORITHMS.get(name)
            print(f"{name}: {_first_line(cls)}")
            print("    on regression: " + (cls.REGRESSION or
                                           f"refused ({cls.REGRESSION_REFUSAL})"))
            for hp_name, hp in cls.HPARAMS.items():
                print(f"    {hp_name} = {hp.default!r}  ({hp.describe()}; search "
                      f"{describe_search(hp)})  -- {hp.help}")
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
