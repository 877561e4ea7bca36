"""A run directory's life: start afresh, resume from the checkpoint, save after every epoch,
finish.

Only the main process writes (``out`` is None elsewhere). The order of writes makes a kill at
any moment harmless: after each epoch the checkpoint (which holds every record so far) is
replaced atomically, then the epoch's record is appended to ``records.jsonl``; on resume the
records file is rewritten from the checkpoint, so a line written after the checkpoint, or half
a line, never survives, and no record is lost. ``done`` is written after ``summary.json``, and
the checkpoint is deleted last.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from merdg import dist as mdist
from merdg.algorithms import Algorithm
from merdg.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from merdg.hparams import seed_hash
from merdg.records import append_jsonl, write_json_atomic, write_jsonl_atomic

__all__ = ["decide_start", "finish", "load_state", "save_state", "start_fresh"]

RUN_FILES = ("records.jsonl", "summary.json", "done", CHECKPOINT_NAME)


def _same(a: Any, b: Any) -> bool:
    canon = lambda x: json.dumps(x, sort_keys=True, default=str)  # noqa: E731
    return canon(a) == canon(b)


def finished_in(out: Path, identity: dict[str, Any]) -> bool:
    """``out`` holds a ``done`` marker of a run with this identity."""
    if not all((out / name).exists() for name in ("done", "summary.json", "config.json")):
        return False
    return _same(json.loads((out / "config.json").read_text()).get("identity"), identity)


def decide_start(out: Path, identity: dict[str, Any], resume: bool) -> dict[str, Any]:
    """``{"kind": "finished", "summary": ...}``, ``{"kind": "resume", "epoch": e}`` or
    ``{"kind": "fresh"}`` (main process; the caller broadcasts it).

    Raises:
        CheckpointMismatchError: ``out`` holds a checkpoint of another run.
    """
    if not resume:
        return {"kind": "fresh"}
    if finished_in(out, identity):
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)  # left if killed right after `done`
        return {"kind": "finished", "summary": json.loads((out / "summary.json").read_text())}
    if (out / CHECKPOINT_NAME).exists():
        checkpoint = load_checkpoint(out / CHECKPOINT_NAME, identity)
        return {"kind": "resume", "epoch": checkpoint["epoch"]}
    return {"kind": "fresh"}


def start_fresh(out: Path, run_info: dict[str, Any], identity: dict[str, Any]) -> None:
    """Remove an earlier run's files and write ``config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    write_json_atomic(out / "config.json", {**run_info, "identity": identity})


def load_state(path: Path, identity: dict[str, Any], algorithm: Algorithm,
               device: torch.device, seed: int, epoch: int) -> list[dict[str, Any]]:
    """Load the checkpoint into ``algorithm`` (weights, optimizer) and this process' RNGs;
    returns its records (every rank calls this).

    Raises:
        FileNotFoundError: This rank cannot see the checkpoint (no shared filesystem).
        RuntimeError: This rank read another epoch than rank 0.
    """
    if not path.exists():
        raise FileNotFoundError(f"rank {mdist.rank()} cannot read {path}; multi-node runs need "
                                "out_dir on a filesystem every node shares")
    checkpoint = load_checkpoint(path, identity, map_location=device)
    if checkpoint["epoch"] != epoch:
        raise RuntimeError(f"rank {mdist.rank()} read epoch {checkpoint['epoch']} from {path}, "
                           f"rank 0 read epoch {epoch}")
    algorithm.load_state_dict(checkpoint["algorithm"])
    algorithm.optimizer.load_state_dict(checkpoint["optimizer"])
    _restore_rng(checkpoint, device, seed)
    return checkpoint["records"]


def _restore_rng(checkpoint: dict[str, Any], device: torch.device, seed: int) -> None:
    states = checkpoint["rng"]
    if len(states) == mdist.world_size():
        set_rng_state(states[mdist.rank()], device)
        return
    warnings.warn(f"the checkpoint holds the random state of {len(states)} ranks, this run has "
                  f"{mdist.world_size()}: reseeding, so the rest of the run is not bit-identical "
                  "to an uninterrupted one", stacklevel=3)
    state = seed_hash("resume", seed, checkpoint["epoch"], mdist.rank())
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)


def save_state(out: Path | None, identity: dict[str, Any], algorithm: Algorithm,
               device: torch.device, records: list[dict[str, Any]]) -> None:
    """Checkpoint after an epoch, then append the epoch's record (every rank calls this: the
    RNG states of all ranks are gathered; only the main process, ``out``, writes)."""
    states = mdist.all_gather_object(rng_state(device))
    if out is None:
        return
    save_checkpoint(out / CHECKPOINT_NAME, {
        # records and identity as plain JSON data (what weights_only loading accepts)
        "identity": identity, "epoch": len(records), "rng": states,
        "records": json.loads(json.dumps(records, default=str)),
        "algorithm": algorithm.state_dict(), "optimizer": algorithm.optimizer.state_dict(),
        "world_size": mdist.world_size()})
    append_jsonl(out / "records.jsonl", records[-1])


def rewrite_records(out: Path, records: list[dict[str, Any]]) -> None:
    """Make ``records.jsonl`` hold exactly the checkpoint's records."""
    write_jsonl_atomic(out / "records.jsonl", records)


def finish(out: Path, summary: dict[str, Any], algorithm: Algorithm, run_info: dict[str, Any],
           save_model: bool) -> None:
    """Final weights (optional), ``summary.json``, ``done``; then drop the checkpoint."""
    if save_model:
        torch.save({"state_dict": algorithm.state_dict(), "run": run_info}, out / "model.pt")
    write_json_atomic(out / "summary.json", summary)
    (out / "done").write_text("done\n")
    (out / CHECKPOINT_NAME).unlink(missing_ok=True)
