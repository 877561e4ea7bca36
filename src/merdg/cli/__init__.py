"""The ``merdg`` command line. Each subcommand lives in a module of :mod:`merdg.cli` that
defines ``register(subparsers)``; modules are discovered, so adding a command touches one file.

Errors caused by the user's input (a missing file, an unknown name, a bad value) are printed as
one line and exit with status 2; set ``MERDG_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import merdg

NOT_COMMANDS = ("options", "__main__")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="merdg",
        description="Multimodal domain generalization with MER-DG (ICML 2026).",
    )
    parser.add_argument("--version", action="version", version=f"merdg {merdg.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name not in NOT_COMMANDS:
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
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
        one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
        print(f"merdg {_command(args)}: error: {one_line}", file=sys.stderr)
        return 2


def _command(args) -> str:
    """The command as typed: ``train``, or ``data check`` for a command with actions."""
    action = getattr(args, "data_command", None)
    return f"{args.command} {action}" if action else args.command


if __name__ == "__main__":
    sys.exit(main())
