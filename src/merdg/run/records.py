"""Run records: JSON-lines files that hold everything needed to rebuild tables.

Every line of ``records.jsonl`` is one epoch and embeds the run's full config, hparams, the
package version and the git hash (DomainBed convention), so tables can be built from the records
alone.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import merdg

__all__ = ["WriteFailedError", "append_jsonl", "fsync_dir", "git_revision", "read_jsonl",
           "run_metadata", "writing", "write_json_atomic", "write_jsonl_atomic"]

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# what torch.save raises when its file's writes fail (e.g. on a full disk)
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


class WriteFailedError(OSError):
    """A run file could not be written (a full disk, a quota, an I/O error); what was on disk
    before is intact (every write goes to a temporary file first)."""


def write_failure(path: str | os.PathLike, err: BaseException, note: str = "") -> WriteFailedError:
    """The one-line error for a failed write of ``path`` (``note``: what is still intact)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        reason = f"the disk is full ({os.strerror(err.errno)})"
    elif isinstance(err, OSError):
        reason = f"the write failed ({err.strerror or err})"
    else:
        reason = f"the write failed, most likely because the disk is full (torch: {err})"
    text = f"cannot write {path}: {reason}"
    return WriteFailedError(text + (f"; {note}" if note else ""))


@contextmanager
def writing(path: str | os.PathLike, note: str = "", cleanup: str | os.PathLike | None = None
            ) -> Iterator[None]:
    """Turn a failed write of ``path`` into one :class:`WriteFailedError` line.

    Args:
        path: The file being written (named in the message).
        note: What is still intact (appended to the message).
        cleanup: A temporary file to remove when the write fails (frees the space it took).
    """
    try:
        yield
    except WriteFailedError:
        raise
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(m in str(err)
                                                     for m in TORCH_WRITE_FAILURES):
            raise
        if cleanup is not None:
            Path(cleanup).unlink(missing_ok=True)
        raise write_failure(path, err, note) from err


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in directory ``path`` durable (a no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def git_revision() -> str | None:
    """The git commit of the merdg source tree (``+dirty`` if modified), or None outside git."""
    root = Path(merdg.__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_metadata() -> dict[str, Any]:
    import torch

    return {"merdg_version": merdg.__version__, "git": git_revision(),
            "torch_version": str(torch.__version__)}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def append_jsonl(path: str | os.PathLike, record: dict[str, Any], note: str = "") -> None:
    """Append one record as a line and flush it to disk.

    Raises:
        WriteFailedError: The write failed (``note`` says what is intact); a half line may be
            left at the end, which :func:`read_jsonl` reports and a resumed run rewrites.
    """
    with writing(path, note), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_clean(record), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any, note: str = "") -> None:
    """Write JSON through a temporary file, fsync and a rename, so readers never see half a
    file (a crash leaves the old file or the new one).

    Raises:
        WriteFailedError: The write failed; ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n"
    with writing(path, note, cleanup=tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a malformed line raises with the file and line number."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed record ({err})") from err


def write_jsonl_atomic(path: str | os.PathLike, records: list[dict[str, Any]],
                       note: str = "") -> None:
    """Replace a JSON-lines file with ``records`` through a temporary file and a rename.

    Raises:
        WriteFailedError: The write failed; ``path`` is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, note, cleanup=tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(_clean(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
