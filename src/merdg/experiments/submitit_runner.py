"""The callable a submitit job runs: one merdg job, requeued on timeout or preemption.

Kept apart from :mod:`merdg.experiments.launchers` because it imports submitit (an optional extra).
"""

from __future__ import annotations

import submitit

from merdg.experiments.jobs import run_job


class JobRunner(submitit.helpers.Checkpointable):
    """Runs :func:`merdg.experiments.jobs.run_job` on a job directory.

    On timeout or preemption submitit calls :meth:`checkpoint` (inherited), which resubmits the
    same call; the requeued job resumes from the run's own ``checkpoint.pt``.
    """

    def __call__(self, job_dir: str) -> str:
        return run_job(job_dir)
