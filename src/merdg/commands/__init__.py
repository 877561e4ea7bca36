"""Subcommands of the ``merdg`` CLI (one module each, discovered by :mod:`merdg.cli`)."""
