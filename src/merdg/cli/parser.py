"""The argument parser of every ``merdg`` command: argparse without its traps.

- **No prefix matching.** argparse accepts any unambiguous prefix of an option by default, so
  ``--seed 3`` on ``merdg bench`` silently meant ``--seeds 3``. Every parser here is built
  with ``allow_abbrev=False``: an option is given by its full name or refused.
- **One-line syntax errors.** A syntax error prints ``merdg <command>: error: <what>; see
  merdg <command> --help`` and exits with status 2, without the usage block (``--help`` shows
  it).
- **One way to show defaults.** Every option's help ends with ``(default: VALUE)`` when it has
  a default worth showing (lists space-separated), and ``(required)`` when it must be given.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from merdg.words import enumeration

__all__ = ["AXIS_FLAGS", "HelpFormatter", "Parser", "commands_of", "default_text",
           "unrecognized_message", "walk"]

# the experiment option that sets a run field per run in bench / sweep (Option.axis -> flag)
AXIS_FLAGS = {"targets": ("--targets", "its target through --targets DOMAIN [DOMAIN ...]"),
              "algorithms": ("--algorithms", "its algorithm through --algorithms NAME [NAME ...]"),
              "modality_sets": ("--modality-sets",
                                "its modalities through --modality-sets SET [SET ...]"),
              "seeds": ("--seeds", "its seed through --seeds N, which runs seeds 0 to N-1"),
              "trials": ("--trials", "its hparam trial through --trials N"),
              "setting": ("--setting", "its sources through --setting multi|single|all")}


def default_text(value: Any) -> str:
    """How a default reads in a help text: lists space-separated, others as typed."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: VALUE)`` to the help of an option whose default is worth showing
    (not None, False or empty) when the help does not say it already, and ``(required)`` to a
    required option's."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        worth = not (default is None or default is False or default == []
                     or default == argparse.SUPPRESS)  # 0 is worth showing
        shown = worth and action.option_strings and "(default: " not in text
        if shown:
            text += f" (default: {default_text(default).replace('%', '%%')})"
        if action.required and action.option_strings and "(required" not in text:
            text += " (required)"
        return text


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` without prefix matching and with one-line errors
    (the module docstring); subcommand parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

# flags of DomainBed (facebookresearch/DomainBed, domainbed/scripts/train.py and sweep.py) and
# MMDG-Bench (lihongzhao99/MMDG_Benchmark, its train_*.py) whose merdg counterpart a spelling
# match would miss or get wrong (--n_trials is not --trials): {flag: (merdg options, words)},
# the first of the space-separated options that the command has being its counterpart
FOREIGN_FLAGS = {
    "--n_trials": ("--seeds", "DomainBed's --n_trials (runs of each hparam setting) is --seeds "
                   "here; --trials is the hparam search"),
    "--n_hparams": ("--trials", "DomainBed's --n_hparams counts the default hparams among the "
                    "settings; --trials counts the random ones besides it (--trials N-1)"),
    "--test_envs": ("--targets --target", "domains are named here: --targets NAME [NAME ...] "
                    "(merdg train: --target NAME)"),
    "--test_env": ("--target --targets", "domains are named here: --target NAME (bench and "
                   "sweep: --targets NAME [NAME ...])"),
    "--output_dir": ("--out", "the output directory is --out DIR"),
    "--data_dir": ("--data-root", "the data folder is --data-root DIR"),
    "--datapath": ("--data-root", "the data folder is --data-root DIR"),
    "--hparams_seed": ("--hparams-seed", "--hparams-seed N"),
    "--holdout_fraction": ("--holdout-fraction", "--holdout-fraction F"),
    "--source_domain": ("--source", "--source NAME [NAME ...] (bench and sweep: --setting)"),
    "--target_domain": ("--target", "--target NAME (bench and sweep: --targets)"),
    "--steps": ("--hparams", "a step budget is an hparam: --hparams '{\"steps\": N}'"),
    "--checkpoint_freq": ("--hparams", "evaluation every K steps: --hparams "
                          "'{\"eval_every\": K}'"),
    "--nepochs": ("--hparams", "--hparams '{\"epochs\": N}'"),
    "--bsz": ("--hparams", "--hparams '{\"batch_size\": N}'"),
    "--lr": ("--hparams", "--hparams '{\"lr\": X}'"),
}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings]


def commands_of(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """``{flag: [command, ...]}`` over the commands under ``parser`` (``merdg``)."""
    owners: dict[str, list[str]] = {}
    for command in walk(parser):
        if command is not parser:
            for flag in _flags(command):
                owners.setdefault(flag, []).append(command.prog.removeprefix(f"{parser.prog} "))
    return owners


def unrecognized_message(parser: argparse.ArgumentParser, extras: Sequence[str],
                         axes: dict[str, str],
                         commands_of: dict[str, list[str]] | None = None) -> str:
    """``unrecognized arguments: ...`` with a hint per unknown option: the experiment option
    that sets it per run (``--seed`` on bench: ``--seeds``), merdg's counterpart of a DomainBed
    or MMDG-Bench flag (:data:`FOREIGN_FLAGS`; when the counterpart belongs to another command,
    as ``--trials`` to ``sweep`` only, which one), or the option of this command it looks like.

    Args:
        parser: The command's parser.
        extras: What it did not recognize.
        axes: ``{run flag: its Option.axis}`` of the run settings an experiment sets per run.
        commands_of: ``{flag: [command, ...]}``, the commands that have each flag.
    """
    hints = []
    known = _flags(parser)
    for flag in (e.split("=", 1)[0] for e in extras if e.startswith("--")):
        axis_flag, words = AXIS_FLAGS.get(axes.get(flag, ""), ("", ""))
        if axis_flag in known:
            hints.append(f"{flag} is an option of merdg train; {parser.prog} gives each run "
                         f"{words}")
            continue
        counterparts, words = FOREIGN_FLAGS.get(flag, ("", ""))
        if any(each in known for each in counterparts.split()):
            hints.append(f"{flag}: {words}")
            continue
        if counterparts:
            foreign_flag = counterparts.split()[0]
            owners = [f"merdg {name}" for name in (commands_of or {}).get(foreign_flag, [])]
            elsewhere = (f"; {foreign_flag} is an option of {enumeration(owners)}, "
                         f"{parser.prog} has none")
            hints.append(f"{flag}: {words}" + elsewhere * bool(owners))
            continue
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        if close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    return "; ".join(["unrecognized arguments: " + " ".join(extras), *hints])


def walk(parser: argparse.ArgumentParser) -> Iterable[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from walk(sub)
