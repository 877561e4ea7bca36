"""Optional TensorBoard logging of a training run (``RunConfig.tensorboard``, ``--tensorboard``).

Every scalar of the JSON-lines records also goes to TensorBoard event files under
``<out_dir>/tensorboard``: each training step's loss terms (``step/ce``, ``step/mer``,
``step/mer_spec/<modality>``, ...), and once per epoch their means (``train/...``), the
source-val and target accuracies and losses (``val/acc``, ``target/loss``, ...), the
per-modality head accuracies (``target/probe_acc/<modality>``), the per-domain validation
accuracies (``val/per_domain/<domain>``) and the epoch time. ``records.jsonl`` stays the
complete record; TensorBoard is a view. Needs the optional extra ``tensorboard``
(``pip install 'merdg[tensorboard]'``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardLogger", "flatten_scalars"]

INSTALL_HINT = "pip install 'merdg[tensorboard]'"


def flatten_scalars(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``("a/b/c", value)`` for every int/float leaf of a nested dict (booleans skipped)."""
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten_scalars(value, name)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)


class TensorBoardLogger:
    """Writes a run's scalars to ``log_dir`` with ``torch.utils.tensorboard.SummaryWriter``.

    Args:
        log_dir: Directory of the event files.

    A rerun in the same directory first deletes the previous event files, as training
    replaces ``records.jsonl``.

    Raises:
        RuntimeError: The ``tensorboard`` package is not installed (the message says how to
            install it), raised when the run starts rather than after training.
    """

    # record keys that are scalars per epoch; "run" (the config) and "epoch" itself are not
    EPOCH_KEYS = ("train", "val", "target", "time_s")

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise RuntimeError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT} "
                               f"({err})") from err
        for stale in Path(log_dir).glob("events.out.tfevents.*"):
            stale.unlink()
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_steps(self, logs: Sequence[Mapping[str, float]], first_step: int) -> None:
        """Per-step training terms; ``logs[i]`` is step ``first_step + i + 1``."""
        for i, entry in enumerate(logs):
            for name, value in flatten_scalars(entry, "step"):
                self.writer.add_scalar(name, value, first_step + i + 1)

    def log_record(self, record: Mapping[str, Any]) -> None:
        """An epoch record of ``records.jsonl`` (x axis: the step count at the epoch's end)."""
        step = int(record["steps"])
        scalars = {k: record[k] for k in self.EPOCH_KEYS if k in record}
        for name, value in flatten_scalars(scalars):
            self.writer.add_scalar(name, value, step)
        self.writer.add_scalar("epoch", float(record["epoch"]), step)
        self.writer.flush()

    def log_evaluations(self, columns: Mapping[str, Any], step: int) -> None:
        """The evaluations of the selected model (``selected/<column>``) at ``step``."""
        for name, value in flatten_scalars(dict(columns), "selected"):
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()
