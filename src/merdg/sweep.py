"""``merdg sweep``: many runs as resumable jobs, under MMDG-Bench's fair search protocol.

A sweep enumerates dataset x algorithm x modality set x target x hyperparameter trial x seed
into jobs (:mod:`merdg.jobs`), each in ``<out>/jobs/<hash of its config>/``. Launching again
skips finished jobs, resumes interrupted ones from their checkpoints and retries failed ones,
so the same command can be repeated until everything is done.

Protocols (``hparams_seed`` 0 is the default configuration, k > 0 samples every hparam that
declares a search space; see :mod:`merdg.hparams`):

- ``fair`` (default; MMDG-Bench, peers.md section 6): per task (modality set, algorithm,
  target), the default plus ``trials`` random trials, trial k trained once with seed k; the
  trial with the best source-validation accuracy (ties: lower validation loss, then lower
  index) is retrained with seeds ``trials + 1 .. trials + seeds - 1``; tables report mean and
  std over the ``seeds`` runs of the chosen trial.
- ``grid`` (DomainBed): every trial with every seed ``0 .. seeds - 1``.

Every run of a sweep uses the same source train/val split (``split_seed``), so trials are
compared on the same validation data and seeds vary only the training randomness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merdg.algorithms import get_algorithm_class
from merdg.collect import choose_trial, write_tables
from merdg.datasets import DATASETS, build_dataset
from merdg.hparams import TRAINING_HPARAMS, resolve_hparams
from merdg.jobs import Job, count_statuses, sweep_job
from merdg.launchers import LauncherOptions, LaunchReport, launch
from merdg.records import read_jsonl, run_metadata, write_json_atomic
from merdg.reporting import run_rows
from merdg.training import RunConfig

__all__ = ["PROTOCOLS", "SweepConfig", "Task", "plan", "run_sweep", "search_jobs", "tasks"]

PROTOCOLS = ("fair", "grid")


@dataclass
class SweepConfig:
    """A sweep: algorithms x modality sets x targets x trials x seeds on one dataset.

    Attributes:
        dataset: Registered dataset name.
        algorithms: Algorithm names.
        out_dir: Sweep directory.
        modality_sets: Modality sets to compare (None: all modalities together).
        targets: Target domains (None: every domain).
        trials: Random hyperparameter trials besides the default (MMDG-Bench: 10).
        seeds: Runs per task to report (fair) or seeds of every trial (grid).
        protocol: ``"fair"`` or ``"grid"`` (module docstring).
        split_seed: Seed of the source train/val split shared by every run.
        hparams: Overrides applied to every run (also to random trials).
        dataset_options / data_root / device / num_workers / holdout_fraction / precision /
            eval_missing: As in :class:`~merdg.training.RunConfig`.
    """

    dataset: str
    algorithms: list[str]
    out_dir: str
    modality_sets: list[list[str]] | None = None
    targets: list[str] | None = None
    trials: int = 10
    seeds: int = 3
    protocol: str = "fair"
    split_seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    device: str = "cpu"
    num_workers: int = 0
    holdout_fraction: float = 0.2
    precision: str = "fp32"
    eval_missing: str = "none"


@dataclass(frozen=True)
class Task:
    """What one table cell is about."""

    modalities: tuple[str, ...]
    algorithm: str
    target: str


def tasks(sweep: SweepConfig) -> list[Task]:
    """Every (modality set, algorithm, target) of the sweep, validated against the dataset."""
    dataset = build_dataset(sweep.dataset, sweep.data_root, None, **sweep.dataset_options)
    targets = sweep.targets or dataset.domains
    dataset.check_domains(targets)
    modality_sets = sweep.modality_sets or [list(dataset.modalities)]
    return [Task(tuple(sorted(mods)), algo, target) for mods in modality_sets
            for algo in sweep.algorithms for target in targets]


def run_config(sweep: SweepConfig, task: Task, trial: int, seed: int) -> RunConfig:
    return RunConfig(
        dataset=sweep.dataset, target=task.target, algorithm=task.algorithm,
        modalities=list(task.modalities), seed=seed, hparams_seed=trial,
        hparams=dict(sweep.hparams), data_root=sweep.data_root,
        dataset_options=dict(sweep.dataset_options), holdout_fraction=sweep.holdout_fraction,
        device=sweep.device, num_workers=sweep.num_workers, precision=sweep.precision,
        split_seed=sweep.split_seed, eval_missing=sweep.eval_missing)


def _job(sweep: SweepConfig, task: Task, trial: int, seed: int, phase: str) -> Job:
    return sweep_job(run_config(sweep, task, trial, seed), sweep.out_dir,
                     {"trial": trial, "phase": phase})


def search_jobs(sweep: SweepConfig, task: Task) -> list[Job]:
    """Fair: trial k with seed k. Grid: every trial with every seed."""
    if sweep.protocol == "grid":
        return [_job(sweep, task, k, s, "grid") for k in range(sweep.trials + 1)
                for s in range(sweep.seeds)]
    return [_job(sweep, task, k, k, "search") for k in range(sweep.trials + 1)]


def retrain_jobs(sweep: SweepConfig, task: Task, trial: int) -> list[Job]:
    """The chosen trial's extra seeds (above every search seed)."""
    first = sweep.trials + 1
    return [_job(sweep, task, trial, s, "retrain") for s in range(first, first + sweep.seeds - 1)]


def chosen_trial(jobs: Sequence[Job]) -> int | None:
    """The trial chosen among a task's search jobs, once every one is done or failed (None
    while some are unfinished, or when all failed)."""
    statuses = [job.status() for job in jobs]
    if any(s not in ("done", "failed") for s in statuses) or "done" not in statuses:
        return None
    rows = [row for job, s in zip(jobs, statuses) if s == "done"
            for row in run_rows(list(read_jsonl(job.path / "records.jsonl")))
            if row["selection"] == "source_val"]
    return choose_trial(rows)


def _second_phase(sweep: SweepConfig, all_tasks: Sequence[Task]) -> tuple[list[Job], list[Task]]:
    """Retrain jobs of tasks whose search is settled, and the tasks still waiting."""
    jobs, waiting = [], []
    for task in all_tasks:
        trial = 0 if sweep.trials == 0 else chosen_trial(search_jobs(sweep, task))
        if trial is None:
            waiting.append(task)
        else:
            jobs += retrain_jobs(sweep, task, trial)
    return jobs, waiting


def plan(sweep: SweepConfig, all_tasks: Sequence[Task] | None = None
         ) -> tuple[list[Job], list[Task]]:
    """Every job that can be enumerated now (search, plus retrain jobs of settled tasks), and
    the tasks whose retrain jobs wait for their search."""
    all_tasks = tasks(sweep) if all_tasks is None else all_tasks
    jobs = [job for task in all_tasks for job in search_jobs(sweep, task)]
    if sweep.protocol == "grid":
        return jobs, []
    second, waiting = _second_phase(sweep, all_tasks)
    return jobs + second, waiting


def check_names(sweep: SweepConfig) -> None:
    """Fail before launching on an unknown protocol, algorithm, dataset or hparam name."""
    if sweep.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {sweep.protocol!r}; choose from {list(PROTOCOLS)}")
    if sweep.trials < 0 or sweep.seeds < 1:
        raise ValueError(f"need trials >= 0 and seeds >= 1, got {sweep.trials}, {sweep.seeds}")
    dataset_cls = DATASETS.get(sweep.dataset)
    overrides = {k: v for k, v in sweep.hparams.items() if k != "encoders"}
    for name in sweep.algorithms:
        resolve_hparams(TRAINING_HPARAMS, dataset_cls.HPARAMS, get_algorithm_class(name).HPARAMS,
                        overrides=overrides)


@dataclass
class SweepResult:
    """Launch reports (one per phase), tasks still waiting for their search, and the tables
    (None when nothing has finished)."""

    reports: list[LaunchReport]
    waiting: list[Task]
    tables: dict[str, Any] | None
    status: dict[str, int]


def run_sweep(sweep: SweepConfig, options: LauncherOptions | None = None,
              progress: bool = True) -> SweepResult:
    """Launch (or resume) the sweep, then write the tables from every finished run."""
    check_names(sweep)
    root = Path(sweep.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / "sweep.json", {"sweep": dataclasses.asdict(sweep),
                                            **run_metadata()})
    all_tasks = tasks(sweep)
    first = [job for task in all_tasks for job in search_jobs(sweep, task)]
    if sweep.protocol == "fair" and sweep.trials == 0:  # nothing to choose: one phase
        first += [job for task in all_tasks for job in retrain_jobs(sweep, task, 0)]
    reports = [launch(first, options, progress)]
    waiting: list[Task] = []
    if sweep.protocol == "fair" and sweep.trials > 0:
        second, waiting = _second_phase(sweep, all_tasks)
        reports.append(launch(second, options, progress))
    jobs, _ = plan(sweep, all_tasks)
    finished = any(job.status() == "done" for job in jobs)
    tables = write_tables(root) if finished else None
    return SweepResult(reports, waiting, tables, count_statuses(jobs))
