"""Optional Weights & Biases logging of a training run, beside TensorBoard.

The same scalars as :class:`merdg.run.tensorboard.TensorBoardLogger` (each training step's loss
terms as ``step/...``; per epoch the record's ``train/...``, ``val/...``, ``target/...``,
``time_s`` and ``epoch``), at the same x values (W&B's ``step`` = training steps done), so a run
reads the same in both. ``records.jsonl`` stays the complete record.

The run's files go to ``<run_dir>/wandb``. The default mode is **offline**: nothing leaves the
machine and no account is needed; upload later with ``wandb sync <run_dir>/wandb/offline-run-*``.
``mode="online"`` (or ``WANDB_MODE=online``) streams to the W&B server instead. Needs the
optional extra ``wandb`` (``pip install 'merdg[wandb]'``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merdg.run.tensorboard import flatten_scalars

__all__ = ["WandbLogger"]

INSTALL_HINT = "pip install 'merdg[wandb]'"
MODES = ("offline", "online", "disabled")


class WandbLogger:
    """Writes a run's scalars to a W&B run whose files live under ``<run_dir>/wandb``.

    Args:
        run_dir: The training run's output directory.
        config: The run's configuration, stored as the W&B run config (filterable in the UI).
        project: W&B project (default: ``$WANDB_PROJECT``, else ``merdg``).
        name: Run name shown by W&B (default: the run directory's name).
        group: W&B group, e.g. the sweep or benchmark the run belongs to.
        mode: ``offline`` (default, or ``$WANDB_MODE``), ``online`` or ``disabled``.

    A rerun in the same directory first deletes the W&B run folders a previous logger left in
    ``<run_dir>/wandb``, as training replaces ``records.jsonl`` (a resumed run logs its earlier
    records again, as the TensorBoard logger does).

    Raises:
        RuntimeError: The ``wandb`` package is not installed (the message says how to install
            it), raised when the run starts rather than after training.
        ValueError: An unknown mode.
    """

    EPOCH_KEYS = ("train", "val", "target", "time_s")

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None,
                 project: str | None = None, name: str | None = None,
                 group: str | None = None, mode: str | None = None) -> None:
        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        if mode not in MODES:
            raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}")
        try:
            import wandb
        except ImportError as err:
            raise RuntimeError(f"--wandb needs the wandb package: {INSTALL_HINT} ({err})") from err
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.dir = run_dir / "wandb"
        self._remove_previous_runs()
        self.run = wandb.init(
            project=project or os.environ.get("WANDB_PROJECT") or "merdg",
            name=name or run_dir.resolve().name, group=group, mode=mode, dir=str(run_dir),
            config=dict(config or {}), settings=wandb.Settings(console="off"))

    def _remove_previous_runs(self) -> None:
        """W&B run folders of an earlier logger in this run directory (only those)."""
        if not self.dir.is_dir():
            return
        for entry in self.dir.iterdir():
            if entry.name == "latest-run" and entry.is_symlink():
                entry.unlink()
            elif entry.is_dir() and not entry.is_symlink() and (
                    entry.name.startswith(("offline-run-", "run-"))):
                shutil.rmtree(entry)

    def log_steps(self, logs: Sequence[Mapping[str, float]], first_step: int) -> None:
        """Per-step training terms; ``logs[i]`` is step ``first_step + i + 1``."""
        for i, entry in enumerate(logs):
            scalars = dict(flatten_scalars(entry, "step"))
            if scalars:
                self.run.log(scalars, step=first_step + i + 1)

    def log_record(self, record: Mapping[str, Any]) -> None:
        """An epoch record of ``records.jsonl`` (x axis: the step count at the epoch's end)."""
        scalars = dict(flatten_scalars({k: record[k] for k in self.EPOCH_KEYS if k in record}))
        scalars["epoch"] = float(record["epoch"])
        self.run.log(scalars, step=int(record["steps"]))

    def log_evaluations(self, columns: Mapping[str, Any], step: int) -> None:
        """The evaluations of the selected model (``selected/<column>``) at ``step``."""
        scalars = {f"selected/{k}": float(v) for k, v in columns.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if scalars:
            self.run.log(scalars, step=step)

    def close(self) -> None:
        """Finish the W&B run; its files under ``<run_dir>/wandb`` are complete on return.

        ``run.finish()`` can return before W&B's service process has written the offline
        transaction log out (observed with wandb 0.31: a 7-byte ``.wandb`` file right after
        ``finish``), so when no other W&B run is active in this process the service is also
        shut down (``wandb.teardown()``), which waits for the writes; the next logger starts a
        new one.
        """
        import wandb

        self.run.finish()
        if wandb.run is None:
            wandb.teardown()
