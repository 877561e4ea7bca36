"""Jobs: one training run in its own directory, the unit that benches and sweeps launch.

A job directory is a :class:`~merdg.run.directory.RunDir` that also holds the job's
description (the :class:`~merdg.run.config.RunConfig` to run) and its log; a run that raised
leaves the ``failed`` marker (the error) instead of ``done``.

Status of a job (:meth:`Job.status`):

- ``done``: a finished run of this job's config (:meth:`Job.missing_evaluations`: the
  evaluations of its saved weights that the config asks for and the directory lacks; a launch
  runs them without training);
- ``running``: another live process holds the directory's lock;
- ``failed``: the last attempt raised (relaunching retries it, resuming from its checkpoint);
- ``incomplete``: started, then interrupted (relaunching resumes it from its checkpoint);
- ``foreign``: the directory holds a run of another config (relaunching refuses it unless
  asked to overwrite);
- ``pending``: never started.

``python -m merdg.experiments.jobs DIR`` runs one prepared job directory (used by the worker
launcher).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merdg.run.config import RunConfig
from merdg.run.directory import RunDir, RunDirBusyError
from merdg.run.evaluation import missing_evaluations
from merdg.run.training import train

__all__ = ["STATUSES", "Job", "count_statuses", "job_hash", "load_job", "run_job"]

STATUSES = ("done", "running", "failed", "incomplete", "foreign", "pending")
_FROM_RUN_STATUS = {"finished": "done", "absent": "pending"}


def job_hash(config: RunConfig) -> str:
    """md5 of the run's identity: equal for runs that compute the same thing."""
    text = json.dumps(config.identity(), sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class Job:
    """One run and its directory (``config.out_dir``).

    Attributes:
        config: The run; ``config.out_dir`` is the job directory.
        label: What the job is within its experiment (phase, trial, ...), for display.
    """

    config: RunConfig
    label: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.config.out_dir)

    def status(self) -> str:
        """One of :data:`STATUSES` (see the module docstring)."""
        status = self.run_dir.status(self.config)
        return _FROM_RUN_STATUS.get(status, status)

    def finished(self) -> bool:
        return self.status() == "done"

    def missing_evaluations(self) -> list[str]:
        """The evaluations of a finished run's saved weights that the config asks for and its
        directory lacks ([] for a run that is not finished)."""
        if not self.finished():
            return []
        return missing_evaluations(self.run_dir, self.config)

    def unevaluable(self) -> bool:
        """A finished run asked for evaluations of a trained model that saved no weights
        (``--save-model none``, or trained by an earlier merdg without ``--save-model``)."""
        return (bool(self.config.evaluations) and self.finished()
                and self.run_dir.model_file_of("source_val") is None)

    def prepare(self) -> None:
        """Create the directory and write the job's description."""
        self.run_dir.write_job({"config": self.config.to_dict(), "label": self.label})

    def failure(self) -> str:
        """The first line of the recorded error."""
        return self.run_dir.failure() or "(no error recorded)"

    def describe(self) -> str:
        c = self.config
        mods = "+".join(c.modalities) if c.modalities else "all"
        extra = " ".join(f"{k} {v}" for k, v in self.label.items())
        sources = "+".join(c.sources) + " " if c.sources else ""
        return f"{c.algorithm} {mods} {sources}-> {c.target} seed {c.seed} {extra}".strip()


def load_job(path: str | Path) -> Job:
    """The job prepared in directory ``path``."""
    saved = RunDir(path).read_job()
    config = RunConfig.from_dict({**saved["config"], "out_dir": str(path)})
    return Job(config, saved.get("label", {}))


def run_job(path: str | Path) -> str:
    """Run (or resume) the job prepared in ``path``; returns its status afterwards.

    An exception from training is recorded in the directory's ``failed`` marker (the other
    jobs go on); a job another process is running is left alone (``"running"``).
    """
    job = load_job(path)
    if job.finished() and not job.missing_evaluations():
        return "done"
    job.run_dir.clear_failed()
    with job.run_dir.logging_to_file():
        logging.getLogger("merdg").info("job %s: %s", job.path.name, job.describe())
        try:
            train(job.config, progress=False)
        except RunDirBusyError:
            return "running"
        except Exception as err:  # recorded, not swallowed: the job's status becomes failed
            logging.getLogger("merdg").error("job failed: %s: %s", type(err).__name__, err)
            try:
                job.run_dir.mark_failed(f"{type(err).__name__}: {err}\n\n"
                                        + traceback.format_exc())
            except OSError as marker_err:  # e.g. the disk is full: the log has the error
                logging.getLogger("merdg").error("cannot record the failure of %s: %s",
                                                 job.path, marker_err)
            return "failed"
    return "done"


def count_statuses(jobs: Sequence[Job]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for job in jobs:
        counts[job.status()] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m merdg.experiments.jobs DIR``: run one prepared job; exit 0 when done."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m merdg.experiments.jobs JOB_DIR", file=sys.stderr)
        return 2
    status = run_job(args[0])
    return 0 if status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
