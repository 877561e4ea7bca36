"""Leave-one-domain-out cross-validation as a trial-selection rule (merdg sweep --selection
lodo): inner runs never touch the target, and collect recomputes the choice from records."""

import shutil

import pytest

import merdg.run.training as training
from merdg.cli import main
from merdg.datasets import DATASETS
from merdg.datasets.synthetic import SyntheticShortcut
from merdg.experiments.plan import (
    ExperimentConfig,
    chosen_trial,
    retrain_jobs,
    search_jobs,
)
from merdg.experiments.report import lodo_table, write_tables
from merdg.experiments.results import build_tables, load_rows
from merdg.experiments.runner import experiment_tasks, run_experiment
from merdg.experiments.search import choose_trial_lodo, lodo_scores
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.selection import select_epoch


def experiment(out, tiny_hparams, tiny_synthetic_options, **kw):
    base = RunConfig(dataset="synthetic", hparams=tiny_hparams, split_seed=0,
                     dataset_options=tiny_synthetic_options)
    options = {"algorithms": ["MERDG"], "targets": ["d0"], "trials": 1, "seeds": 2,
               "selection": "lodo", "layout": "hashed", **kw}
    return ExperimentConfig(base=base, out_dir=str(out), **options).validate()


def test_inner_runs_hold_out_each_source_and_never_the_target(tmp_path, tiny_hparams,
                                                              tiny_synthetic_options):
    exp = experiment(tmp_path, tiny_hparams, tiny_synthetic_options)
    [task] = experiment_tasks(exp)
    jobs = search_jobs(exp, task)
    assert task.sources is None and task.source_domains == ("d1", "d2", "d3")
    assert [(j.label["trial"], j.config.target) for j in jobs] == [
        (k, h) for k in (0, 1) for h in ("d1", "d2", "d3")]
    for job in jobs:
        config = job.config
        assert config.target != "d0" and "d0" not in config.sources
        assert sorted([*config.sources, config.target]) == ["d1", "d2", "d3"]
        assert config.seed == config.hparams_seed == job.label["trial"]
    assert len({j.path for j in jobs}) == 6  # each inner run in its own job directory
    reported = retrain_jobs(exp, task, 1)
    assert [(j.config.seed, j.config.hparams_seed, j.config.sources, j.config.target)
            for j in reported] == [(0, 1, None, "d0"), (1, 1, None, "d0")]
    with pytest.raises(ValueError, match="--selection lodo works with --protocol fair"):
        experiment(tmp_path, tiny_hparams, tiny_synthetic_options, protocol="grid")
    with pytest.raises(ValueError, match="--selection must be one of source_val, lodo"):
        experiment(tmp_path, tiny_hparams, tiny_synthetic_options, selection="oracle")


def test_lodo_sweep_never_reads_the_target_and_collect_recomputes_the_choice(
        tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch):
    root = tmp_path / "sweep"
    exp = experiment(root, {**tiny_hparams, "lr": 0.01}, tiny_synthetic_options)
    current = {}
    setup = training._setup_run

    def setup_run(config, device, out):
        current["config"] = config
        return setup(config, device, out)

    reads = []
    split = SyntheticShortcut.split

    def logged_split(self, domain, role, seed, fraction):
        config = current.get("config")  # None: the experiment's checks before any run
        if config is not None:
            reads.append((config.sources is not None, config.target, domain))
        return split(self, domain, role, seed, fraction)

    monkeypatch.setattr(training, "_setup_run", setup_run)
    monkeypatch.setattr(SyntheticShortcut, "split", logged_split)
    result = run_experiment(exp, progress=False)
    assert not result.failed and not result.unfinished
    inner_reads = {domain for inner, _, domain in reads if inner}
    assert inner_reads == {"d1", "d2", "d3"}  # the target d0 is never split, i.e. never read
    assert {target for inner, target, _ in reads if not inner} == {"d0"}

    [task] = experiment_tasks(exp)
    jobs = search_jobs(exp, task)
    scores = {}
    for job in jobs:
        records = job.run_dir.read_records()
        accuracy = select_epoch(records, "source_val")["target"]["acc"]
        scores.setdefault(job.label["trial"], []).append(accuracy)
    expected = max(sorted(scores), key=lambda k: sum(scores[k]) / 3)
    assert chosen_trial(jobs) == expected

    assert len(set(scores[0]) | set(scores[1])) > 1  # the trials do score differently
    rows = load_rows(root)
    [table] = build_tables(rows).values()
    cell = table[("m0+m1+m2", "MERDG")]["d0"]
    assert (cell.trial, cell.rule, cell.seeds) == (expected, "lodo", (0, 1))
    text = (root / "table.md").read_text()
    assert "trial chosen by leave-one-domain-out cross-validation on the source domains" in text
    assert "| synthetic | m0+m1+m2 | MERDG | d0 | 0 | d1 d2 d3 |" in lodo_table(rows)
    assert "Leave-one-domain-out scores of every trial" in (root / "report.md").read_text()
    # the tables come from the records alone: a copy of the directory gives the same tables
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".lock", "job.json", "log.txt"))
    assert write_tables(copy)["markdown"] == text
    assert set(table) == {("m0+m1+m2", "MERDG")}  # inner runs are not cells of their own
    assert set(table[("m0+m1+m2", "MERDG")]) == {"d0", "avg"}


def row(trial, held_out, acc):
    return {"hparams_seed": trial, "target": held_out, "target_acc": acc, "path": "p"}


def test_lodo_scores_need_every_held_out_source():
    rows = [row(0, "a", 0.5), row(0, "b", 0.7), row(1, "a", 0.9), row(2, "a", 0.6),
            row(2, "b", 0.6)]
    assert lodo_scores(rows, ["a", "b"]) == {0: pytest.approx(0.6), 2: pytest.approx(0.6)}
    assert choose_trial_lodo(rows, ["a", "b"]) == 0  # tie: the lower trial
    assert choose_trial_lodo(rows + [row(1, "b", 0.9)], ["a", "b"]) == 1
    assert choose_trial_lodo([row(1, "a", 0.9)], ["a", "b"]) is None
    with pytest.raises(ValueError, match="two inner runs of trial 0 hold out 'a'"):
        lodo_scores(rows + [row(0, "a", 0.1)], ["a", "b"])


def test_sweep_cli_lists_the_inner_runs(tmp_path, tiny_hparams, capsys):
    import json

    assert main(["sweep", "--dataset", "synthetic", "--algorithms", "MERDG", "--targets", "d0",
                 "--trials", "2", "--seeds", "2", "--selection", "lodo", "--dry-run",
                 "--hparams", json.dumps(tiny_hparams), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("phase inner") == 9 and "9 jobs: 9 pending" in out
    assert "outer_target d0" in out and "-> d0 " not in out
    assert not any(p.name == RunDir.CONFIG for p in tmp_path.rglob("*"))


class PairedDomains(SyntheticShortcut):
    """The synthetic benchmark with domain names like UTD-MHAD's subject pairs (``a+b``)."""

    def __init__(self, **options):
        super().__init__(**options)
        self._samples = {f"{d}+x": v for d, v in self._samples.items()}
        self.domains = list(self._samples)


def test_domain_names_with_plus_signs(tmp_path, tiny_hparams, tiny_synthetic_options,
                                      monkeypatch):
    monkeypatch.setitem(DATASETS._items, "test-paired", PairedDomains)
    exp = experiment(tmp_path, {**tiny_hparams, "epochs": 1}, tiny_synthetic_options,
                     targets=["d1+x"], seeds=1)
    exp.base.dataset = "test-paired"
    assert not run_experiment(exp, progress=False).failed
    [table] = build_tables(load_rows(tmp_path)).values()
    cell = table[("m0+m1+m2", "MERDG")]["d1+x"]
    assert cell.rule == "lodo" and cell.n == 1
    assert "| d1+x | 1 | d0+x d2+x d3+x |" in lodo_table(load_rows(tmp_path))
