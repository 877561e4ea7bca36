"""Launchers: run a list of jobs, skipping finished ones and resuming interrupted ones.

- ``local`` with ``workers=1``: one job after another in this process;
- ``local`` with ``workers=N``: N worker processes (``python -m merdg.experiments.jobs DIR``),
  each job's output in its ``log.txt``, worker slot k on GPU ``k mod #GPUs`` when there are
  GPUs; on Linux the workers die with this process, so killing a sweep never leaves orphans
  that keep writing;
- ``slurm``: a Slurm job array through submitit (``pip install 'merdg[slurm]'``); jobs that
  time out or are preempted are requeued and resume from their checkpoint;
- ``submitit-local``: the same submitit path on this machine (to try a Slurm setup locally).

Every launcher runs :func:`merdg.experiments.jobs.run_job`, which never trains a finished job
twice and refuses a directory another live process is writing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import merdg
from merdg.experiments.jobs import Job, run_job
from merdg.progress import progress_bar, progress_line
from merdg.words import count

__all__ = ["LAUNCHERS", "LaunchReport", "LauncherOptions", "launch"]

LAUNCHERS = ("local", "slurm", "submitit-local")


@dataclass
class LauncherOptions:
    """How to launch jobs.

    Attributes:
        name: One of :data:`LAUNCHERS`.
        workers: Concurrent worker processes of the ``local`` launcher (1: in this process).
        folder: Where submitit keeps its scripts and logs (default ``<first job>/../submitit``).
        wait: submitit launchers: wait for the jobs to end (False: submit and return).
        timeout_min: submitit: time limit of each job, minutes.
        gpus_per_job / cpus_per_job / mem_gb: submitit resources of each job.
        partition: Slurm partition.
        max_parallel: Slurm array parallelism (None: no limit).
        slurm_options: Further ``slurm_*`` parameters of ``AutoExecutor.update_parameters``
            (without the prefix), e.g. ``{"account": "lab", "qos": "high"}``.
    """

    name: str = "local"
    workers: int = 1
    folder: str | None = None
    wait: bool = True
    timeout_min: int = 24 * 60
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: float | None = None
    partition: str | None = None
    max_parallel: int | None = None
    slurm_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> LauncherOptions:
        """Check every option when the options are made (before any run starts).

        Raises:
            ValueError: One line naming the option (its flag), the value and what is allowed.
        """
        if self.name not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.name!r}; choose from {list(LAUNCHERS)}")
        counts = {"--workers": (self.workers, 1), "--timeout-min": (self.timeout_min, 1),
                  "--gpus-per-job": (self.gpus_per_job, 0),
                  "--cpus-per-job": (self.cpus_per_job, 1),
                  "--max-parallel": (self.max_parallel, 1)}
        for flag, (value, low) in counts.items():
            if value is None and flag == "--max-parallel":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"--mem-gb must be > 0, got {self.mem_gb!r}")
        return self


@dataclass
class LaunchReport:
    """What a launch did: ``skipped`` were already done, ``evaluated`` were done and only
    evaluated (evaluations their config asks for), ``busy`` were run by another process,
    ``submitted`` went to a scheduler without waiting; the rest ended ``done`` or ``failed``."""

    skipped: list[Job] = field(default_factory=list)
    done: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    busy: list[Job] = field(default_factory=list)
    submitted: list[Job] = field(default_factory=list)
    evaluated: list[Job] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.skipped)} already done", f"{len(self.done)} finished now",
                 f"{len(self.failed)} failed"]
        if self.evaluated:
            parts.insert(1, f"{len(self.evaluated)} evaluated without training")
        if self.busy:
            parts.append(f"{len(self.busy)} running elsewhere")
        if self.submitted:
            parts.append(f"{len(self.submitted)} submitted")
        return ", ".join(parts)

    def failures(self) -> str:
        return "\n".join(f"  {job.path}: {job.failure()}" for job in self.failed)


def launch(jobs: Sequence[Job], options: LauncherOptions | None = None,
           progress: bool = True) -> LaunchReport:
    """Run every job that is not done yet with the chosen launcher.

    Raises:
        ValueError: Unknown launcher or a worker count below 1.
    """
    options = (options or LauncherOptions()).validate()
    report = LaunchReport()
    todo, evaluate_only = [], set()
    for job in jobs:
        status = job.status()
        if status == "done" and not job.missing_evaluations():
            report.skipped.append(job)
        elif status == "running":
            report.busy.append(job)
        else:
            if status == "done":
                evaluate_only.add(str(job.path))
            job.prepare()
            todo.append(job)
    if todo:
        _run(todo, options, progress, report)
    report.evaluated = [j for j in report.done if str(j.path) in evaluate_only]
    report.done = [j for j in report.done if str(j.path) not in evaluate_only]
    return report


def _run(todo: list[Job], options: LauncherOptions, progress: bool,
         report: LaunchReport) -> None:
    if options.name != "local":
        _run_submitit(todo, options, report)
    elif options.workers == 1:
        _run_in_process(todo, progress, report)
    else:
        _run_workers(todo, options.workers, progress, report)


def _file(report: LaunchReport, job: Job, status: str) -> None:
    {"done": report.done, "failed": report.failed, "running": report.busy}[status].append(job)


def _finished_line(report: LaunchReport, todo: list[Job], job: Job, status: str,
                   seconds: float) -> str:
    """``job 3/72 done (14.2 s): DIR`` (``failed, see DIR/log.txt``), a line per finished job
    where no bar is drawn."""
    count = len(report.done) + len(report.failed) + len(report.busy)
    what = {"done": "done", "running": "running elsewhere",
            "failed": f"failed, see {job.run_dir.log_file}"}[status]
    return f"job {count}/{len(todo)} {what} ({seconds:.1f} s): {job.path}"


def _run_in_process(todo: list[Job], progress: bool, report: LaunchReport) -> None:
    for job in progress_bar(todo, desc="jobs", shown=progress):
        start = time.perf_counter()
        status = run_job(job.path)
        _file(report, job, status)
        progress_line(_finished_line(report, todo, job, status, time.perf_counter() - start),
                      shown=progress)


# --- worker processes --------------------------------------------------------------------------

def _worker_env(workers: int) -> dict[str, str]:
    """This merdg on the path; CPU threads shared among the workers unless set."""
    env = dict(os.environ)
    src = str(Path(merdg.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    env.setdefault("TQDM_DISABLE", "1")  # log.txt gets plain lines, no progress-bar frames
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGTERM the worker when the launcher dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    return lambda: libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _visible_gpus() -> list[str]:
    """GPU ids the workers may use (``CUDA_VISIBLE_DEVICES``, else every GPU; [] without)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _start_worker(job: Job, env: dict[str, str], gpu: str | None) -> subprocess.Popen:
    if gpu is not None:  # one GPU per worker slot (DomainBed's multi_gpu launcher)
        env = {**env, "CUDA_VISIBLE_DEVICES": gpu}
    with open(job.run_dir.log_file, "a", encoding="utf-8") as log:
        return subprocess.Popen([sys.executable, "-m", "merdg.experiments.jobs", str(job.path)],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent())


def _run_workers(todo: list[Job], workers: int, progress: bool, report: LaunchReport) -> None:
    """At most ``workers`` jobs at once; worker slot k gets GPU ``k mod #GPUs`` if any."""
    env, gpus = _worker_env(workers), _visible_gpus()
    queue, running = list(todo), []  # running: (job, process, slot, start time)
    bar = progress_bar(total=len(todo), desc=f"jobs ({workers} workers)", shown=progress)
    try:
        while queue or running:
            for slot in sorted(set(range(workers)) - {r[2] for r in running}):
                if queue:
                    job = queue.pop(0)
                    gpu = gpus[slot % len(gpus)] if gpus else None
                    running.append((job, _start_worker(job, env, gpu), slot,
                                    time.perf_counter()))
            time.sleep(0.1)
            for entry in [r for r in running if r[1].poll() is not None]:
                running.remove(entry)
                status = _status_after_worker(entry[0])
                _file(report, entry[0], status)
                bar.update()
                progress_line(_finished_line(report, todo, entry[0], status,
                                             time.perf_counter() - entry[3]), shown=progress)
    finally:
        for _, process, _, _ in running:  # interrupted: stop the workers (they resume later)
            process.terminate()
        bar.close()


def _status_after_worker(job: Job) -> str:
    status = job.status()
    if status in ("done", "running"):
        return status
    if status != "failed":  # the worker died without recording why (killed, crashed)
        job.run_dir.mark_failed(f"worker exited without finishing; see {job.run_dir.log_file}")
    return "failed"


# --- submitit ----------------------------------------------------------------------------------

def _executor(options: LauncherOptions, folder: Path):
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError("the slurm launchers need submitit: pip install 'merdg[slurm]'") from err
    cluster = "slurm" if options.name == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": options.timeout_min,
                              "gpus_per_node": options.gpus_per_job,
                              "cpus_per_task": options.cpus_per_job, "name": "merdg"}
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if cluster == "slurm":
        params.update({f"slurm_{k}": v for k, v in options.slurm_options.items()})
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.max_parallel:
            params["slurm_array_parallelism"] = options.max_parallel
    executor.update_parameters(**params)
    return executor


def _run_submitit(todo: list[Job], options: LauncherOptions, report: LaunchReport) -> None:
    from merdg.experiments.submitit_runner import JobRunner

    folder = Path(options.folder or todo[0].path.parent.parent / "submitit")
    executor = _executor(options, folder)
    submitted = executor.map_array(JobRunner(), [str(job.path) for job in todo])
    print(f"submitted {count(len(submitted), 'job')} (submitit logs: {folder})")
    if not options.wait:
        report.submitted.extend(todo)
        return
    for job, handle in zip(todo, submitted):
        try:
            status = handle.result()
        except Exception as err:  # the scheduler job died (e.g. cancelled): record it
            job.run_dir.mark_failed(f"{type(err).__name__}: {err}")
            status = "failed"
        _file(report, job, status)
