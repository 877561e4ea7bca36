"""An experiment: a base :class:`~merdg.run.config.RunConfig` and the axes varied around it.

``merdg bench`` and ``merdg sweep`` are both an :class:`ExperimentConfig`: algorithms x
modality sets x (sources -> target) x hparam trials x seeds on one dataset (or on each of
several, ``datasets``, as DomainBed's ``sweep.py --datasets``: :meth:`ExperimentConfig.per_dataset`
gives one experiment per data set, its runs under ``OUT/<dataset>``), every other setting
taken from the base run config. The ``setting`` says which (sources -> target) pairs: ``multi``
(each target with every other domain as sources, leave-one-domain-out), ``single`` (each
target with each other domain alone: every ordered pair of domains) or ``all`` (both). A bench
is an experiment without a search (``trials = 0``) whose runs live in directories named by
their axes (``runs/<modalities>/<algorithm>/<target>/seed<k>``, single-source runs
``runs/<modalities>/<algorithm>/<source>-to-<target>/seed<k>``); a sweep searches hparams and
names each run by the md5 of its identity (``jobs/<hash>``, as DomainBed's ``Job``), so the
same run always lands in the same directory.

Runs are built with :func:`dataclasses.replace` on the base config (:func:`run_config`). The
protocols and the choice of a trial are in :mod:`merdg.experiments.search`. Every run of a
sweep uses the same source train/val split (``base.split_seed``), so trials are compared on
the same validation data and seeds vary only the training randomness. With
``selection="lodo"`` a task's search runs are its inner runs (:func:`inner_config`: one per
trial and source domain held out), and the chosen trial is trained on all sources with seeds
``0 .. seeds - 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merdg.experiments.jobs import Job, job_hash
from merdg.experiments.search import PROTOCOLS, TRIAL_RULES, choose_trial, choose_trial_lodo
from merdg.run.config import RunConfig
from merdg.run.records import run_rows

__all__ = ["LAYOUTS", "SELECTIONS", "SETTINGS", "ExperimentConfig", "Task", "inner_config",
           "plan", "retrain_jobs", "run_config", "search_jobs", "tasks"]

LAYOUTS = ("named", "hashed")
ERRORS = ("std", "se")  # what ± is in the tables (merdg.experiments.report.ERRORS)
SETTINGS = ("multi", "single", "all")
SELECTIONS = tuple(TRIAL_RULES)  # how a task's trial is chosen (merdg.experiments.search)


@dataclass
class ExperimentConfig:
    """Many runs: ``base`` with these axes varied.

    Attributes:
        base: Every setting the runs share (its ``target``, ``sources``, ``algorithm``,
            ``modalities``, ``seed``, ``hparams_seed`` and ``out_dir`` are set per run, so its
            ``sources`` must be unset).
        out_dir: The experiment directory.
        algorithms: Algorithm names.
        modality_sets: Modality sets to compare (None: the dataset's
            ``BENCH_MODALITY_SETS``, else all modalities together).
        targets: Target domains (None: every domain).
        setting: ``"multi"`` (every other domain is a source), ``"single"`` (each other domain
            alone is the source: one run per ordered pair) or ``"all"`` (both).
        seeds: Runs per task to report (fair), or seeds of every trial (grid).
        trials: Random hyperparameter trials besides the default (MMDG-Bench: 10).
        protocol: ``"fair"`` or ``"grid"`` (:mod:`merdg.experiments.search`).
        layout: ``"named"`` (``runs/<modalities>/<algorithm>/<target>/[trial<k>/]seed<s>``) or
            ``"hashed"`` (``jobs/<md5 of the run's identity>``).
        diagnose_seeds: Diagnose (``merdg diagnose``) the first this many seeds of every
            modality set and target, saving those runs' weights (plain comparisons only).
        reference: The algorithm every other one is compared with in the paired-difference
            table (None: ERM when it is among the runs; a name given must be in
            ``algorithms``).
        selection: How each task's trial is chosen: ``"source_val"`` (its search run's
            source-validation accuracy) or ``"lodo"`` (leave-one-domain-out cross-validation
            on the sources: inner runs, then the chosen trial trained with seeds
            ``0 .. seeds - 1``; fair protocol; :mod:`merdg.experiments.search`).
        datasets: Several data sets, each run with the same axes (None: ``base.dataset``
            alone); every domain of each is a target, and the tables add the average over
            data sets.
        error: What ``±`` is in the tables and figures: ``"std"`` (sample standard deviation
            over seeds) or ``"se"`` (standard error; DomainBed's tables).
    """

    base: RunConfig
    out_dir: str
    algorithms: list[str] = field(default_factory=lambda: ["ERM", "MERDG"])
    modality_sets: list[list[str]] | None = None
    targets: list[str] | None = None
    seeds: int = 3
    trials: int = 0
    protocol: str = "fair"
    layout: str = "named"
    diagnose_seeds: int = 0
    setting: str = "multi"
    reference: str | None = None
    selection: str = "source_val"
    datasets: list[str] | None = None
    error: str = "std"

    def validate(self) -> ExperimentConfig:
        """Check the axes (the base config checks itself); returns self.

        Raises:
            ValueError: One line naming the setting, the value and what is allowed.
        """
        if not self.algorithms:
            raise ValueError("--algorithms lists no algorithm")
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ValueError(f"--algorithms lists a name twice: {self.algorithms}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"--seeds must be an integer >= 1, got {self.seeds!r}")
        if not isinstance(self.trials, int) or self.trials < 0:
            raise ValueError(f"--trials must be an integer >= 0, got {self.trials!r}")
        if not isinstance(self.diagnose_seeds, int) or not 0 <= self.diagnose_seeds:
            raise ValueError(f"--diagnose must be an integer >= 0, got {self.diagnose_seeds!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {list(PROTOCOLS)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.diagnose_seeds and self.trials:
            raise ValueError("--diagnose works on plain comparisons (no hparam trials)")
        if self.diagnose_seeds and self.base.open_set:
            raise ValueError("--diagnose works on closed-set runs (not with --open-set)")
        if self.setting not in SETTINGS:
            raise ValueError(f"--setting must be one of {', '.join(SETTINGS)}, got "
                             f"{self.setting!r}")
        if self.reference is not None and self.reference not in self.algorithms:
            raise ValueError(f"--reference {self.reference} is not among --algorithms "
                             f"{' '.join(self.algorithms)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"--selection must be one of {', '.join(SELECTIONS)}, got "
                             f"{self.selection!r}")
        if self.selection == "lodo" and self.protocol != "fair":
            raise ValueError("--selection lodo works with --protocol fair (the chosen trial is "
                             "then trained with every seed)")
        if self.base.sources is not None:
            raise ValueError("an experiment sets each run's sources (--setting multi|single|"
                             "all); --source is for merdg train")
        for mods in self.modality_sets or []:
            if not mods or len(set(mods)) != len(mods):
                raise ValueError(f"invalid modality set {mods} in --modality-sets")
        if self.error not in ERRORS:
            raise ValueError(f"--error must be one of {', '.join(ERRORS)}, got {self.error!r}")
        self._validate_datasets()
        self.base.validate()
        return self

    def _validate_datasets(self) -> None:
        if self.datasets is None:
            return
        if not self.datasets or not all(isinstance(d, str) and d for d in self.datasets):
            raise ValueError(f"--datasets must name data sets, got {self.datasets!r}")
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"--datasets lists a name twice: {' '.join(self.datasets)}")
        if self.base.dataset != self.datasets[0]:
            raise ValueError(f"the base config's dataset {self.base.dataset!r} must be the "
                             f"first of --datasets {' '.join(self.datasets)}")
        if self.targets is not None:
            raise ValueError("--targets names domains of one data set; with --datasets every "
                             "domain of each data set is a target")
        if self.diagnose_seeds:
            raise ValueError("--diagnose works on one data set (not with --datasets)")

    def per_dataset(self) -> list[ExperimentConfig]:
        """One experiment per data set: ``[self]``, or with ``datasets`` one per name, with
        that data set and its runs under ``out_dir/<dataset>`` (their W&B group stays the
        experiment's)."""
        if self.datasets is None:
            return [self]
        group = self.base.wandb_group
        if self.base.wandb and group is None:
            group = Path(self.out_dir).resolve().name
        return [dataclasses.replace(
            self, base=dataclasses.replace(self.base, dataset=name, wandb_group=group),
            datasets=None, out_dir=str(Path(self.out_dir) / name)) for name in self.datasets]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        return cls(**{**data, "base": RunConfig.from_dict(data["base"])})


@dataclass(frozen=True)
class Task:
    """What one table cell is about.

    Attributes:
        sources: The source domains (None: every domain but the target).
        domains: The dataset's domains (what "every domain but the target" means).
    """

    modalities: tuple[str, ...]
    algorithm: str
    target: str
    sources: tuple[str, ...] | None = None
    domains: tuple[str, ...] = ()

    @property
    def source_domains(self) -> tuple[str, ...]:
        """The sources, spelled out (every domain but the target when ``sources`` is None)."""
        if self.sources is not None:
            return self.sources
        return tuple(d for d in self.domains if d != self.target)


def source_sets(setting: str, target: str, domains: Sequence[str],
                omitted: Sequence[tuple[Sequence[str], str]] = ()
                ) -> list[tuple[str, ...] | None]:
    """The source sets of ``target`` under ``setting`` (None: every other domain), without the
    ``omitted`` (sources, target) pairs (the dataset's ``OMITTED_TASKS``)."""
    others = tuple(d for d in domains if d != target)
    left_out = {(tuple(sorted(s)), t) for s, t in omitted}
    single = [(d,) for d in others if ((d,), target) not in left_out]
    multi = [] if (tuple(sorted(others)), target) in left_out else [None]
    return {"multi": multi, "single": single, "all": [*multi, *single]}[setting]


def tasks(experiment: ExperimentConfig, domains: Sequence[str],
          default_modality_sets: Sequence[Sequence[str]],
          omitted: Sequence[tuple[Sequence[str], str]] = ()) -> list[Task]:
    """Every (modality set, algorithm, sources -> target) of the experiment.

    Args:
        experiment: The experiment.
        domains: The dataset's domains (targets default to all of them; single-source runs
            take each of the others as their source).
        default_modality_sets: Used when the experiment names none.
        omitted: (sources, target) pairs left out (the dataset's ``OMITTED_TASKS``: those
            its published benchmark does not run).

    Raises:
        ValueError: A target given with ``--targets`` has no task left under the setting.
    """
    targets = experiment.targets or list(domains)
    modality_sets = experiment.modality_sets or [list(m) for m in default_modality_sets]
    pairs = {t: source_sets(experiment.setting, t, domains, omitted) for t in targets}
    empty = [t for t in experiment.targets or [] if not pairs[t]]
    if empty:
        raise ValueError(f"--setting {experiment.setting} has no task with target "
                         f"{', '.join(empty)}: the data set's benchmark does not run it "
                         "(merdg train --source ... --target ... trains it)")
    return [Task(tuple(sorted(mods)), algo, target, sources, tuple(domains))
            for mods in modality_sets for algo in experiment.algorithms for target in targets
            for sources in pairs[target]]


def _pair(sources: Sequence[str] | None, target: str | None) -> str:
    """The directory name of a (sources -> target) pair: the target alone for multi-source."""
    return str(target) if sources is None else f"{'+'.join(sources)}-to-{target}"


def _run_path(experiment: ExperimentConfig, config: RunConfig) -> Path:
    root = Path(experiment.out_dir)
    if experiment.layout == "hashed":
        return root / "jobs" / job_hash(config)
    path = (root / "runs" / "+".join(config.modalities or ["all"]) / config.algorithm
            / _pair(config.sources, config.target))
    if config.hparams_seed:
        path = path / f"trial{config.hparams_seed}"
    return path / f"seed{config.seed}"


def run_config(experiment: ExperimentConfig, task: Task, trial: int, seed: int) -> RunConfig:
    """The run of ``task`` for hparam ``trial`` and ``seed``: the base config with the axes
    set."""
    config = dataclasses.replace(
        experiment.base, target=task.target, algorithm=task.algorithm,
        sources=list(task.sources) if task.sources is not None else None,
        modalities=list(task.modalities), seed=seed, hparams_seed=trial, out_dir=None,
        save_model=("selected" if experiment.base.save_model == "none"
                    and seed < experiment.diagnose_seeds else experiment.base.save_model))
    return _grouped(experiment, dataclasses.replace(config,
                                                    out_dir=str(_run_path(experiment, config))))


def _grouped(experiment: ExperimentConfig, config: RunConfig) -> RunConfig:
    """With ``--wandb`` and no ``--wandb-group``: the W&B group of every run of the experiment
    is the name of its directory (not part of a run's identity)."""
    if not config.wandb or config.wandb_group is not None:
        return config
    return dataclasses.replace(config, wandb_group=Path(experiment.out_dir).resolve().name)


def _job(experiment: ExperimentConfig, task: Task, trial: int, seed: int, phase: str) -> Job:
    return Job(run_config(experiment, task, trial, seed), {"trial": trial, "phase": phase})


def uses_lodo(experiment: ExperimentConfig) -> bool:
    """Whether the experiment chooses trials by leave-one-domain-out cross-validation (with
    one trial there is nothing to choose)."""
    return experiment.selection == "lodo" and experiment.trials > 0


def inner_config(experiment: ExperimentConfig, task: Task, trial: int, held_out: str
                 ) -> RunConfig:
    """The inner run of ``task`` for ``trial`` that holds out source ``held_out``: trained on
    the task's other sources, evaluated on ``held_out`` (the task's target is left out)."""
    if held_out not in task.source_domains:
        raise ValueError(f"{held_out!r} is not a source of the task (sources "
                         f"{task.source_domains})")
    sources = [d for d in task.source_domains if d != held_out]
    config = dataclasses.replace(
        experiment.base, target=held_out, sources=sources, algorithm=task.algorithm,
        modalities=list(task.modalities), seed=trial, hparams_seed=trial, out_dir=None)
    if experiment.layout == "hashed":
        path = Path(experiment.out_dir) / "jobs" / job_hash(config)
    else:
        path = (Path(experiment.out_dir) / "runs" / "+".join(task.modalities) / task.algorithm
                / _pair(task.sources, task.target) / f"lodo-{held_out}" / f"trial{trial}"
                / f"seed{trial}")
    return _grouped(experiment, dataclasses.replace(config, out_dir=str(path)))


def _inner_jobs(experiment: ExperimentConfig, task: Task) -> list[Job]:
    if len(task.source_domains) < 2:
        raise ValueError(f"leave-one-domain-out selection needs >= 2 source domains; target "
                         f"{task.target} has {list(task.source_domains)}")
    return [Job(inner_config(experiment, task, k, h),
                {"trial": k, "phase": "inner", "held_out": h, "outer_target": task.target})
            for k in range(experiment.trials + 1) for h in task.source_domains]


def search_jobs(experiment: ExperimentConfig, task: Task) -> list[Job]:
    """Fair: trial k with seed k. Grid: every trial with every seed. Leave-one-domain-out
    selection: every trial's inner runs (:func:`inner_config`)."""
    if uses_lodo(experiment):
        return _inner_jobs(experiment, task)
    if experiment.protocol == "grid":
        return [_job(experiment, task, k, s, "grid") for k in range(experiment.trials + 1)
                for s in range(experiment.seeds)]
    return [_job(experiment, task, k, k, "search") for k in range(experiment.trials + 1)]


def retrain_jobs(experiment: ExperimentConfig, task: Task, trial: int) -> list[Job]:
    """The chosen trial's extra seeds (above every search seed); with leave-one-domain-out
    selection, the chosen trial on all sources with seeds ``0 .. seeds - 1``."""
    if uses_lodo(experiment):
        return [_job(experiment, task, trial, s, "retrain") for s in range(experiment.seeds)]
    first = experiment.trials + 1
    return [_job(experiment, task, trial, s, "retrain")
            for s in range(first, first + experiment.seeds - 1)]


def chosen_trial(jobs: Sequence[Job]) -> int | None:
    """The trial chosen among a task's search jobs, once every one is done or failed (None
    while some are unfinished, or when all failed). Inner runs (leave-one-domain-out) choose by
    :func:`merdg.experiments.search.choose_trial_lodo` among the trials whose inner runs all
    finished."""
    statuses = [job.status() for job in jobs]
    if any(s not in ("done", "failed") for s in statuses) or "done" not in statuses:
        return None
    rows = [row for job, s in zip(jobs, statuses) if s == "done"
            for row in run_rows(job.run_dir.read_records()) if row["selection"] == "source_val"]
    if jobs[0].label.get("phase") == "inner":
        held_out = list(dict.fromkeys(job.config.target for job in jobs))
        return choose_trial_lodo(rows, held_out)
    return choose_trial(rows)


def first_phase(experiment: ExperimentConfig, all_tasks: Sequence[Task]) -> list[Job]:
    """Jobs that can run now: every search job (and, without a search, every retrain job)."""
    jobs = [job for task in all_tasks for job in search_jobs(experiment, task)]
    if experiment.protocol == "fair" and experiment.trials == 0:  # nothing to choose
        jobs += [job for task in all_tasks for job in retrain_jobs(experiment, task, 0)]
    return jobs


def second_phase(experiment: ExperimentConfig, all_tasks: Sequence[Task]
                 ) -> tuple[list[Job], list[Task]]:
    """Retrain jobs of tasks whose search is settled, and the tasks still waiting."""
    if experiment.protocol == "grid" or experiment.trials == 0:
        return [], []
    jobs, waiting = [], []
    for task in all_tasks:
        trial = chosen_trial(search_jobs(experiment, task))
        if trial is None:
            waiting.append(task)
        else:
            jobs += retrain_jobs(experiment, task, trial)
    return jobs, waiting


def plan(experiment: ExperimentConfig, all_tasks: Sequence[Task]
         ) -> tuple[list[Job], list[Task]]:
    """Every job that can be enumerated now (search, plus retrain jobs of settled tasks), and
    the tasks whose retrain jobs wait for their search."""
    second, waiting = second_phase(experiment, all_tasks)
    return first_phase(experiment, all_tasks) + second, waiting
