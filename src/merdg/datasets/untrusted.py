"""Untrusted text and names from a data folder: decode it with errors that name the line, keep
the files it names inside the data root, and print it on one line.

A data folder is untrusted input (see ``docs/reliability.md``): a manifest cell, a video id in a
split file or a symlink in the tree must not make ``merdg`` read a file outside the folder the
user pointed it at (``/etc/passwd``, ``../../secret.npy``, a ``frames`` symlink to another
disk). Every reader resolves the files it opens, symlinks included, and refuses those that leave
the data root unless the user opts out with the dataset option ``allow_outside_root=true``.

Names from the data also end up in error messages; :func:`one_line` escapes line breaks, NUL
bytes and other control characters so that each problem stays one line. Text files (manifests,
split csvs) are read by :func:`read_utf8`: UTF-8 with or without a byte-order mark; anything else
(UTF-16, latin-1, binary) is an error naming the file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from merdg.datasets.preprocessing import DataError

__all__ = ["OPT_OUT", "check_flag", "is_absolute", "name_problem", "one_line", "outside_root",
           "plain_name_problem", "read_utf8", "resolve_in_root"]

OPT_OUT = "dataset option allow_outside_root=true reads it anyway"


def one_line(text: Any) -> str:
    """``str(text)`` with control characters (line breaks, NUL, BOM, ...) backslash-escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool; else a ValueError naming the option."""
    if not isinstance(value, bool):
        raise ValueError(f"dataset option {name} must be true or false, got {value!r}")
    return value


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot be part of a file name at all, or None: empty text, NUL bytes and
    line breaks (no user means them in a path)."""
    if not text:
        return "empty path"
    if "\0" in text:
        return "the path contains a NUL byte"
    if "\n" in text or "\r" in text:
        return "the path contains a line break"
    return None


def is_absolute(text: str) -> bool:
    """``/x``, ``C:\\x`` or ``\\\\server\\x``, on any platform."""
    return PurePosixPath(text).is_absolute() or bool(PureWindowsPath(text).drive)


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` (a video id, a file name) is not one plain path component, or None."""
    problem = name_problem(name)
    if problem is None and ("/" in name or "\\" in name or name in (".", "..")):
        problem = "not a plain file name (it holds a path separator or is '.' or '..')"
    return problem


def outside_root(root: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """Why ``path``, once ``..`` and every symlink are resolved, lies outside ``root``, or None.

    A path that does not exist is resolved as far as it exists (``os.path.realpath``).
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    return f"resolves to {one_line(real)}, outside the data root {one_line(real_root)}"


def resolve_in_root(root: Path, text: str, allow_outside_root: bool) -> tuple[Path, str | None]:
    """``root / text`` and why it may not be read (None when it may).

    Refused: :func:`name_problem` texts; unless ``allow_outside_root``, absolute paths and paths
    that leave ``root`` through ``..`` or a symlink.
    """
    problem = name_problem(text)
    if problem:
        return root / one_line(text), problem
    path = root / text
    if allow_outside_root:
        return path, None
    if is_absolute(text):
        return path, f"absolute path; paths are relative to the data root ({OPT_OUT})"
    reason = outside_root(root, path)
    return path, f"{reason} ({OPT_OUT})" if reason else None


def read_utf8(path: Path, what: str = "text file") -> str:
    """The text of ``path``, decoded as UTF-8 (a UTF-8 byte-order mark is dropped).

    Raises:
        DataError: UTF-16/32 (byte-order mark), a NUL byte or a byte sequence that is not UTF-8;
            the message names the file, the line and what to do.
    """
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise DataError(f"{path}: UTF-16/UTF-32 text (byte-order mark {data[:2].hex(' ')}); save "
                        f"the {what} as UTF-8")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise DataError(f"{path} line {line}: NUL byte; a {what} is UTF-8 text (UTF-16 text holds "
                        "NUL bytes: save it as UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path} line {line}: byte 0x{data[err.start]:02x} at column {column} is "
                        f"not UTF-8; save the {what} as UTF-8 (latin-1 and other encodings are "
                        "not read)") from None
