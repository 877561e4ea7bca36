"""Checkpoints that let a killed run continue where it stopped.

A checkpoint holds everything the rest of a run depends on: the algorithm's weights, the
optimizer state, the random number generator states of torch (CPU and CUDA), numpy and Python
(one set per rank), the number of finished epochs (which is also the sampler's next epoch, since
:class:`~merdg.datasets.samplers.BalancedDomainBatchSampler` reshuffles from ``(seed, epoch)``),
and the records so far. It also stores the *identity* of the run (config and resolved hparams),
and :func:`load_checkpoint` refuses a checkpoint whose identity differs from the run's.

Writes are atomic (temporary file, fsync, rename), so a process killed at any moment leaves
either the previous checkpoint or the new one, never half of one. The sha256 of every file is
computed while it is written and recorded next to it by
:meth:`merdg.run.directory.RunDir.write_checkpoint`; :func:`read_verified` refuses a file whose
bytes changed since (a flipped bit, a truncated copy), so a damaged checkpoint is never
resumed from silently. ``docs/reliability.md`` describes the write order and every kill point.
"""

from __future__ import annotations

import hashlib
import io
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
from merdg.run.records import writing

__all__ = ["CheckpointDamagedError", "CheckpointMismatchError", "epoch_payload", "load_checkpoint",
           "read_verified", "restore_rng", "restore_training_state", "rng_state",
           "set_rng_state", "state_digest", "write_torch_file"]

FORMAT = 1


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with a different config or hparams."""


class CheckpointDamagedError(ValueError):
    """A checkpoint (or ``model.pt``) changed on disk after it was written: its sha256 is not
    the one recorded next to it."""


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


def write_torch_file(tmp: str | os.PathLike, payload: dict[str, Any], target: str | os.PathLike,
                     note: str = "") -> str:
    """Write ``payload`` to the temporary file ``tmp`` (``torch.save``, fsync); returns the
    sha256 of what was written. The caller renames ``tmp`` onto ``target`` afterwards.

    Raises:
        WriteFailedError: The write failed (a full disk, ...): one line naming ``target`` and
            ``note`` (what is still intact); ``tmp`` is removed.
    """
    tmp = Path(tmp)
    digest = hashlib.sha256()
    with writing(target, note, cleanup=tmp):
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f, digest)
            try:
                torch.save(payload, writer)
            except RuntimeError:  # torch reports a failed write as "unexpected pos ..."
                if writer.error is not None:
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
    return digest.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through it (no second read of the file) and
    keeps the first write error (torch replaces it by a RuntimeError without the cause)."""

    def __init__(self, file: Any, digest: Any) -> None:
        super().__init__()
        self.file, self.digest = file, digest
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            written = self.file.write(data)
            if written != len(memoryview(data)):
                raise OSError(f"short write ({written} of {len(memoryview(data))} bytes)")
        except OSError as err:
            self.error = self.error or err
            raise
        self.digest.update(data)
        return written

    def flush(self) -> None:
        self.file.flush()


def read_verified(path: str | os.PathLike, digests: dict[str, int] | None,
                  map_location: torch.device | str = "cpu", what: str = "a torch file"
                  ) -> dict[str, Any]:
    """Load a torch file whose sha256 must be one of ``digests`` (``{sha256: epoch}``, as
    recorded when it was written); ``digests=None`` skips the check (files written before
    digests were recorded).

    Raises:
        CheckpointDamagedError: Its sha256 is not a recorded one, or the recorded epoch differs
            from the one it holds (the file changed after it was written).
        ValueError: It cannot be read as a torch file.
    """
    path = Path(path)
    data = path.read_bytes()
    if digests is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest not in digests:
            raise CheckpointDamagedError(f"{path}: damaged (its sha256 {digest[:12]}... is not "
                                         "the one recorded when it was written)")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{path}: cannot be read as {what} ({type(err).__name__}: "
                         f"{first})") from err
    if (digests is not None and isinstance(payload, dict) and "epoch" in payload
            and payload["epoch"] != digests[digest]):
        raise CheckpointDamagedError(f"{path}: holds epoch {payload['epoch']}, but was recorded "
                                     f"as epoch {digests[digest]}")
    return payload


def load_checkpoint(path: str | os.PathLike, identity: dict[str, Any],
                    map_location: torch.device | str = "cpu",
                    digests: dict[str, int] | None = None) -> dict[str, Any]:
    """Load a checkpoint, verify it against ``digests`` (see :func:`read_verified`) and check
    that it belongs to the run described by ``identity``.

    Raises:
        CheckpointDamagedError: The file changed after it was written.
        CheckpointMismatchError: The checkpoint's identity differs (the message lists the
            differing entries).
        ValueError: The file is not a readable merdg checkpoint.
    """
    try:
        payload = read_verified(path, digests, map_location, what="a merdg checkpoint")
    except CheckpointDamagedError:
        raise
    except ValueError as err:
        raise ValueError(f"{err}; delete it to start the run over") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a merdg checkpoint (format {FORMAT})")
    diffs = identity_differences(payload["identity"], identity, labels=("checkpoint", "now"))
    if diffs:
        raise CheckpointMismatchError(
            f"{path} was written by a different run; differences: " + "; ".join(diffs[:10])
            + ". Use another output directory, or restart the run (merdg train --restart).")
    return payload


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a model's weights (names, dtypes, shapes and bytes of every tensor, in name
    order): the same weights give the same digest whatever file holds them, or none."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        flat = tensor.contiguous().reshape(-1)  # view() needs a dimension to reinterpret
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def epoch_payload(identity: dict[str, Any], algorithm: Any, device: torch.device,
                  records: list[dict[str, Any]], selected: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint after an epoch holds. Every rank calls this (the RNG states of all
    ranks are gathered); only the main process writes the result.

    Args:
        selected: The model of the epoch source validation selects so far: ``{"epoch": e,
            "state": its weights}``, with ``"state": None`` when it is this epoch's (not stored
            twice), or when its weights were lost (a checkpoint of an earlier merdg, which kept
            none, was resumed).
    """
    states = mdist.all_gather_object(rng_state(device))
    return {
        # identity as plain data, records as one JSON text (what weights_only loading accepts;
        # one string pickles in microseconds, where nested records took most of a write)
        "identity": identity, "epoch": len(records), "rng": states,
        "steps": int(records[-1]["steps"]) if records else 0,
        "records": json.dumps(records, default=str),
        "algorithm": algorithm.state_dict(), "optimizer": algorithm.optimizer.state_dict(),
        "selected": selected, "world_size": mdist.world_size()}


def restore_training_state(checkpoint: dict[str, Any], algorithm: Any, device: torch.device,
                           seed: int, rng: bool = True) -> list[dict[str, Any]]:
    """Load weights, optimizer and (``rng``) this rank's RNG states; returns the records so
    far."""
    algorithm.load_state_dict(checkpoint["algorithm"])
    algorithm.optimizer.load_state_dict(checkpoint["optimizer"])
    if rng:
        restore_rng(checkpoint, device, seed)
    records = checkpoint["records"]
    return json.loads(records) if isinstance(records, str) else records


def restore_rng(checkpoint: dict[str, Any], device: torch.device, seed: int) -> None:
    """This rank's RNG states from ``checkpoint`` (reseeded, with a warning, when it was
    written by another number of ranks)."""
    states = checkpoint["rng"]
    if len(states) == mdist.world_size():
        set_rng_state(states[mdist.rank()], device)
        return
    warnings.warn(f"the checkpoint holds the random state of {len(states)} ranks, this run "
                  f"has {mdist.world_size()}: reseeding, so the rest of the run is not "
                  "bit-identical to an uninterrupted one", stacklevel=3)
    state = seed_hash("resume", seed, checkpoint["epoch"], mdist.rank())
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)
