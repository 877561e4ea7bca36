"""Sweeps: job hashing and enumeration, skipping and resuming, failures, the launchers."""

import dataclasses
import json
from pathlib import Path

import pytest

import merdg.experiments.jobs as jobs_module
import merdg.run.training as training
from merdg.cli import main
from merdg.experiments.jobs import Job, job_hash
from merdg.experiments.launchers import LauncherOptions, launch
from merdg.experiments.plan import ExperimentConfig, plan, retrain_jobs, search_jobs
from merdg.experiments.runner import experiment_tasks, run_experiment
from merdg.run.config import RunConfig, config_identity
from merdg.run.directory import RunDir, RunDirConflictError
from merdg.run.records import read_jsonl

OPTIONS = {"samples_per_domain": 60, "n_classes": 3}


def tiny_sweep(out, tiny_hparams, **kw) -> ExperimentConfig:
    base = RunConfig(dataset="synthetic", hparams=tiny_hparams, dataset_options=OPTIONS,
                     split_seed=0, checkpoint_every=0.0)  # a killed job resumes an epoch
    return ExperimentConfig(**{"base": base, "algorithms": ["MERDG"], "out_dir": str(out),
                               "targets": ["d1"], "trials": 1, "seeds": 2, "layout": "hashed",
                               **kw})


def sweep_job(config: RunConfig, root) -> Job:
    """A standalone job in ``root/jobs/<hash>`` (the sweep layout)."""
    return Job(dataclasses.replace(config, out_dir=str(Path(root) / "jobs" / job_hash(config))))


def test_job_hash_names_what_a_run_computes():
    base = RunConfig(dataset="synthetic", target="d1", algorithm="MERDG", seed=2,
                     hparams={"lr": 0.01})
    assert job_hash(base) == "5427a592c6ce401c46e52a6176b397a6"  # stable across versions
    same = [RunConfig(**{**base.to_dict(), **change}) for change in (
        {"out_dir": "/x", "device": "cuda", "num_workers": 4, "eval_batch_size": 8,
         "save_model": "none", "data_root": "/data"},
        # what is evaluated after training: evaluating more never retrains
        {"evaluations": {"missing": {}, "corruptions": {"corruptions": "all"}}},
        {"holdout_fraction": 0.2, "split_seed": 2})]  # defaults and split_seed == seed
    assert {job_hash(c) for c in same} == {job_hash(base)}
    for change in ({"seed": 3}, {"hparams_seed": 1}, {"hparams": {"lr": 0.02}},
                   {"split_seed": 0}, {"modalities": ["m0", "m1"]}, {"precision": "bf16"}):
        assert job_hash(RunConfig(**{**base.to_dict(), **change})) != job_hash(base), change
    # a config.json written before a field existed has the same identity
    old = {k: v for k, v in base.to_dict().items() if k != "split_seed"}
    assert config_identity(old) == base.identity()


def test_enumeration_fair_and_grid(tmp_path, tiny_hparams):
    sweep = tiny_sweep(tmp_path, tiny_hparams, algorithms=["ERM", "MERDG"], targets=None,
                       modality_sets=[["m1", "m0"], ["m0", "m1", "m2"]], trials=2, seeds=3)
    all_tasks = experiment_tasks(sweep)
    assert len(all_tasks) == 2 * 2 * 4 and all_tasks[0].modalities == ("m0", "m1")
    search = search_jobs(sweep, all_tasks[0])
    assert [(j.config.hparams_seed, j.config.seed) for j in search] == [(0, 0), (1, 1), (2, 2)]
    assert [j.config.seed for j in retrain_jobs(sweep, all_tasks[0], 1)] == [3, 4]
    assert all(j.config.split_seed == 0 and j.config.hparams_seed == 1
               for j in retrain_jobs(sweep, all_tasks[0], 1))
    jobs, waiting = plan(sweep, all_tasks)
    assert len(jobs) == 16 * 3 and len(waiting) == 16  # retrains wait for the search
    assert len({j.path for j in jobs}) == len(jobs)
    assert all(j.path == tmp_path / "jobs" / job_hash(j.config) for j in jobs)
    grid = dataclasses.replace(sweep, protocol="grid")
    assert [(j.config.hparams_seed, j.config.seed) for j in search_jobs(grid, all_tasks[0])] == [
        (k, s) for k in range(3) for s in range(3)]
    assert len(plan(grid, all_tasks)[0]) == 16 * 9


class Killed(BaseException):
    """Stands in for the sweep process being killed (not an error a job records)."""


def comparable_records(root: Path) -> dict:
    return {p.parent.name: [{k: v for k, v in r.items() if k not in ("time_s", "run")}
                            for r in read_jsonl(p)]
            for p in sorted(root.glob("jobs/*/records.jsonl"))}


def test_interrupted_sweep_resumes_without_loss_or_repetition(tmp_path, tiny_hparams,
                                                              monkeypatch):
    reference = run_experiment(tiny_sweep(tmp_path / "reference", tiny_hparams), progress=False)
    assert reference.status["done"] == 3 and reference.waiting == []
    sweep = tiny_sweep(tmp_path / "sweep", tiny_hparams)
    trained = []  # (job directory, epoch) of every epoch that started
    original = training._train_and_evaluate

    def run_epoch(run, batches, lines, done, until):
        trained.append((Path(run.config.out_dir).name, done // run.schedule.steps_per_epoch))
        if len(trained) == 4:  # second epoch of the second job
            raise Killed
        return original(run, batches, lines, done, until)

    monkeypatch.setattr(training, "_train_and_evaluate", run_epoch)
    with pytest.raises(Killed):
        run_experiment(sweep, progress=False)
    jobs, _ = plan(sweep, experiment_tasks(sweep))
    assert [j.status() for j in jobs] == ["done", "incomplete"]  # retrain not enumerable yet
    result = run_experiment(sweep, progress=False)
    assert [len(r.skipped) for r in result.reports] == [1, 0]
    assert [len(r.done) for r in result.reports] == [1, 1]
    finished = [t for i, t in enumerate(trained) if i != 3]  # the killed epoch was redone
    assert len(trained) == 7 and len(set(finished)) == 6 == len(finished)
    assert comparable_records(tmp_path / "sweep") == comparable_records(tmp_path / "reference")
    assert (tmp_path / "sweep" / "table.md").read_text() == (
        tmp_path / "reference" / "table.md").read_text()
    # once everything is done, launching again trains nothing
    again = run_experiment(sweep, progress=False)
    assert [len(r.skipped) for r in again.reports] == [2, 1] and len(trained) == 7


def test_failures_are_recorded_then_retried(tmp_path, tiny_hparams, monkeypatch):
    job = sweep_job(RunConfig(dataset="synthetic", target="d0", hparams=tiny_hparams,
                              dataset_options=OPTIONS), tmp_path)
    assert job.status() == "pending"
    with monkeypatch.context() as patch:
        def broken(config, progress):
            raise ValueError("corrupt file x.wav")

        patch.setattr(jobs_module, "train", broken)
        report = launch([job], progress=False)
    assert report.failed == [job] and job.status() == "failed"
    assert "corrupt file x.wav" in report.failures()
    assert "ValueError: corrupt file x.wav" in (job.path / "failed").read_text()
    report = launch([job], progress=False)
    assert report.done == [job] and job.status() == "done" and not (job.path / "failed").exists()
    with RunDir(job.path).lock():  # a live process holds it: left alone
        (job.path / "done").unlink()
        assert job.status() == "running"
        assert launch([job], progress=False).busy == [job]


def test_submitit_local_launcher(tmp_path, tiny_hparams):
    pytest.importorskip("submitit")
    jobs = [sweep_job(RunConfig(dataset="synthetic", target=t, hparams=tiny_hparams,
                                dataset_options=OPTIONS), tmp_path) for t in ("d0",)]
    options = LauncherOptions(name="submitit-local", timeout_min=5, cpus_per_job=1)
    report = launch(jobs, options, progress=False)
    assert report.done == jobs and all(j.status() == "done" for j in jobs)
    assert any((tmp_path / "submitit").iterdir())
    assert len(launch(jobs, options, progress=False).skipped) == 1


def test_sweep_cli_with_worker_processes(tmp_path, tiny_hparams, capsys):
    args = ["sweep", "--dataset", "synthetic", "--algorithms", "ERM", "--targets", "d0",
            "--trials", "0", "--seeds", "2", "--hparams", json.dumps(tiny_hparams),
            "--dataset-option", "samples_per_domain=60", "--dataset-option", "n_classes=3",
            "--out", str(tmp_path)]
    assert main([*args, "--dry-run"]) == 0
    assert "2 jobs: 2 pending" in capsys.readouterr().out
    assert main([*args, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "jobs: 0 already done, 2 finished now, 0 failed" in out
    assert "| m0+m1+m2 | ERM |" in out and (tmp_path / "table.tex").exists()
    logs = [p.read_text() for p in tmp_path.glob("jobs/*/log.txt")]
    assert len(logs) == 2 and all("epoch 2/2" in log for log in logs)
    assert main([*args, "--dry-run"]) == 0
    assert "2 jobs: 2 done" in capsys.readouterr().out
    assert json.loads((tmp_path / "experiment.json").read_text())["experiment"]["seeds"] == 2


def test_bench_resumes_and_refuses_other_configs_unless_overwrite(tmp_path, tiny_hparams):
    base = RunConfig(dataset="synthetic", hparams=tiny_hparams, dataset_options=OPTIONS)
    bench = ExperimentConfig(base=base, algorithms=["ERM"], out_dir=str(tmp_path), seeds=1,
                             targets=["d0"])
    first = run_experiment(bench, progress=False).tables["rows"]
    run_dir = Path(first[0]["path"])
    assert run_dir == tmp_path / "runs" / "m0+m1+m2" / "ERM" / "d0" / "seed0"
    (run_dir / "done").unlink()  # an interrupted run: resumed, not redone
    rows = run_experiment(bench, progress=False).tables["rows"]
    assert rows[0]["target_acc"] == first[0]["target_acc"]
    changed = dataclasses.replace(bench, base=dataclasses.replace(
        base, hparams={**tiny_hparams, "epochs": 1}))
    with pytest.raises(RunDirConflictError, match=r"hparams.epochs: 2 \(saved\) vs 1"):
        run_experiment(changed, progress=False)  # a finished run is never replaced silently
    assert json.loads((run_dir / "config.json").read_text())["hparams"]["epochs"] == 2
    rows = run_experiment(changed, progress=False, overwrite=True).tables["rows"]
    assert [r["epoch"] for r in rows if r["selection"] == "last"] == [1]
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert Job(RunConfig.from_dict({**saved, "out_dir": str(run_dir)})).finished()


def test_sweep_cli_passes_training_options_to_every_run(tmp_path, tiny_hparams):
    from merdg.cli import build_parser
    from merdg.cli.sweep import experiment_config
    from merdg.experiments.plan import run_config

    args = build_parser().parse_args(["sweep", "--dataset", "synthetic", "--algorithms",
                                      "SimMMDG", "--out", str(tmp_path), "--eval-missing",
                                      "--precision", "bf16", "--holdout-fraction", "0.3"])
    sweep = experiment_config(args)
    task = experiment_tasks(sweep)[0]
    config = run_config(sweep, task, trial=0, seed=1)
    assert (config.evaluations, config.precision, config.holdout_fraction) == (
        {"missing": {}}, "bf16", 0.3)
