"""The run directory: the only owner of a run's file names, status and writes.

A run directory holds (names: the constants of :class:`RunDir`):

- ``config.json``: the run's config, resolved hparams, sources, modalities, package version
  and git hash, and the run's full *identity* (config identity + resolved hparams + data);
- ``records.jsonl``: one line per epoch;
- ``checkpoint.pt``: the state after the last finished epoch, ``checkpoint.previous.pt``: the
  one before, and ``checkpoint.sha256``: the sha256 of each as written (all three removed once
  the run is done); ``checkpoint.damaged.pt``: a checkpoint found damaged on resume, moved
  aside;
- ``pretraining.pt``: the state of the unimodal pretraining stage (``--init unimodal``) after
  its last finished epoch, and ``pretraining.sha256`` its sha256 (removed once the run is
  done);
- ``summary.json``: the row of each selection rule (the epoch it picks, with every result
  column); ``model.pt``: the weights of the epoch source validation selects (the model the
  tables report; ``--save-model``), ``model.last.pt``: the last epoch's (``--save-model
  selected+last``), and ``model.sha256`` the sha256 of each; ``done``: written last, after
  ``summary.json``;
- ``evaluations/<evaluator>-<settings hash>-<model digest>.json``: what an evaluator measured on
  a saved model (at the end of training, or later by ``merdg evaluate``); the training files are
  never touched by it;
- ``failed``: the error of the last attempt (jobs only); ``job.json`` and ``log.txt``: the job
  description and log of a bench or sweep job; ``.lock``: the writer's lock;
  ``tensorboard/``: optional event files.

Status (:meth:`RunDir.status`) for a given config: ``absent`` (no run file),
``running`` (another live process holds the lock), ``foreign`` (the files belong to a run of
another config, or are not a merdg run's), ``finished``, ``failed`` or ``incomplete``
(started, interrupted; it resumes from its checkpoint).

Nothing here deletes a finished run or foreign files unless asked explicitly
(:meth:`RunDir.reset`, behind ``--overwrite``). Every write is atomic (temporary file, fsync,
rename), so a process killed at any moment leaves the previous state or the new one; a write
that fails (a full disk) raises one line naming the file and what is intact
(:class:`~merdg.run.records.WriteFailedError`). Checkpoints and ``model.pt`` are verified
against their recorded sha256 when read; a damaged checkpoint falls back to the previous one
(``docs/reliability.md``: the write order and every kill point).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from merdg.run.config import RunConfig, config_identity, identity_differences
from merdg.run.records import (
    WriteFailedError,
    append_jsonl,
    fsync_dir,
    fsync_file,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
    writing,
)
from merdg.words import a

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunDir", "RunDirBusyError", "RunDirConflictError", "STATUSES"]

STATUSES = ("absent", "running", "foreign", "finished", "failed", "incomplete")

log = logging.getLogger(__name__)


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
    PREVIOUS_CHECKPOINT = "checkpoint.previous.pt"
    CHECKPOINT_DIGESTS = "checkpoint.sha256"
    DAMAGED_CHECKPOINT = "checkpoint.damaged.pt"
    PRETRAINING = "pretraining.pt"
    PRETRAINING_DIGEST = "pretraining.sha256"
    MODEL = "model.pt"
    LAST_MODEL = "model.last.pt"
    MODEL_DIGEST = "model.sha256"
    EVALUATIONS = "evaluations"
    JOB = "job.json"
    LOG = "log.txt"
    LOCK = ".lock"
    TENSORBOARD = "tensorboard"
    CHECKPOINT_FILES = (CHECKPOINT, PREVIOUS_CHECKPOINT, CHECKPOINT_DIGESTS)
    # what a run writes (a reset removes exactly these, and nothing else)
    RUN_FILES = (CONFIG, RECORDS, SUMMARY, DONE, FAILED, *CHECKPOINT_FILES, CHECKPOINT + ".tmp",
                 DAMAGED_CHECKPOINT, MODEL, LAST_MODEL, MODEL_DIGEST, PRETRAINING,
                 PRETRAINING + ".tmp", PRETRAINING_DIGEST)
    # temporary files of the atomic writes that a killed process can leave behind
    TEMPORARY_FILES = tuple(name + ".tmp" for name in (CONFIG, RECORDS, SUMMARY, FAILED, MODEL,
                                                       LAST_MODEL, MODEL_DIGEST,
                                                       CHECKPOINT_DIGESTS))
    # the saved model of each selection rule that saves one (--save-model)
    MODEL_FILES = {"source_val": MODEL, "last": LAST_MODEL}

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
            raise ValueError(f"{file}: unreadable or truncated JSON ({err}); merdg writes "
                             "its run files whole, so it was damaged or edited since: restore "
                             "it, or replace the run (merdg train ... --overwrite)") from err

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
        """``summary.json``.

        Raises:
            ValueError: It is unreadable, or not a merdg summary (naming the file).
        """
        summary = self._read_json(self.SUMMARY)
        if not isinstance(summary, dict) or not isinstance(summary.get("selection"), dict):
            raise ValueError(f"{self.path / self.SUMMARY} is not a merdg summary (no "
                             "'selection' entry); rerun with --overwrite to train it again")
        return summary

    def _read_digests(self, name: str) -> dict[str, int] | None:
        """``{sha256: epoch}`` recorded in the digest file ``name`` (None when there is none).

        Raises:
            ValueError: The digest file is unreadable.
        """
        file = self.path / name
        if not file.exists():
            return None
        data = self._read_json(name)
        if not isinstance(data, dict) or not isinstance(data.get("sha256"), dict):
            raise ValueError(f"{file}: not a merdg digest file (no 'sha256' entry)")
        return {str(k): int(v) for k, v in data["sha256"].items()}

    def _record_digest(self, name: str, digest: str, epoch: int, keep_from: int, tmp: Path,
                       note: str) -> None:
        """Add ``digest`` (of ``tmp``, about to replace a state file) to the digest file
        ``name``, keeping the recorded digests of epochs >= ``keep_from``; an unreadable digest
        file is started over (only the new file can be verified from then on).

        Raises:
            WriteFailedError: The digest file could not be written; ``tmp`` is removed.
        """
        try:
            recorded = self._read_digests(name) or {}
        except ValueError:
            recorded = {}
        kept = {h: e for h, e in recorded.items() if e >= keep_from}
        try:
            write_json_atomic(self.path / name, {"sha256": {**kept, digest: epoch}}, note=note)
        except WriteFailedError:
            tmp.unlink(missing_ok=True)
            raise

    def read_records(self) -> list[dict[str, Any]]:
        """The per-epoch records ([] when there are none yet)."""
        file = self.path / self.RECORDS
        return list(read_jsonl(file)) if file.exists() else []

    def model_file_of(self, rule: str) -> Path | None:
        """The saved weights a selection rule reports (``model.pt`` for ``source_val``;
        ``model.last.pt``, or ``model.pt`` when it holds the last epoch, for ``last``), or None
        when none is saved."""
        if rule not in self.MODEL_FILES:
            raise ValueError(f"no saved model for selection rule {rule!r}; saved models: "
                             f"{', '.join(self.MODEL_FILES)}")
        file = self.path / self.MODEL_FILES[rule]
        if file.exists():
            return file
        if rule == "last" and self.model_file.exists():
            summary = self.read_summary() if (self.path / self.SUMMARY).exists() else {}
            chosen = summary.get("selection", {})
            if chosen.get("last", {}).get("epoch") == chosen.get("source_val", {}).get("epoch"):
                return self.model_file  # the selected epoch is the last one
        return None

    def read_model(self, rule: str = "source_val") -> dict[str, Any]:
        """The saved weights a selection rule reports, verified against ``model.sha256``:
        ``{"state_dict", "epoch", "rule", "digest", "run"}`` (a ``model.pt`` of an earlier
        version, which held the last epoch's weights, reads as the last epoch's).

        Raises:
            FileNotFoundError: No saved weights for ``rule`` (one line saying how to save them).
            CheckpointDamagedError: The file changed after it was written.
            ValueError: It cannot be read as merdg weights.
        """
        import torch

        from merdg.run.checkpoint import CheckpointDamagedError, read_verified, state_digest

        file = self.model_file_of(rule)
        if file is None:
            what = "model.pt" if rule == "source_val" else "model.last.pt"
            raise FileNotFoundError(
                f"{self.path / what} not found: {self.path} saved no weights of its "
                f"{'selected' if rule == 'source_val' else 'last'} epoch; train with "
                f"--save-model {'selected' if rule == 'source_val' else 'selected+last'} (the "
                "default saves the selected epoch's)")
        digests = self._read_digests(self.MODEL_DIGEST)
        if digests is None:
            log.warning("%s has no recorded sha256 (saved before merdg recorded digests): not "
                        "verified", file)
        # the saved run info may hold torch.__version__, a str subclass the safe loader must know
        torch.serialization.add_safe_globals([torch.torch_version.TorchVersion])
        try:
            saved = read_verified(file, digests, what="merdg weights")
        except CheckpointDamagedError as err:
            raise CheckpointDamagedError(
                f"{err}; train the run again (merdg train with the same settings, "
                "--overwrite)") from err
        if not isinstance(saved, dict) or "state_dict" not in saved:
            raise ValueError(f"{file}: expected a dict with 'state_dict' (merdg train)")
        if "epoch" not in saved:  # an earlier version's model.pt: the final weights
            summary = self.read_summary()
            saved = {**saved, "epoch": int(summary["epochs"]), "rule": "last"}
        saved.setdefault("digest", state_digest(saved["state_dict"]))
        return saved

    def read_model_state(self, rule: str = "source_val") -> dict[str, Any]:
        """The weights (``state_dict`` of the algorithm) a selection rule reports
        (:meth:`read_model`)."""
        return self.read_model(rule)["state_dict"]

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

    def has_saved_state(self) -> bool:
        """A checkpoint (current or previous) or a pretraining state: what a resumed run reads,
        and what compares its identity with the requested config."""
        return any((self.path / name).exists()
                   for name in (self.CHECKPOINT, self.PREVIOUS_CHECKPOINT, self.PRETRAINING))

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
            why = ""
            if (self.path / self.CONFIG).exists():
                try:
                    self.read_info()
                except ValueError as err:  # say what is wrong with it
                    why = f" ({err})"
            return (f"{self.path} is not a merdg run directory of this config but holds "
                    f"{', '.join(names)}{why}; use another --out, or --overwrite to replace "
                    "them")
        kind = "finished" if (self.path / self.DONE).exists() else "unfinished"
        diffs = self.differences(config)
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        return (f"{self.path} holds {a(kind)} run of another config ({'; '.join(diffs[:5])}"
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
        for name in (*self.RUN_FILES, *self.TEMPORARY_FILES):
            (self.path / name).unlink(missing_ok=True)
        self._remove_evaluations()

    def _remove_evaluations(self) -> None:
        """Remove the evaluation files (of the weights being replaced) and their folder when
        nothing else is in it."""
        if not self.evaluations_dir.is_dir():
            return
        for file in self.evaluations_dir.glob("*.json*"):
            file.unlink()
        if not any(self.evaluations_dir.iterdir()):
            self.evaluations_dir.rmdir()

    @contextmanager
    def logging_to_file(self) -> Iterator[None]:
        """Send the merdg loggers' INFO lines, timestamped, to ``log.txt`` (appended) while the
        block runs; a handler already writing there (a job's) is used as it is."""
        logger = logging.getLogger("merdg")
        path = os.path.abspath(self.log_file)
        if any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
            yield
            return
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        previous = logger.level
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)
            handler.close()

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
        names = [self.RECORDS, self.SUMMARY, self.DONE, self.FAILED, *self.CHECKPOINT_FILES,
                 self.DAMAGED_CHECKPOINT, self.MODEL, self.LAST_MODEL, self.MODEL_DIGEST]
        if not keep_pretraining:
            names += [self.PRETRAINING, self.PRETRAINING_DIGEST]
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        self._remove_evaluations()
        write_json_atomic(self.path / self.CONFIG, info)

    def _intact(self) -> str:
        """What a failed write leaves intact (the end of its error message)."""
        if self.checkpoint_file.exists():
            return (f"the last checkpoint {self.checkpoint_file} is intact: free some space "
                    "and run the same command to resume")
        return "free some space and run the same command again"

    def update_info(self, info: dict[str, Any]) -> None:
        """Replace ``config.json`` of a started run (e.g. after its initialization stage added
        what it loaded or pretrained)."""
        write_json_atomic(self.path / self.CONFIG, info)

    def write_pretraining(self, payload: dict[str, Any]) -> None:
        """Replace ``pretraining.pt`` (the unimodal pretraining stage's state) atomically, with
        its sha256 in ``pretraining.sha256`` (temporary file hashed while written, the digest
        file, then the rename: a kill leaves the old state or the new one, each verifiable).

        Raises:
            WriteFailedError: A write failed (a full disk); the previous state is intact.
        """
        from merdg.run.checkpoint import FORMAT, write_torch_file

        target, tmp = self.pretraining_file, self.path / (self.PRETRAINING + ".tmp")
        note = (f"the last state {target} is intact: free some space and run the same command "
                "to resume" if target.exists() else self._intact())
        digest = write_torch_file(tmp, {"format": FORMAT, **payload}, target, note)
        epochs = int(payload.get("stage", {}).get("epochs_done", 0))
        # keep the digest of the file it replaces
        self._record_digest(self.PRETRAINING_DIGEST, digest, epochs, epochs - 1, tmp, note)
        with writing(target, note, cleanup=tmp):
            os.replace(tmp, target)
            fsync_dir(self.path)

    def read_pretraining(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The pretraining stage's saved state, verified against ``pretraining.sha256`` and
        checked against the run's identity (None when there is none).

        Raises:
            CheckpointDamagedError: The file (or its digest file) is damaged: one line naming
                it and what to do.
        """
        if not self.pretraining_file.exists():
            return None
        from merdg.run.checkpoint import CheckpointDamagedError, load_checkpoint

        advice = (f"delete {self.pretraining_file} to run the pretraining stage again, or start "
                  "the run over with --restart")
        try:
            digests = self._read_digests(self.PRETRAINING_DIGEST)
        except ValueError as err:
            raise CheckpointDamagedError(f"{err}; {self.pretraining_file} cannot be verified: "
                                         f"{advice}") from err
        if digests is None:
            log.warning("%s has no recorded sha256 (written before merdg recorded its digest): "
                        "resuming from it unverified", self.pretraining_file)
        try:
            return load_checkpoint(self.pretraining_file, identity, digests=digests)
        except CheckpointDamagedError as err:
            raise CheckpointDamagedError(f"{err}: {advice}") from err

    def append_record(self, record: dict[str, Any]) -> None:
        """Append one record (flushed, not fsynced: the checkpoint holds every record it
        covers, and a resumed run rewrites this file from it; :meth:`finish` makes it durable)."""
        append_jsonl(self.path / self.RECORDS, record, note=self._intact(), sync=False)

    def rewrite_records(self, records: list[dict[str, Any]]) -> None:
        """Make ``records.jsonl`` hold exactly ``records``."""
        write_jsonl_atomic(self.path / self.RECORDS, records, note=self._intact())

    # --- checkpoints ---------------------------------------------------------------------

    def write_checkpoint(self, payload: dict[str, Any]) -> None:
        """Replace ``checkpoint.pt`` with ``payload`` (the state after epoch
        ``payload["epoch"]``), keeping the one it replaces as ``checkpoint.previous.pt``.

        The order makes a kill at any moment leave at least one verifiable checkpoint:

        1. the new checkpoint goes to ``checkpoint.pt.tmp`` (fsync), hashed while written;
        2. ``checkpoint.sha256`` is replaced atomically by the sha256 (and epoch) of the new
           file, of ``checkpoint.pt`` and of ``checkpoint.previous.pt``;
        3. ``checkpoint.pt`` is renamed to ``checkpoint.previous.pt``;
        4. ``checkpoint.pt.tmp`` is renamed to ``checkpoint.pt``; the directory is fsynced.

        Killed before 2, the old files are untouched (the temporary file is ignored); between
        2 and 4 every existing checkpoint file is still listed; after 3 without 4, resuming
        uses ``checkpoint.previous.pt`` (one epoch earlier).

        Raises:
            WriteFailedError: A write failed (a full disk): the message names the file and says
                that the previous checkpoint is intact.
        """
        from merdg.run.checkpoint import FORMAT, write_torch_file

        epoch = int(payload["epoch"])
        current, tmp = self.checkpoint_file, self.path / (self.CHECKPOINT + ".tmp")
        intact = self._intact()
        digest = write_torch_file(tmp, {"format": FORMAT, **payload}, current, intact)
        # keep the digests of checkpoint.pt and checkpoint.previous.pt
        self._record_digest(self.CHECKPOINT_DIGESTS, digest, epoch, epoch - 2, tmp, intact)
        with writing(current, intact, cleanup=tmp):
            if current.exists():
                os.replace(current, self.path / self.PREVIOUS_CHECKPOINT)
            os.replace(tmp, current)
            fsync_dir(self.path)

    def read_checkpoint(self, identity: dict[str, Any], map_location: Any = "cpu",
                        name: str = CHECKPOINT) -> dict[str, Any]:
        """Checkpoint ``name``, verified against ``checkpoint.sha256`` and checked against the
        run's identity (:func:`merdg.run.checkpoint.load_checkpoint`)."""
        from merdg.run.checkpoint import load_checkpoint

        return load_checkpoint(self.path / name, identity, map_location,
                               self._checkpoint_digests())

    def _checkpoint_digests(self) -> dict[str, int] | None:
        """The recorded digests of the checkpoints (None: none recorded, an older merdg).

        Raises:
            CheckpointDamagedError: ``checkpoint.sha256`` is unreadable.
        """
        from merdg.run.checkpoint import CheckpointDamagedError

        try:
            return self._read_digests(self.CHECKPOINT_DIGESTS)
        except ValueError as err:
            raise CheckpointDamagedError(
                f"{err}; the checkpoints cannot be verified: delete "
                f"{self.path / self.CHECKPOINT_DIGESTS} to resume from {self.checkpoint_file} "
                "unverified, or start the run over with --restart") from err

    def resume_checkpoint(self, identity: dict[str, Any], map_location: Any = "cpu"
                          ) -> tuple[str, dict[str, Any]] | None:
        """The newest intact checkpoint of this run: ``(file name, payload)``, or None when
        there is none.

        ``checkpoint.pt`` is verified against its recorded sha256; when it is damaged, the run
        falls back to ``checkpoint.previous.pt`` (one epoch earlier) with a warning, and the
        damaged file is moved to ``checkpoint.damaged.pt``. A checkpoint written before
        digests were recorded is loaded unverified (with a warning).

        Raises:
            CheckpointDamagedError: No intact checkpoint is left (one line naming the files and
                what to do).
            CheckpointMismatchError: The checkpoint belongs to another config.
        """
        from merdg.run.checkpoint import CheckpointDamagedError

        digests = self._checkpoint_digests()
        if digests is None and self.checkpoint_file.exists():
            log.warning("%s has no recorded sha256 (written before merdg recorded checkpoint "
                        "digests): resuming from it unverified", self.checkpoint_file)
        damaged: list[tuple[str, str]] = []
        for name in (self.CHECKPOINT, self.PREVIOUS_CHECKPOINT):
            if not (self.path / name).exists():
                continue
            try:
                payload = self.read_checkpoint(identity, map_location, name)
            except CheckpointDamagedError as err:
                damaged.append((name, str(err)))
                continue
            self._report_fallback(name, payload, damaged)
            return name, payload
        if damaged:
            kept = ("; " + damaged[1][1] if len(damaged) > 1 else
                    f"; no intact {self.PREVIOUS_CHECKPOINT} is kept")
            raise CheckpointDamagedError(
                f"{damaged[0][1]}{kept}: start the run over with --restart (merdg train), or "
                f"delete {self.path / damaged[0][0]}")
        return None

    def _report_fallback(self, name: str, payload: dict[str, Any],
                         damaged: list[tuple[str, str]]) -> None:
        if name == self.CHECKPOINT:
            return
        if not damaged:  # stopped between the two renames of write_checkpoint
            log.info("%s: resuming from %s (epoch %d)", self.path, name, payload["epoch"])
            return
        aside = self.path / self.DAMAGED_CHECKPOINT
        os.replace(self.checkpoint_file, aside)
        log.warning("%s; resuming from %s (epoch %d) instead; the damaged file was moved "
                    "to %s", damaged[0][1], self.path / name, payload["epoch"], aside)

    def finish(self, summary: dict[str, Any], models: list[dict[str, Any]] | None = None,
               info: dict[str, Any] | None = None) -> None:
        """Saved weights (with their sha256), ``summary.json``, ``done``; then drop the
        checkpoints.

        Args:
            summary: The run's summary.
            models: Weights to save: ``{"rule", "epoch", "state", "digest"}`` each, ``rule``
                ``"source_val"`` (``model.pt``) or ``"last"`` (``model.last.pt``).
            info: The run's info, saved with the weights.

        Order: each ``<model>.tmp`` (hashed while written), ``model.sha256``, the renames,
        ``summary.json``, ``done``, then the checkpoint files are removed; a kill before
        ``done`` leaves an unfinished run that resumes from its last checkpoint and finishes
        again.
        """
        from merdg.run.checkpoint import write_torch_file

        intact = self._intact()
        written = []
        for model in models or []:
            target = self.path / self.MODEL_FILES[model["rule"]]
            tmp = target.with_name(target.name + ".tmp")
            payload = {"state_dict": model["state"], "epoch": int(model["epoch"]),
                       "rule": model["rule"], "digest": model["digest"], "run": info or {}}
            written.append((tmp, target, write_torch_file(tmp, payload, target, intact),
                            int(model["epoch"])))
        if written:
            try:
                write_json_atomic(self.path / self.MODEL_DIGEST,
                                  {"sha256": {digest: epoch for _, _, digest, epoch in written}},
                                  note=intact)
            except WriteFailedError:
                for tmp, _, _, _ in written:
                    tmp.unlink(missing_ok=True)
                raise
            for tmp, target, _, _ in written:
                with writing(target, intact, cleanup=tmp):
                    os.replace(tmp, target)
        if self.records_file.exists():
            fsync_file(self.records_file, note=self._intact())
        write_json_atomic(self.path / self.SUMMARY, summary, note=self._intact())
        with writing(self.path / self.DONE, self._intact()):
            (self.path / self.DONE).write_text("done\n")
        for name in (*self.CHECKPOINT_FILES, self.PRETRAINING, self.PRETRAINING_DIGEST):
            (self.path / name).unlink(missing_ok=True)

    # --- evaluations ---------------------------------------------------------------------

    @property
    def evaluations_dir(self) -> Path:
        return self.path / self.EVALUATIONS

    def evaluation_file(self, key: str, digest: str) -> Path:
        """The file of an evaluation: ``evaluations/<evaluator key>-<model digest[:12]>.json``
        (``key``: :meth:`merdg.evaluators.Evaluator.file_key`)."""
        return self.evaluations_dir / f"{key}-{digest[:12]}.json"

    def write_evaluation(self, key: str, evaluation: dict[str, Any]) -> Path:
        """Write one evaluation of a saved model (atomically; an earlier one of the same
        evaluator settings and model is replaced: the same measurement)."""
        file = self.evaluation_file(key, evaluation["model"]["digest"])
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(file, evaluation)
        return file

    def read_evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation file of the run (sorted by name).

        Raises:
            ValueError: A file that is not a merdg evaluation (naming it).
        """
        if not self.evaluations_dir.is_dir():
            return []
        out = []
        for file in sorted(self.evaluations_dir.glob("*.json")):
            data = self._read_json(f"{self.EVALUATIONS}/{file.name}")
            if not (isinstance(data, dict) and isinstance(data.get("columns"), dict)
                    and isinstance(data.get("model"), dict) and "evaluator" in data):
                raise ValueError(f"{file}: not a merdg evaluation (no 'evaluator', 'model' and "
                                 "'columns' entries); move it out of the run directory")
            out.append({**data, "file": file.name})
        return out

    def mark_failed(self, message: str) -> None:
        """Record why the last attempt failed (first line: the error)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / (self.FAILED + ".tmp")
        with writing(self.path / self.FAILED, cleanup=tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(message if message.endswith("\n") else message + "\n")
                f.flush()
                os.fsync(f.fileno())
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
