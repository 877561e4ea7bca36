"""Command-line options shared by several commands.

The run settings are not written here: :func:`add_run_options` builds one option per
:class:`~merdg.run.config.RunConfig` field from its declaration, and :func:`run_settings`
reads them back, so ``merdg train``, ``merdg bench`` and ``merdg sweep`` always offer the same
run settings with the same names, help texts and checks. The evaluators' options are built the
same way from their settings declarations (:func:`add_evaluation_options`,
:func:`evaluation_settings`; ``merdg evaluate`` offers them too) and become the run's
``evaluations``.

Lists are space-separated (``--targets d0 d1``); a list of names also reads commas as
separators (``--targets d0,d1``, as earlier versions wrote them). A modality set is one item
with its modalities joined by ``+`` (``--modality-sets inertial+skeleton
inertial+skeleton+depth``); a comma there reads two ways (one set, or one per modality), so
:func:`parse_modality_sets` refuses it and spells out both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from merdg.cli.parser import default_text
from merdg.evaluators import EVALUATORS, ORDER, canonical_evaluations
from merdg.options import Option
from merdg.progress import timestamp, watched
from merdg.run.config import run_options

__all__ = ["DATA_ROOT_ENV", "REQUIRED", "add_evaluation_options", "add_experiment_options",
           "add_launcher_args", "add_run_options", "add_threads_arg", "apply_threads",
           "evaluation_settings", "experiment_base", "experiment_settings", "launcher_options",
           "log_progress_to_stderr", "parse_integers", "parse_json_object", "parse_options",
           "run_settings", "split_items"]

DATA_ROOT_ENV = "MERDG_DATA_ROOT"
PREFIX = "run_"  # namespace of the RunConfig options in argparse's result
REQUIRED = "required"


def parse_value(text: str) -> Any:
    """JSON if it parses (numbers, booleans, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(pairs: list[str] | None, flag: str = "--dataset-option") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a key given twice is refused (the first
    value would be lost)."""
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key in options:
            hint = " (one where option takes several conditions, joined by ';')" if (
                key == "where") else ""
            raise ValueError(f"{flag} {key} is given twice; give it once{hint}")
        options[key] = parse_value(value)
    return options


def parse_json_object(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} must be a JSON object, got {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, got {text!r}")
    return value


def split_items(values: list[str] | str | None) -> list[str] | None:
    """Space- and/or comma-separated items -> a flat list (None when nothing was given)."""
    if values is None:
        return None
    values = [values] if isinstance(values, str) else values
    items = [s.strip() for v in values for s in v.split(",") if s.strip()]
    return items or None


def parse_integers(values: list[str] | str, flag: str) -> list[int]:
    """``["1,3", "5"]`` -> ``[1, 3, 5]``.

    Raises:
        ValueError: An item that is not an integer (named, with the flag).
    """
    numbers = []
    for item in split_items(values) or []:
        try:
            numbers.append(int(item))
        except ValueError:
            raise ValueError(f"{flag} expects integers such as 1 3 5, got {item!r}") from None
    if not numbers:
        raise ValueError(f"{flag} expects integers such as 1 3 5, got nothing")
    return numbers


def parse_modality_sets(values: list[str] | None) -> list[list[str]] | None:
    """``["a+b", "a+b+c"]`` -> ``[["a", "b"], ["a", "b", "c"]]`` (each item one set).

    Raises:
        ValueError: An item with a comma, which reads two ways (one set, or one set per
            modality): both readings are spelled out.
    """
    if not values:
        return None
    for value in values:
        if "," in value:
            names = [n for n in value.split(",") if n]
            raise ValueError(
                f"--modality-sets {value}: a comma reads two ways, one set "
                f"(--modality-sets {'+'.join(names)}) or {len(names)} sets (--modality-sets "
                f"{' '.join(names)}); join a set's modalities with + and separate sets with "
                "spaces")
    return [sorted(s for s in v.split("+") if s) for v in values]


# --- run settings (one option per RunConfig field) -------------------------------------------

KIND_METAVARS = {"int": "N", "float": "NUMBER", "json": "JSON", "pairs": "KEY=VALUE",
                 "list": "NAME", "ints": "N"}


def _metavar(opt: Option) -> str | None:
    """The placeholder of a declared setting in the help: its own, else one for its kind
    (``N``, ``JSON``, ...), else the flag's name (``--device DEVICE``); None for choices
    (argparse lists them) and switches."""
    if opt.metavar:
        return opt.metavar
    if opt.kind == "bool" or (opt.choices is not None and opt.kind != "list"):
        return None
    return KIND_METAVARS.get(opt.kind, opt.flag.lstrip("-").upper().replace("-", "_"))


def _help(opt: Option, default: Any, required: str = "") -> str:
    """The option's help, with its default when it has one worth showing (a required field,
    such as ``dataset``, has none) and ``(required)`` / ``(required unless ...)``."""
    text = opt.help
    if not (opt.kind == "bool" or default is dataclasses.MISSING or default in (None, {}, [])):
        text += f" (default: {default_text(default)})"
    return text + (f" ({required})" if required else "")


def _add_option(group: Any, dest: str, opt: Option, default: Any, required: str = "") -> None:
    """One argparse option of a declared setting (its value stays None when not given);
    ``required``: ``"required"`` (argparse refuses the command without it) or the condition
    under which it is (``"required unless --preset"``, marked in the help and checked by the
    command)."""
    kwargs: dict[str, Any] = {"dest": dest, "default": None,
                              "help": _help(opt, default, required)}
    if required == REQUIRED:  # argparse checks it (a conditional one is checked by the command)
        kwargs["required"] = True
    metavar = _metavar(opt)
    if metavar:
        kwargs["metavar"] = metavar
    if opt.kind == "bool":
        kwargs["action"] = "store_true"
    elif opt.kind in ("list", "ints"):
        kwargs["nargs"] = "+"
    elif opt.kind == "pairs":
        kwargs["action"] = "append"
    else:
        kwargs["type"] = {"int": int, "float": float}.get(opt.kind, str)
        if opt.choices is not None:
            kwargs["choices"] = list(opt.choices)
    group.add_argument(opt.flag, **kwargs)


def _parsed(value: Any, opt: Option) -> Any:
    """A declared setting's command-line value in its kind (None when not given)."""
    if value is None or (opt.kind == "bool" and value is False):
        return None
    if opt.kind == "list":
        return split_items(value)
    if opt.kind == "ints":
        return parse_integers(value, opt.flag)
    if opt.kind == "json":
        return parse_json_object(value, opt.flag)
    if opt.kind == "pairs":
        return parse_options(value, opt.flag)
    return value


def add_run_options(parser: argparse.ArgumentParser, axes: bool = True,
                    title: str = "run settings", only: tuple[str, ...] | None = None,
                    required: dict[str, str] | None = None) -> None:
    """One option per :class:`RunConfig` field, then the evaluators' options;
    ``axes=False`` leaves out the fields an experiment sets per run (target, algorithm,
    modalities, seeds, ...); ``only`` keeps the named fields (and no evaluator option);
    ``required`` marks fields the command needs (``{"dataset": "required"}``)."""
    group = parser.add_argument_group(title)
    for name, opt, default in run_options():
        if (opt.axis is not None and not axes) or (only is not None and name not in only):
            continue
        if opt.cli:
            _add_option(group, PREFIX + name, opt, default, (required or {}).get(name, ""))
    if only is None:
        add_evaluation_options(parser)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`RunConfig` fields given on the command line (parsed), with the evaluators'
    settings as ``evaluations``, plus ``data_root`` from ``$MERDG_DATA_ROOT`` when not given,
    and the dataset of ``--preset`` when ``--dataset`` is not given."""
    settings = {}
    for name, opt, _ in run_options():
        value = _parsed(getattr(args, PREFIX + name, None), opt)
        if value is not None:
            settings[name] = value
    if "preset" in settings and "dataset" not in settings:
        from merdg.presets import get_preset

        settings["dataset"] = get_preset(settings["preset"]).dataset
    evaluations = evaluation_settings(args)
    if evaluations:
        settings["evaluations"] = canonical_evaluations(evaluations)
    if "data_root" not in settings and os.environ.get(DATA_ROOT_ENV):
        settings["data_root"] = os.environ[DATA_ROOT_ENV]
    return settings


# --- evaluator settings (one option per setting of every evaluator) --------------------------

EVAL_PREFIX = "eval_"  # namespace of the evaluator options in argparse's result


def add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    """Each evaluator's switch (``--eval-missing``) and settings (``--corruptions``,
    ``--severities``, ...), in one group (``docs/evaluation.md``)."""
    group = parser.add_argument_group(
        "evaluations of the trained model (on the weights of the epoch source validation "
        "selects; docs/evaluation.md)")
    for name in ORDER:
        cls = EVALUATORS.get(name)
        if cls.request_flag:
            group.add_argument(cls.request_flag, dest=f"{EVAL_PREFIX}{name}", default=False,
                               action="store_true", help=cls.request_help)
        for field, opt, default in cls.Settings.options():
            _add_option(group, f"{EVAL_PREFIX}{name}__{field}", opt, default)


def evaluation_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{evaluator: {setting: value}}`` of the evaluators asked for on the command line (by
    their switch or by any of their settings); checked when the config is built."""
    out: dict[str, dict[str, Any]] = {}
    for name in ORDER:
        cls = EVALUATORS.get(name)
        given = {}
        for field, opt, _ in cls.Settings.options():
            value = _parsed(getattr(args, f"{EVAL_PREFIX}{name}__{field}", None), opt)
            if value is not None:
                given[field] = value
        if given or getattr(args, f"{EVAL_PREFIX}{name}", False):
            out[name] = given
    return out


# --- experiments (bench, sweep) --------------------------------------------------------------

def add_experiment_options(parser: argparse.ArgumentParser, out_required: bool) -> None:
    """The axes of ``merdg bench`` / ``merdg sweep``, ``--setting``, ``--reference`` and
    ``--overwrite``."""
    g = parser.add_argument_group("experiment")
    g.add_argument("--algorithms", nargs="+", default=["ERM", "MERDG"], metavar="NAME",
                   help="algorithm names; X+MER adds MER-DG to X (`merdg list algorithms`)")
    g.add_argument("--modality-sets", nargs="+", metavar="SET",
                   help="modality sets to compare, separated by spaces, each with its "
                   "modalities joined by + (e.g. inertial+skeleton inertial+skeleton+depth) "
                   "(default: the dataset's BENCH_MODALITY_SETS, else all modalities together)")
    g.add_argument("--targets", nargs="+", metavar="DOMAIN",
                   help="target domains (default: every domain)")
    g.add_argument("--setting", default="multi", choices=["multi", "single", "all"],
                   help="multi: each target with every other domain as sources; single: each "
                   "target with each other domain alone as the source (every source->target "
                   "pair); all: both (docs/settings.md)")
    g.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="several data sets instead of --dataset, each with the same axes and "
                   "every one of its domains a target (runs under OUT/<dataset>); the tables add "
                   "the average over data sets (DomainBed's sweep --datasets)")
    g.add_argument("--error", default="std", choices=["std", "se"],
                   help="what ± is in the tables and the error bars of the figures: the sample "
                   "std over seeds, or the standard error of the mean (std / sqrt(n)), which "
                   "DomainBed's tables report")
    g.add_argument("--reference", metavar="NAME",
                   help="algorithm the paired-difference table compares every other one with "
                   "(default: ERM; must be in --algorithms)")
    g.add_argument("--out", required=out_required, metavar="DIR",
                   help="experiment directory" + ("" if out_required
                                                  else " (default: bench-<dataset>)"))
    g.add_argument("--overwrite", action="store_true",
                   help="replace run directories that hold runs of another config (otherwise "
                   "they are refused)")


def experiment_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~merdg.experiments.plan.ExperimentConfig` axes given on the command line."""
    return {"algorithms": split_items(args.algorithms) or [],
            "modality_sets": parse_modality_sets(args.modality_sets),
            "targets": split_items(args.targets), "setting": args.setting,
            "reference": args.reference, "datasets": split_items(args.datasets),
            "error": args.error}


def experiment_base(args: argparse.Namespace, **defaults: Any):
    """The base :class:`~merdg.run.config.RunConfig` of ``merdg bench`` / ``merdg sweep``:
    the run settings given (``defaults`` under them), its dataset the first of
    ``--datasets``.

    Raises:
        ValueError: Neither or both of ``--dataset`` and ``--datasets``.
    """
    from merdg.run.config import RunConfig

    settings = {**defaults, **run_settings(args)}
    datasets = split_items(args.datasets)
    if datasets and "dataset" in settings:
        raise ValueError("give --dataset NAME or --datasets NAME [NAME ...], not both")
    if datasets:
        settings["dataset"] = datasets[0]
    if "dataset" not in settings:
        raise ValueError("--dataset is required (or --datasets for several; `merdg list "
                         "datasets`)")
    return RunConfig(**settings)


# --- process-level options -------------------------------------------------------------------

def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads per process, 0 for torch's own choice (1 because the "
                        "small CPU models gain nothing from more, and 2 OpenMP threads on a busy "
                        "2-core machine can run 10-100x slower)")


def apply_threads(args: argparse.Namespace) -> None:
    import torch

    threads = getattr(args, "threads", 0)
    if threads < 0:
        raise ValueError(f"--threads must be >= 0 (0 keeps torch's default), got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)


def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """Options of :class:`merdg.experiments.launchers.LauncherOptions`."""
    g = parser.add_argument_group("launcher")
    g.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit-local"],
                   help="local: this machine; slurm: a Slurm job array through submitit "
                   "(pip install 'merdg[slurm]'); submitit-local: submitit on this machine")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local launcher: concurrent worker processes (1: in this process)")
    g.add_argument("--no-wait", action="store_true",
                   help="submitit launchers: submit and return (run the command again later)")
    g.add_argument("--timeout-min", type=int, default=24 * 60, metavar="MINUTES",
                   help="submitit: minutes per job")
    g.add_argument("--gpus-per-job", type=int, metavar="N",
                   help="submitit: GPUs per job (default: 1 with --device cuda, else 0)")
    g.add_argument("--cpus-per-job", type=int, default=4, metavar="N",
                   help="submitit: CPUs per job")
    g.add_argument("--mem-gb", type=float, metavar="GB",
                   help="submitit: memory per job (default: the cluster's)")
    g.add_argument("--partition", metavar="NAME",
                   help="Slurm partition (default: the cluster's)")
    g.add_argument("--max-parallel", type=int, metavar="N",
                   help="Slurm: at most this many jobs at once (default: no limit)")
    g.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                   help="further Slurm parameter, repeatable (e.g. account=lab, qos=high)")


def launcher_options(args: argparse.Namespace, device: str = "cpu"):
    """:class:`merdg.experiments.launchers.LauncherOptions` from :func:`add_launcher_args`."""
    from merdg.experiments.launchers import LauncherOptions

    return LauncherOptions(
        name=args.launcher, workers=args.workers, wait=not args.no_wait,
        timeout_min=args.timeout_min,
        gpus_per_job=args.gpus_per_job if args.gpus_per_job is not None else int(
            device.startswith("cuda")),
        cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb, partition=args.partition,
        max_parallel=args.max_parallel, slurm_options=parse_options(args.slurm_option,
                                                                    "--slurm-option"))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message is logged (it may be replaced after
    the handler was made, e.g. by a caller capturing the output)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; sys.stderr is used
        pass


def log_progress_to_stderr() -> None:
    """Show merdg's INFO messages (resuming, one line per epoch) on stderr, once."""
    logger = logging.getLogger("merdg")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_PlainFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class _PlainFormatter(logging.Formatter):
    """A progress line alone on a terminal, after a timestamp when standard error is a file or
    a pipe (a log read later); a warning starts with ``warning:``, as the other warning lines
    merdg prints."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message if watched() else f"{timestamp(record.created)} {message}"

