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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merdg import dist as mdist
from merdg.hparams import seed_hash
from merdg.run.config import identity_differences

__all__ = ["CheckpointMismatchError", "epoch_payload", "load_checkpoint", "restore_training_state",
           "rng_state", "save_checkpoint", "set_rng_state"]

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


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any],
                    with_format: bool = True) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename); with
    ``with_format`` it is tagged as a merdg checkpoint (:func:`load_checkpoint` checks it)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload} if with_format else payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
    diffs = identity_differences(payload["identity"], identity, labels=("checkpoint", "now"))
    if diffs:
        raise CheckpointMismatchError(
            f"{path} was written by a different run; differences: " + "; ".join(diffs[:10])
            + ". Use another output directory, or restart the run (merdg train --restart).")
    return payload


def epoch_payload(identity: dict[str, Any], algorithm: Any, device: torch.device,
                  records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a checkpoint after an epoch holds. Every rank calls this (the RNG states of all
    ranks are gathered); only the main process writes the result."""
    states = mdist.all_gather_object(rng_state(device))
    return {
        # records and identity as plain JSON data (what weights_only loading accepts)
        "identity": identity, "epoch": len(records), "rng": states,
        "records": json.loads(json.dumps(records, default=str)),
        "algorithm": algorithm.state_dict(), "optimizer": algorithm.optimizer.state_dict(),
        "world_size": mdist.world_size()}


def restore_training_state(checkpoint: dict[str, Any], algorithm: Any, device: torch.device,
                           seed: int) -> list[dict[str, Any]]:
    """Load weights, optimizer and this rank's RNG states; returns the records so far."""
    algorithm.load_state_dict(checkpoint["algorithm"])
    algorithm.optimizer.load_state_dict(checkpoint["optimizer"])
    states = checkpoint["rng"]
    if len(states) == mdist.world_size():
        set_rng_state(states[mdist.rank()], device)
    else:
        warnings.warn(f"the checkpoint holds the random state of {len(states)} ranks, this run "
                      f"has {mdist.world_size()}: reseeding, so the rest of the run is not "
                      "bit-identical to an uninterrupted one", stacklevel=3)
        state = seed_hash("resume", seed, checkpoint["epoch"], mdist.rank())
        random.seed(state)
        np.random.seed(state)
        torch.manual_seed(state)
    return checkpoint["records"]
