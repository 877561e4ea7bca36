"""Checkpoints that let a killed run continue where it stopped.

A checkpoint holds everything the rest of a run depends on: the algorithm's weights, the
optimizer state, the random number generator states of torch (CPU and CUDA), numpy and Python
(one set per rank), the number of finished epochs (which is also the sampler's next epoch, since
:class:`~merdg.datasets.samplers.BalancedDomainBatchSampler` reshuffles from ``(seed, epoch)``),
and the records so far. It also stores the *identity* of the run (config and resolved hparams),
and :func:`load_checkpoint` refuses a checkpoint whose identity differs from the run's.

Writes are atomic (temporary file, fsync, rename), so a process killed at any moment leaves
either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CHECKPOINT_NAME", "CheckpointMismatchError", "RunDirBusyError", "is_locked",
           "load_checkpoint", "rng_state", "run_dir_lock", "save_checkpoint", "set_rng_state"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with a different config or hparams."""


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process' RNG states (torch CPU, CUDA of ``device``, numpy, Python)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "python": random.getstate(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def identity_differences(saved: dict[str, Any], expected: dict[str, Any],
                         prefix: str = "") -> list[str]:
    """Dotted names of the entries that differ between two identity dicts."""
    diffs = []
    for key in sorted(set(saved) | set(expected)):
        a, b = saved.get(key, "<absent>"), expected.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += identity_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} (checkpoint) vs {b!r} (now)")
    return diffs


def load_checkpoint(path: str | os.PathLike, identity: dict[str, Any],
                    map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint and check that it belongs to the run described by ``identity``.

    Raises:
        CheckpointMismatchError: The checkpoint's identity differs (the message lists the
            differing entries).
        ValueError: The file is not a readable merdg checkpoint.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); "
                         "delete it to start the run over") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a merdg checkpoint (format {FORMAT})")
    diffs = identity_differences(_canonical(payload["identity"]), _canonical(identity))
    if diffs:
        raise CheckpointMismatchError(
            f"{path} was written by a different run; differences: " + "; ".join(diffs[:10])
            + ". Use another output directory, or restart the run (merdg train --restart).")
    return payload


LOCK_NAME = ".lock"


class RunDirBusyError(RuntimeError):
    """Another live process is writing the same run directory."""


@contextmanager
def run_dir_lock(path: str | os.PathLike | None) -> Iterator[None]:
    """Hold an exclusive lock on run directory ``path`` (no-op for None).

    The lock is an ``flock`` on ``path/.lock``: the kernel drops it when its process dies, even
    by SIGKILL, so a killed run never leaves a stale lock behind.

    Raises:
        RunDirBusyError: Another live process holds the lock.
    """
    if path is None:
        yield
        return
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_NAME, "a") as handle:
        _acquire(handle, path)
        yield


def _acquire(handle: Any, path: Path) -> None:
    if fcntl is None:  # not POSIX: concurrent writers are not detected
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        raise RunDirBusyError(f"{path} is being written by another process; wait for it to "
                              "finish or use another output directory") from err
    except OSError as err:  # e.g. a network filesystem without flock support
        warnings.warn(f"cannot lock {path} ({err}); two processes writing this run directory "
                      "at once would not be detected", stacklevel=3)


def is_locked(path: str | os.PathLike) -> bool:
    """True when a live process holds the lock of run directory ``path``."""
    lock = Path(path) / LOCK_NAME
    if fcntl is None or not lock.exists():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False
