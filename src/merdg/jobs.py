"""Jobs: one training run in its own directory, the unit that sweeps and benches launch.

A job directory holds ``job.json`` (the :class:`~merdg.training.RunConfig` to run) and, once it
runs, the run's files (``config.json``, ``records.jsonl``, ``checkpoint.pt``, ``summary.json``,
``done``) plus ``log.txt``; a run that raised leaves ``failed`` (the error) instead of ``done``.
Sweep jobs live in ``<sweep>/jobs/<hash>/``, the hash being the md5 of the run's identity
(:meth:`RunConfig.identity`), so the same run always lands in the same directory
(DomainBed's ``Job``).

Status of a job (:meth:`Job.status`):

- ``done``: a ``done`` marker from a run with this job's identity;
- ``running``: another live process holds the directory's lock;
- ``failed``: the last attempt raised (relaunching retries it, resuming from its checkpoint);
- ``incomplete``: started, then interrupted (relaunching resumes it from its checkpoint);
- ``pending``: never started.

``python -m merdg.jobs DIR`` runs one prepared job directory (used by the worker launcher).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merdg.checkpoint import CHECKPOINT_NAME, RunDirBusyError, is_locked
from merdg.records import write_json_atomic
from merdg.training import RunConfig, config_identity, train

__all__ = ["JOB_FILE", "Job", "job_hash", "run_job", "sweep_job"]

JOB_FILE = "job.json"
FAILED = "failed"
LOG_FILE = "log.txt"
STATUSES = ("done", "running", "failed", "incomplete", "pending")


def job_hash(config: RunConfig) -> str:
    """md5 of the run's identity: equal for runs that compute the same thing."""
    text = json.dumps(config.identity(), sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class Job:
    """One run and its directory (``config.out_dir``).

    Attributes:
        config: The run; ``config.out_dir`` is the job directory.
        label: What the job is within its sweep (phase, trial, ...), for display.
    """

    config: RunConfig
    label: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.config.out_dir)

    def status(self) -> str:
        """One of :data:`STATUSES` (see the module docstring)."""
        if self.finished():
            return "done"
        if is_locked(self.path):
            return "running"
        if (self.path / FAILED).exists():
            return FAILED
        started = (self.path / CHECKPOINT_NAME).exists() or (self.path / "config.json").exists()
        return "incomplete" if started else "pending"

    def finished(self) -> bool:
        """A ``done`` marker written by a run with this job's identity."""
        if not (self.path / "done").exists() or not (self.path / "config.json").exists():
            return False
        saved = json.loads((self.path / "config.json").read_text())["config"]
        return config_identity(saved) == self.config.identity()

    def prepare(self) -> None:
        """Create the directory and write ``job.json``."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / JOB_FILE, {"config": self.config.to_dict(),
                                                 "label": self.label})

    def describe(self) -> str:
        c = self.config
        mods = "+".join(c.modalities) if c.modalities else "all"
        extra = " ".join(f"{k} {v}" for k, v in self.label.items())
        return f"{c.algorithm} {mods} -> {c.target} seed {c.seed} {extra}".strip()


def sweep_job(config: RunConfig, root: str | Path, label: dict[str, Any] | None = None) -> Job:
    """The job of ``config`` in sweep directory ``root`` (``root/jobs/<hash>``)."""
    out = Path(root) / "jobs" / job_hash(config)
    return Job(RunConfig(**{**config.to_dict(), "out_dir": str(out)}), dict(label or {}))


def load_job(path: str | Path) -> Job:
    """The job prepared in directory ``path``."""
    saved = json.loads((Path(path) / JOB_FILE).read_text())
    config = RunConfig(**{**saved["config"], "out_dir": str(path)})
    return Job(config, saved.get("label", {}))


@contextmanager
def _log_to(path: Path):
    """Send the merdg loggers' INFO messages to ``path`` while the block runs."""
    logger = logging.getLogger("merdg")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def run_job(path: str | Path) -> str:
    """Run (or resume) the job prepared in ``path``; returns its status afterwards.

    An exception from training is written to ``path/failed`` (the job's other jobs go on);
    a job another process is running is left alone (``"running"``).
    """
    job = load_job(path)
    if job.finished():
        return "done"
    (job.path / FAILED).unlink(missing_ok=True)
    with _log_to(job.path / LOG_FILE):
        logging.getLogger("merdg").info("job %s: %s", job.path.name, job.describe())
        try:
            train(job.config, progress=False)
        except RunDirBusyError:
            return "running"
        except Exception as err:  # recorded, not swallowed: the job's status becomes failed
            (job.path / FAILED).write_text(f"{type(err).__name__}: {err}\n\n"
                                           + traceback.format_exc())
            logging.getLogger("merdg").error("job failed: %s: %s", type(err).__name__, err)
            return FAILED
    return "done"


def failure_message(job: Job) -> str:
    """The first line of a failed job's error."""
    text = (job.path / FAILED).read_text() if (job.path / FAILED).exists() else ""
    return text.splitlines()[0] if text else "(no error recorded)"


def count_statuses(jobs: Sequence[Job]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for job in jobs:
        counts[job.status()] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m merdg.jobs DIR``: run one prepared job; exit status 0 when done."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m merdg.jobs JOB_DIR", file=sys.stderr)
        return 2
    status = run_job(args[0])
    return 0 if status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
