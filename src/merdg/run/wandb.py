"""Optional Weights & Biases logging of a training run, beside TensorBoard.

The same scalars as :class:`merdg.run.tensorboard.TensorBoardLogger` (each training step's loss
terms as ``step/...``; per epoch the record's ``train/...``, ``val/...``, ``target/...``,
``time_s`` and ``epoch``), at the same x values (W&B's ``step`` = training steps done), so a run
reads the same in both. ``records.jsonl`` stays the complete record.

The run's files go to ``<run_dir>/wandb``, the debug logs of W&B's service process included
(``<run_dir>/wandb/cache``, unless ``WANDB_CACHE_DIR`` says otherwise), so nothing is written
under the home directory. The default mode is **offline**: nothing leaves the machine and no
account is needed; upload later with ``wandb sync <run_dir>/wandb/offline-run-*``.
``mode="online"`` (or ``WANDB_MODE=online``) streams to the W&B server instead. Needs the
optional extra ``wandb`` (``pip install 'merdg[wandb]'``).

:func:`check_wandb` is what ``merdg train``, ``bench`` and ``sweep`` run before any work: the
package, the mode and, online, that credentials exist (``WANDB_API_KEY``, or ``wandb login``'s
entry in ``~/.netrc``); it does not contact the server.
"""

from __future__ import annotations

import netrc
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from merdg.run.tensorboard import flatten_scalars

__all__ = ["WandbLogger", "check_wandb"]

INSTALL_HINT = "pip install 'merdg[wandb]'"
MODES = ("offline", "online", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"
# W&B's own folders, kept under the run's wandb/ folder unless the user chose them
OWN_FOLDERS = {"WANDB_CACHE_DIR": "cache", "WANDB_DATA_DIR": "data"}


def wandb_mode(mode: str | None = None) -> str:
    """``mode``, else ``$WANDB_MODE``, else ``offline``; checked.

    Raises:
        ValueError: Not one of :data:`MODES`.
    """
    where = "" if mode else " (WANDB_MODE)"
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in MODES:
        raise ValueError(f"W&B mode must be one of {MODES}, got {mode!r}{where}")
    return mode


def check_wandb(mode: str | None = None) -> str:
    """Check that W&B logging can start, before any work; returns the mode.

    Raises:
        ValueError: An unknown mode.
        RuntimeError: The ``wandb`` package is missing, or the mode is online and no
            credentials are found (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or an
            entry for the W&B host in the netrc file that ``wandb login`` writes).
    """
    mode = wandb_mode(mode)
    try:
        import wandb  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"--wandb needs the wandb package: {INSTALL_HINT} ({err})") from err
    if mode == "online" and not _has_credentials():
        host = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname
        raise RuntimeError(
            f"--wandb with WANDB_MODE=online needs W&B credentials and none were found (no "
            f"WANDB_API_KEY, no entry for {host} in {_netrc_path()}): run `wandb login` or set "
            "WANDB_API_KEY, or log offline (unset WANDB_MODE) and upload later with "
            "`wandb sync OUT/wandb/offline-run-*`")
    return mode


def _netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def _has_credentials() -> bool:
    """An API key or identity token in the environment, or in the netrc file for the host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname
    try:
        entry = netrc.netrc(str(_netrc_path())).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


@contextmanager
def _own_folders_under(directory: Path) -> Iterator[None]:
    """W&B's cache and data folders (its service writes debug logs there, by default under
    the home directory) go under ``directory`` while a run starts, unless the user set them."""
    chosen = {name: str(directory / sub) for name, sub in OWN_FOLDERS.items()
              if not os.environ.get(name)}
    os.environ.update(chosen)
    try:
        yield
    finally:
        for name in chosen:
            os.environ.pop(name, None)


class WandbLogger:
    """Writes a run's scalars to a W&B run whose files live under ``<run_dir>/wandb``.

    Args:
        run_dir: The training run's output directory.
        config: The run's configuration, stored as the W&B run config (filterable in the UI).
        project: W&B project (default: ``$WANDB_PROJECT``, else ``merdg``).
        name: Run name shown by W&B (default: the run directory's name).
        group: W&B group, e.g. the sweep or benchmark the run belongs to.
        mode: ``offline`` (default, or ``$WANDB_MODE``), ``online`` or ``disabled``.
        entity: W&B entity, a user or team (default: ``$WANDB_ENTITY``, else the account's).

    A rerun in the same directory first deletes the W&B run folders a previous logger left in
    ``<run_dir>/wandb``, as training replaces ``records.jsonl`` (a resumed run logs its earlier
    records again, as the TensorBoard logger does).

    Raises:
        RuntimeError: The ``wandb`` package is not installed (the message says how to install
            it), online without credentials (:func:`check_wandb`), or W&B could not start the
            run (one line with its reason).
        ValueError: An unknown mode.
    """

    EPOCH_KEYS = ("train", "val", "target", "time_s")

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any] | None = None,
                 project: str | None = None, name: str | None = None,
                 group: str | None = None, mode: str | None = None,
                 entity: str | None = None) -> None:
        mode = check_wandb(mode)
        import wandb

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.dir = run_dir / "wandb"
        self._remove_previous_runs()
        try:
            with _own_folders_under(self.dir):
                self.run = wandb.init(
                    project=project or os.environ.get("WANDB_PROJECT") or "merdg",
                    entity=entity, name=name or run_dir.resolve().name, group=group,
                    mode=mode, dir=str(run_dir), config=dict(config or {}),
                    settings=wandb.Settings(console="off"))
        except Exception as err:  # W&B raises its own types (usage, authentication, network)
            text = " ".join(str(err).split())
            raise RuntimeError(f"W&B could not start the run ({type(err).__name__}: {text})"
                               ) from err

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
