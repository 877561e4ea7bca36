"""The run directory: the only owner of a run's file names, status and writes.

A run directory holds (names: the constants of :class:`RunDir`):

- ``config.json``: the run's config, resolved hparams, sources, modalities, package version
  and git hash, and the run's full *identity* (config identity + resolved hparams + data);
- ``records.jsonl``: one line per epoch;
- ``checkpoint.pt``: the state after the last finished epoch (removed once the run is done);
- ``pretraining.pt``: the state of the unimodal pretraining stage (``--init unimodal``) after
  its last finished epoch (removed once the run is done);
- ``summary.json``: the epoch each selection rule picks; ``model.pt``: the final weights
  (optional); ``done``: written last, after ``summary.json``;
- ``failed``: the error of the last attempt (jobs only); ``job.json`` and ``log.txt``: the job
  description and log of a bench or sweep job; ``.lock``: the writer's lock;
  ``tensorboard/``: optional event files.

Status (:meth:`RunDir.status`) for a given config: ``absent`` (no run file),
``running`` (another live process holds the lock), ``foreign`` (the files belong to a run of
another config, or are not a merdg run's), ``finished``, ``failed`` or ``incomplete``
(started, interrupted; it resumes from its checkpoint).

Nothing here deletes a finished run or foreign files unless asked explicitly
(:meth:`RunDir.reset`, behind ``--overwrite``). Every write is atomic (temporary file, fsync,
rename), so a process killed at any moment leaves the previous state or the new one.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from merdg.run.config import RunConfig, config_identity, identity_differences
from merdg.run.records import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunDir", "RunDirBusyError", "RunDirConflictError", "STATUSES"]

STATUSES = ("absent", "running", "foreign", "finished", "failed", "incomplete")


class RunDirBusyError(RuntimeError):
    """Another live process is writing the same run directory."""


class RunDirConflictError(ValueError):
    """The directory holds a run of another config, or files merdg did not write."""


class RunDir:
    """One run's directory (see the module docstring)."""

    CONFIG = "config.json"
    RECORDS = "records.jsonl"
    SUMMARY = "summary.json"
    DONE = "done"
    FAILED = "failed"
    CHECKPOINT = "checkpoint.pt"
    PRETRAINING = "pretraining.pt"
    MODEL = "model.pt"
    JOB = "job.json"
    LOG = "log.txt"
    LOCK = ".lock"
    TENSORBOARD = "tensorboard"
    # what a run writes (a reset removes exactly these, and nothing else)
    RUN_FILES = (CONFIG, RECORDS, SUMMARY, DONE, FAILED, CHECKPOINT, CHECKPOINT + ".tmp", MODEL,
                 PRETRAINING, PRETRAINING + ".tmp")

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def finished_under(cls, root: str | os.PathLike) -> list[RunDir]:
        """Every run directory under ``root`` (recursively) that holds a ``done`` marker and
        its records, sorted by path."""
        return [cls(p.parent) for p in sorted(Path(root).rglob(cls.DONE))
                if p.is_file() and (p.parent / cls.RECORDS).is_file()]

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the run files (a :class:`RunDir` constant)."""
        return self.path / name

    @property
    def checkpoint_file(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def pretraining_file(self) -> Path:
        return self.path / self.PRETRAINING

    @property
    def model_file(self) -> Path:
        return self.path / self.MODEL

    @property
    def records_file(self) -> Path:
        return self.path / self.RECORDS

    @property
    def log_file(self) -> Path:
        return self.path / self.LOG

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    # --- reading -------------------------------------------------------------------------

    def _read_json(self, name: str) -> Any:
        file = self.path / name
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{file}: unreadable or truncated JSON ({err}); it was not "
                             "written completely by merdg") from err

    def read_info(self) -> dict[str, Any]:
        """``config.json``: config, resolved hparams, sources, modalities, identity, ...

        Raises:
            FileNotFoundError: No ``config.json`` (not a merdg run directory).
            ValueError: It is not a merdg ``config.json``.
        """
        if not (self.path / self.CONFIG).is_file():
            raise FileNotFoundError(f"{self.path / self.CONFIG} not found: {self.path} is not "
                                    "a merdg run directory")
        info = self._read_json(self.CONFIG)
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise ValueError(f"{self.path / self.CONFIG} is not a merdg run's config.json "
                             "(no 'config' entry)")
        return info

    def read_summary(self) -> dict[str, Any]:
        return self._read_json(self.SUMMARY)

    def read_records(self) -> list[dict[str, Any]]:
        """The per-epoch records ([] when there are none yet)."""
        file = self.path / self.RECORDS
        return list(read_jsonl(file)) if file.exists() else []

    def read_model_state(self) -> dict[str, Any]:
        """The final weights saved with ``save_model`` (``state_dict`` of the algorithm).

        Raises:
            FileNotFoundError: No ``model.pt``.
            ValueError: It cannot be read as merdg weights.
        """
        import torch

        file = self.model_file
        if not file.exists():
            raise FileNotFoundError(
                f"{file} not found: diagnostics need the trained weights; train with "
                "--save-model (merdg train) or --diagnose (merdg bench)")
        # the saved run info may hold torch.__version__, a str subclass the safe loader must know
        torch.serialization.add_safe_globals([torch.torch_version.TorchVersion])
        try:
            saved = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a truncated or foreign file
            raise ValueError(f"{file}: cannot be read as merdg weights ({err})") from err
        if not isinstance(saved, dict) or "state_dict" not in saved:
            raise ValueError(f"{file}: expected a dict with 'state_dict' (merdg train)")
        return saved["state_dict"]

    def saved_config(self) -> dict[str, Any] | None:
        """The ``config`` entry of ``config.json`` (None when there is none or it is not
        merdg's)."""
        try:
            return self.read_info()["config"]
        except (FileNotFoundError, ValueError):
            return None

    def failure(self) -> str:
        """The first line of the recorded error (``failed``), or ""."""
        file = self.path / self.FAILED
        text = file.read_text(errors="replace") if file.exists() else ""
        return text.splitlines()[0] if text else ""

    # --- status --------------------------------------------------------------------------

    def has_finished_run(self) -> bool:
        """A ``done`` marker (of whichever config)."""
        return (self.path / self.DONE).exists()

    def has_run_files(self) -> bool:
        return any((self.path / name).exists() for name in self.RUN_FILES)

    def differences(self, config: RunConfig) -> list[str]:
        """How the saved run's config differs from ``config`` ([] when it is the same run)."""
        saved = self.saved_config()
        if saved is None:
            return ["(no merdg config.json)"]
        return identity_differences(config_identity(saved), config.identity(),
                                    labels=("saved", "requested"))

    def is_locked(self) -> bool:
        """True when a live process holds the directory's lock."""
        lock = self.path / self.LOCK
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

    def status(self, config: RunConfig) -> str:
        """One of :data:`STATUSES` with respect to ``config`` (module docstring)."""
        if self.is_locked():
            return "running"
        if not self.has_run_files():
            return "absent"
        if (self.path / self.CONFIG).exists():
            if self.differences(config):
                return "foreign"
        elif any((self.path / n).exists() for n in self.RUN_FILES if n != self.FAILED):
            return "foreign"  # run files without a config.json: not written by merdg
        if (self.path / self.DONE).exists() and (self.path / self.SUMMARY).exists():
            return "finished"
        if (self.path / self.FAILED).exists():
            return "failed"
        return "incomplete"

    def finished(self, config: RunConfig) -> bool:
        """A ``done`` marker of a run of ``config``."""
        return self.status(config) == "finished"

    def conflict_message(self, config: RunConfig) -> str:
        """One line saying what the directory holds instead of a run of ``config``."""
        saved = self.saved_config()
        if saved is None:
            names = [n for n in self.RUN_FILES if (self.path / n).exists()]
            return (f"{self.path} is not a merdg run directory of this config but holds "
                    f"{', '.join(names)}; use another --out, or --overwrite to replace them")
        kind = "finished" if (self.path / self.DONE).exists() else "unfinished"
        diffs = self.differences(config)
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        return (f"{self.path} holds a {kind} run of another config ({'; '.join(diffs[:5])}"
                f"{more}); use another --out, or --overwrite to replace it")

    # --- changing the directory ----------------------------------------------------------

    def check_writable(self) -> None:
        """Fail early (before any data is loaded) when the directory cannot be written.

        Raises:
            NotADirectoryError / PermissionError: With the path and the reason.
        """
        existing = self.path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise NotADirectoryError(f"cannot write the run to {self.path}: {existing} is a "
                                     "file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write the run to {self.path}: {existing} is not "
                                  "writable")

    def reset(self) -> None:
        """Remove the run files (and only them): the explicit ``--overwrite`` path."""
        for name in self.RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's exclusive lock while the block runs.

        The lock is an ``flock`` on ``.lock``: the kernel drops it when its process dies, even
        by SIGKILL, so a killed run never leaves a stale lock behind.

        Raises:
            RunDirBusyError: Another live process holds the lock.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / self.LOCK, "a") as handle:
            self._acquire(handle)
            yield

    def _acquire(self, handle: Any) -> None:
        if fcntl is None:  # not POSIX: concurrent writers are not detected
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise RunDirBusyError(f"{self.path} is being written by another process; wait for "
                                  "it to finish or use another output directory") from err
        except OSError as err:  # e.g. a network filesystem without flock support
            warnings.warn(f"cannot lock {self.path} ({err}); two processes writing this run "
                          "directory at once would not be detected", stacklevel=3)

    def start(self, info: dict[str, Any], keep_pretraining: bool = False) -> None:
        """Begin a fresh run: clear an earlier attempt of the same run, write ``config.json``.

        Args:
            info: The run's ``config.json`` content.
            keep_pretraining: Keep the state of an interrupted unimodal pretraining stage
                (``pretraining.pt``) so that the stage resumes; False starts it over too.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        names = [self.RECORDS, self.SUMMARY, self.DONE, self.FAILED, self.CHECKPOINT, self.MODEL]
        if not keep_pretraining:
            names.append(self.PRETRAINING)
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        write_json_atomic(self.path / self.CONFIG, info)

    def update_info(self, info: dict[str, Any]) -> None:
        """Replace ``config.json`` of a started run (e.g. after its initialization stage added
        what it loaded or pretrained)."""
        write_json_atomic(self.path / self.CONFIG, info)

    def write_pretraining(self, payload: dict[str, Any]) -> None:
        """Replace ``pretraining.pt`` (the unimodal pretraining stage's state) atomically."""
        from merdg.run.checkpoint import save_checkpoint

        save_checkpoint(self.pretraining_file, payload)

    def read_pretraining(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The pretraining stage's saved state, checked against the run's identity (None when
        there is none)."""
        if not self.pretraining_file.exists():
            return None
        from merdg.run.checkpoint import load_checkpoint

        return load_checkpoint(self.pretraining_file, identity)

    def append_record(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / self.RECORDS, record)

    def rewrite_records(self, records: list[dict[str, Any]]) -> None:
        """Make ``records.jsonl`` hold exactly ``records``."""
        write_jsonl_atomic(self.path / self.RECORDS, records)

    def write_checkpoint(self, payload: dict[str, Any]) -> None:
        """Replace ``checkpoint.pt`` atomically (:func:`merdg.run.checkpoint.save_checkpoint`)."""
        from merdg.run.checkpoint import save_checkpoint

        save_checkpoint(self.checkpoint_file, payload)

    def read_checkpoint(self, identity: dict[str, Any], map_location: Any = "cpu"
                        ) -> dict[str, Any]:
        """The checkpoint, checked against the run's identity
        (:func:`merdg.run.checkpoint.load_checkpoint`)."""
        from merdg.run.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint_file, identity, map_location=map_location)

    def finish(self, summary: dict[str, Any], model_state: dict[str, Any] | None = None,
               info: dict[str, Any] | None = None) -> None:
        """Final weights (optional), ``summary.json``, ``done``; then drop the checkpoint."""
        if model_state is not None:
            from merdg.run.checkpoint import save_checkpoint

            save_checkpoint(self.model_file, {"state_dict": model_state, "run": info or {}},
                            with_format=False)
        write_json_atomic(self.path / self.SUMMARY, summary)
        (self.path / self.DONE).write_text("done\n")
        self.checkpoint_file.unlink(missing_ok=True)
        self.pretraining_file.unlink(missing_ok=True)

    def mark_failed(self, message: str) -> None:
        """Record why the last attempt failed (first line: the error)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / (self.FAILED + ".tmp")
        tmp.write_text(message if message.endswith("\n") else message + "\n")
        os.replace(tmp, self.path / self.FAILED)

    def clear_failed(self) -> None:
        (self.path / self.FAILED).unlink(missing_ok=True)

    def write_job(self, description: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / self.JOB, description)

    def read_job(self) -> dict[str, Any]:
        if not (self.path / self.JOB).is_file():
            raise FileNotFoundError(f"{self.path / self.JOB} not found: {self.path} is not a "
                                    "prepared merdg job directory")
        return self._read_json(self.JOB)
