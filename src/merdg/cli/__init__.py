"""The ``merdg`` command line. Each subcommand lives in a module of :mod:`merdg.cli` that
defines ``register(subparsers)``; modules are discovered, so adding a command touches one file.

Every parser is a :class:`merdg.cli.parser.Parser`: options are matched by their full name only
(no prefix matching), and a syntax error is one line, ``merdg <command>: error: ...; see merdg
<command> --help``, with exit status 2. Errors caused by the user's input (a missing file, an
unknown name, a bad value) are printed as one line too and exit with status 2; set
``MERDG_DEBUG=1`` to see the traceback. A reader that stops reading (``merdg list corruptions |
head``) ends the command quietly, with the status of a process killed by SIGPIPE (141).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from pathlib import Path
from typing import Any

import merdg
from merdg.cli.parser import Parser, commands_of, unrecognized_message, walk
from merdg.run.config import run_options

NOT_COMMANDS = ("options", "parser", "__main__")
SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a process a closed pipe ended


def build_parser() -> Parser:
    parser = Parser(
        prog="merdg",
        description="Multimodal domain generalization with MER-DG (ICML 2026).",
    )
    parser.add_argument("--version", action="version", version=f"merdg {merdg.__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="`merdg COMMAND --help` describes each")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name not in NOT_COMMANDS:
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    for each in walk(parser):  # the innermost parser's default wins: the command's own
        each.set_defaults(command_parser=each)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line parsed; a syntax error exits with status 2 after one line, from the
    parser of the command it belongs to."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        axes = {opt.flag: opt.axis for _, opt, _ in run_options() if opt.axis}
        args.command_parser.error(unrecognized_message(args.command_parser, extras, axes,
                                                        commands_of(parser)))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's shutdown
        return status
    except BrokenPipeError:
        _silence_stdout()
        return SIGPIPE_STATUS
    except KeyboardInterrupt:
        if os.environ.get("MERDG_DEBUG"):
            raise
        print(f"merdg {_command(args)}: interrupted; what was written so far is intact (an "
              "interrupted run resumes from its last checkpoint when the same command is run "
              "again)", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError, TypeError) as err:
        if os.environ.get("MERDG_DEBUG"):
            raise
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"merdg {_command(args)}: error: {_one_line(message)}", file=sys.stderr)
        return 2


def console() -> int:
    """The ``merdg`` command: :func:`main` with Python warnings shown as one ``warning:`` line
    each, as merdg's own warnings are (:func:`show_warning`)."""
    warnings.showwarning = show_warning
    return main()


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """One line per warning: ``warning: <message>``, with the category and place for warnings
    that do not come from merdg (a library's deprecation, say)."""
    text = _one_line(str(message))
    if "merdg" not in Path(filename).parts:
        text += f" ({category.__name__}, {Path(filename).name}:{lineno})"
    try:
        print(f"warning: {text}", file=file if file is not None else sys.stderr)
    except OSError:  # stderr closed: nowhere to show it
        pass


def _one_line(text: str) -> str:
    """``text``'s lines joined by single spaces (a message printed as one line)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush has nowhere to fail (the
    recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a fd
        pass


def _command(args) -> str:
    """The command as typed: ``train``, or ``data check`` for a command with actions."""
    action = getattr(args, "data_command", None)
    return f"{args.command} {action}" if action else args.command


if __name__ == "__main__":
    sys.exit(main())
