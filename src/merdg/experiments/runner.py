"""Running an experiment: validate, launch the runs (resumably), then write tables and report.

:func:`run_experiment` is ``merdg bench``, ``merdg sweep`` and ``merdg demo``. Everything is
checked before any run starts: the dataset and its domains, every algorithm's hparams (unknown
names and presets fail here), and the run directories (one holding a run of another config is
refused, listing the differences, unless ``overwrite``). Nothing is written before every check
has passed (``experiment.json`` included), so a refused command leaves the directory as it
was. Launching again skips finished runs, resumes interrupted ones from their checkpoints and
retries failed ones, so the same command can be repeated until everything is done. Tables
are written from whatever has finished, also when some runs failed (their errors are listed;
the command then exits with status 1).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merdg.datasets import DomainDataset, build_dataset
from merdg.evaluators import RunSpec, canonical_evaluations, run_evaluators
from merdg.experiments.jobs import Job, count_statuses
from merdg.experiments.launchers import LauncherOptions, LaunchReport, launch
from merdg.experiments.plan import (
    ExperimentConfig,
    Task,
    first_phase,
    plan,
    run_config,
    second_phase,
    tasks,
)
from merdg.experiments.report import EXPERIMENT_FILE, write_report, write_tables
from merdg.run.directory import RunDirConflictError
from merdg.run.hparams import resolve_run_hparams
from merdg.run.initialization import check_initialization
from merdg.run.records import run_metadata, write_json_atomic
from merdg.run.setup import check_open_set, source_splits
from merdg.run.wandb import check_wandb
from merdg.words import count

__all__ = ["ExperimentResult", "check_experiment", "check_experiments", "experiment_tasks",
           "plan_experiments", "run_experiment"]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did.

    Attributes:
        reports: Launch reports, one per phase (search, retrain).
        waiting: Tasks whose retrain jobs wait for their search to finish.
        tables: ``{"markdown", "paths", "tables", "rows"}`` from
            :func:`merdg.experiments.report.write_tables` (None when nothing finished).
        report: ``report.md`` (None when nothing finished).
        status: Job counts per status.
        elapsed_s: Wall time of this invocation.
    """

    reports: list[LaunchReport]
    waiting: list[Task]
    tables: dict[str, Any] | None
    report: Path | None
    status: dict[str, int]
    elapsed_s: float
    failures: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.reports)

    @property
    def unfinished(self) -> int:
        return sum(len(r.submitted) + len(r.busy) for r in self.reports) + len(self.waiting)


def _dataset(experiment: ExperimentConfig) -> DomainDataset:
    base = experiment.base
    return build_dataset(base.dataset, base.data_root, None, **base.dataset_options)


def experiment_tasks(experiment: ExperimentConfig,
                     dataset: DomainDataset | None = None) -> list[Task]:
    """The experiment's tasks, with targets and modality sets checked against the dataset."""
    dataset = dataset or _dataset(experiment)
    if experiment.targets:
        dataset.check_domains(experiment.targets)
    defaults = [list(m) for m in dataset.BENCH_MODALITY_SETS] or [list(dataset.modalities)]
    return tasks(experiment, dataset.domains, defaults, dataset.OMITTED_TASKS)


def check_experiment(experiment: ExperimentConfig) -> list[Task]:
    """Validate everything a run could fail on before any run starts; returns the tasks.

    Every (modality set, algorithm) resolves its hparams exactly as its runs will
    (:func:`merdg.run.hparams.resolve_run_hparams`), so an unknown algorithm or hparam name, a
    value out of its declared range, a bad preset or a missing checkpoint fails here, once; so
    do open-set settings (no published class split and no ``--known-classes``, a bad class
    list, MOOSA-OS without ``--open-set``), every evaluation asked for (its
    :meth:`~merdg.evaluators.Evaluator.check`: e.g. a corruption name that no modality of a
    modality set accepts, OOD data whose samples do not fit), and an ``--init`` file or
    ``--freeze`` that does not fit the encoders
    (:func:`merdg.run.initialization.check_initialization`); and every task's source domains
    are checked against its batch size and holdout (:func:`merdg.run.setup.source_splits`: no
    empty split, each domain's share of a batch).
    """
    experiment.validate()
    canonical_evaluations(experiment.base.evaluations)  # before any data is read
    if experiment.base.wandb:
        check_wandb()  # the package and, online, credentials: before any job
    dataset = _dataset(experiment)
    all_tasks = experiment_tasks(experiment, dataset)
    checked: dict[tuple[tuple[str, ...], str], tuple[DomainDataset, set[int], Any]] = {}
    for task in all_tasks:
        key = (task.modalities, task.algorithm)
        config = run_config(experiment, task, 0, 0)
        if key not in checked:
            subset = build_dataset(experiment.base.dataset, experiment.base.data_root,
                                   list(task.modalities), **experiment.base.dataset_options)
            known = check_open_set(config, subset)
            sources = config.sources or [d for d in subset.domains if d != task.target]
            spec = RunSpec(config, subset, sources, known)
            for evaluator in run_evaluators(config.evaluations, spec):
                evaluator.check(spec)
            sizes = {int(resolve_run_hparams(run_config(experiment, task, trial, trial),
                                             subset)["batch_size"])
                     for trial in range(experiment.trials + 1)}
            check_initialization(config, resolve_run_hparams(config, subset), subset)
            checked[key] = (subset, sizes, known)
        subset, sizes, known = checked[key]
        sources = config.sources or [d for d in subset.domains if d != task.target]
        for batch_size in sorted(sizes):
            source_splits(subset, config, sources, batch_size, known)
    return all_tasks


def check_experiments(experiment: ExperimentConfig) -> list[tuple[ExperimentConfig, list[Task]]]:
    """:func:`check_experiment` of each data set's experiment
    (:meth:`~merdg.experiments.plan.ExperimentConfig.per_dataset`), every one before any
    work; ``[(its experiment, its tasks)]``."""
    experiment.validate()
    return [(each, check_experiment(each)) for each in experiment.per_dataset()]


def plan_experiments(checked: Sequence[tuple[ExperimentConfig, list[Task]]]
                     ) -> tuple[list[Job], list[Task]]:
    """:func:`~merdg.experiments.plan.plan` of every data set's experiment, together."""
    jobs: list[Job] = []
    waiting: list[Task] = []
    for each, each_tasks in checked:
        more, wait = plan(each, each_tasks)
        jobs, waiting = jobs + more, waiting + wait
    return jobs, waiting


def _settle_directories(jobs: Sequence[Job], overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) run directories holding another config's run."""
    for job in _foreign(jobs, overwrite):
        job.run_dir.reset()


def _foreign(jobs: Sequence[Job], overwrite: bool) -> list[Job]:
    """The jobs whose directories hold another config's run (to clear, with ``overwrite``).

    Raises:
        RunDirConflictError: There are some and ``overwrite`` is False.
    """
    foreign = [job for job in jobs if job.status() == "foreign"]
    if foreign and not overwrite:
        first = foreign[0].run_dir.conflict_message(foreign[0].config)
        noun = "directory" if len(foreign) == 1 else "directories"
        raise RunDirConflictError(f"{len(foreign)} run {noun} of this experiment hold other "
                                  f"runs; the first: {first}")
    return foreign


def _lacking_weights(experiment: ExperimentConfig, jobs: Sequence[Job],
                     overwrite: bool) -> list[Job]:
    """Finished runs that diagnostics need but that did not save their weights (to retrain,
    with ``overwrite``).

    Raises:
        RunDirConflictError: There are some and ``overwrite`` is False.
    """
    missing = [job for job in jobs if job.config.seed < experiment.diagnose_seeds
               and job.status() == "done" and not job.run_dir.model_file.exists()]
    if missing and not overwrite:
        raise RunDirConflictError(
            f"{count(len(missing), 'finished run')} lack{'s' * (len(missing) == 1)} the "
            "weights --diagnose needs (e.g. "
            f"{missing[0].path}); run again with --overwrite to retrain them, or without "
            "--diagnose")
    return missing


def run_experiment(experiment: ExperimentConfig, launcher: LauncherOptions | None = None,
                   progress: bool = True, overwrite: bool = False) -> ExperimentResult:
    """Run (or resume) every run of the experiment, then write its tables and report.

    Args:
        experiment: What to run.
        launcher: Where to run the jobs (this process, worker processes, Slurm).
        progress: Show progress bars.
        overwrite: Replace run directories that hold runs of another config (and finished
            runs that lack weights the diagnostics need).
    """
    start = time.perf_counter()
    checked = check_experiments(experiment)
    first = [job for each, each_tasks in checked for job in first_phase(each, each_tasks)]
    to_clear = _foreign(first, overwrite) + _lacking_weights(experiment, first, overwrite)
    # every check has passed: only now is anything written (a refused command changes nothing)
    root = Path(experiment.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / EXPERIMENT_FILE, {"experiment": experiment.to_dict(),
                                               **run_metadata()})
    for job in to_clear:
        job.run_dir.reset()
    reports = [launch(first, launcher, progress)]
    second, waiting = [], []
    for each, each_tasks in checked:
        more, wait = second_phase(each, each_tasks)
        second, waiting = second + more, waiting + wait
    if second:
        _settle_directories(second, overwrite)
        reports.append(launch(second, launcher, progress))
    jobs, _ = plan_experiments(checked)
    _warn_unevaluable(jobs)
    result = ExperimentResult(reports, waiting, None, None, count_statuses(jobs), 0.0)
    if result.status["done"]:
        sections = _diagnose(experiment, jobs, progress) if not (
            result.failed or result.unfinished) else []
        result.tables = write_tables(root)
        result.elapsed_s = time.perf_counter() - start
        skipped = sum(len(r.skipped) for r in reports)
        result.report = write_report(root, experiment.to_dict(), result.tables["rows"],
                                     result.elapsed_s, skipped, sections)
    result.elapsed_s = time.perf_counter() - start
    write_json_atomic(root / EXPERIMENT_FILE, {
        "experiment": experiment.to_dict(), **run_metadata(), "elapsed_s": result.elapsed_s,
        "status": result.status, "skipped": sum(len(r.skipped) for r in reports),
        "failed": sum(len(r.failed) for r in reports)})
    return result


def _warn_unevaluable(jobs: Sequence[Job]) -> None:
    """One warning line for finished runs whose saved weights the asked evaluations lack."""
    unevaluable = [job for job in jobs if job.unevaluable()]
    if unevaluable:
        warnings.warn(f"{count(len(unevaluable), 'finished run')} saved no weights to "
                      "evaluate (e.g. "
                      f"{unevaluable[0].path}: trained with --save-model none or by an earlier "
                      "merdg); their evaluations are missing from the tables (retrain them with "
                      "--overwrite)", stacklevel=3)


def _diagnose(experiment: ExperimentConfig, jobs: Sequence[Job], progress: bool) -> list[str]:
    """``merdg diagnose`` on the first ``diagnose_seeds`` seeds; the report section's lines."""
    if experiment.diagnose_seeds <= 0:
        return []
    from merdg.diagnostics.experiment import diagnose_experiment

    configs = [dataclasses.replace(job.config) for job in jobs]
    return diagnose_experiment(experiment, configs, progress)
