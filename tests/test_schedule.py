"""A run's schedule: epochs or a step budget, evaluation every K steps, exact resume in the
middle of an epoch, checkpoints every N seconds, plain progress lines and log.txt."""

import json
import re

import pytest

import merdg.run.directory as run_dir
import merdg.run.training as training
import run_outputs
from merdg.algorithms.base import Algorithm
from merdg.cli import main
from merdg.datasets.samplers import BalancedDomainBatchSampler
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.hparams import resolve_run_hparams
from merdg.run.records import read_jsonl
from merdg.run.schedule import Schedule
from merdg.run.training import train


class Crash(Exception):
    """Stands in for the process dying."""


def config(out, tiny_hparams, tiny_synthetic_options, **kw):
    hparams = {**tiny_hparams, **kw.pop("hparams", {})}
    return RunConfig(dataset="synthetic", target="d2", algorithm="MERDG", hparams=hparams,
                     dataset_options=tiny_synthetic_options, out_dir=str(out), **kw)


def test_schedule_of_epochs_budgets_and_evaluation_periods():
    by_epoch = Schedule.of({"epochs": 3}, 10)
    assert (by_epoch.total_steps, by_epoch.eval_every) == (30, 10)
    assert by_epoch.evaluation_steps() == [10, 20, 30] and by_epoch.epochs == 3
    budget = Schedule.of({"epochs": 3, "steps": 25}, 10)  # the budget replaces epochs
    assert budget.evaluation_steps() == [10, 20, 25] and budget.epochs == 3
    periodic = Schedule.of({"epochs": 3, "steps": 25, "eval_every": 7}, 10)
    assert periodic.evaluation_steps() == [7, 14, 21, 25]
    assert Schedule.of({"epochs": 2, "eval_every": 20}, 10).evaluation_steps() == [20]
    assert periodic.position(0) == (0, 0) and periodic.position(13) == (1, 3)
    assert periodic.describe() == ("25 steps (2.5 epochs of 10), evaluated every 7 steps "
                                   "(4 records)")
    assert by_epoch.describe() == ("30 steps (3 epochs of 10), evaluated after every epoch "
                                   "(3 records)")


def test_the_sampler_starts_an_epoch_at_any_batch():
    sampler = BalancedDomainBatchSampler([20, 30], 4, seed=3)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start=3)
    assert list(sampler) == whole[3:] and len(sampler) == len(whole) == 10
    with pytest.raises(ValueError, match="start batch 11 is outside an epoch of 10 batches"):
        sampler.set_epoch(2, start=11)


def test_step_hparams_are_resolved_only_when_set_and_exclude_epochs(tiny_hparams,
                                                                    tiny_synthetic_options):
    from merdg.datasets import build_dataset

    dataset = build_dataset("synthetic", **tiny_synthetic_options)
    plain = resolve_run_hparams(config(None, tiny_hparams, tiny_synthetic_options), dataset)
    assert "steps" not in plain and "eval_every" not in plain  # other runs' hparams unchanged
    hparams = {k: v for k, v in tiny_hparams.items() if k != "epochs"}
    resolved = resolve_run_hparams(RunConfig(
        dataset="synthetic", target="d2", hparams={**hparams, "steps": 30, "eval_every": 9},
        dataset_options=tiny_synthetic_options), dataset)
    assert (resolved["steps"], resolved["eval_every"]) == (30, 9)
    with pytest.raises(ValueError, match="hparams epochs = 2 and steps = 30 .* set one"):
        resolve_run_hparams(config(None, tiny_hparams, tiny_synthetic_options,
                                   hparams={"steps": 30}), dataset)
    with pytest.raises(ValueError, match="eval_every"):
        resolve_run_hparams(RunConfig(dataset="synthetic", target="d2",
                                      hparams={**hparams, "eval_every": -1},
                                      dataset_options=tiny_synthetic_options), dataset)


def budget_config(out, tiny_hparams, tiny_synthetic_options, **kw):
    """30 steps of 12 samples (an epoch is 12 steps), evaluated every 9: records at steps 9,
    18, 27 and 30, so evaluations fall in the middle of epochs."""
    hparams = {k: v for k, v in tiny_hparams.items() if k != "epochs"}
    return RunConfig(dataset="synthetic", target="d2", algorithm="MERDG",
                     hparams={**hparams, "steps": 30, "eval_every": 9},
                     dataset_options=tiny_synthetic_options, out_dir=str(out), **kw)


def test_a_step_budget_records_every_evaluation(tmp_path, tiny_hparams, tiny_synthetic_options):
    summary = train(budget_config(tmp_path, tiny_hparams, tiny_synthetic_options),
                    progress=False)
    records = list(read_jsonl(tmp_path / RunDir.RECORDS))
    assert [(r["epoch"], r["steps"]) for r in records] == [(1, 9), (2, 18), (3, 27), (4, 30)]
    best = max(records, key=lambda r: (r["val"]["acc"], r["epoch"]))
    assert summary["selection"]["source_val"]["epoch"] == best["epoch"]
    assert summary["selection"]["last"]["epoch"] == 4


@pytest.mark.parametrize("crash_at_step", [14, 19])  # inside the 2nd epoch, before/after eval 2
def test_a_run_resumed_in_the_middle_of_an_epoch_equals_an_uninterrupted_one(
        crash_at_step, tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch):
    reference = tmp_path / "reference"
    train(budget_config(reference, tiny_hparams, tiny_synthetic_options), progress=False)
    out = tmp_path / "resumed"
    cfg = budget_config(out, tiny_hparams, tiny_synthetic_options, checkpoint_every=0.0)
    calls = {"n": 0}
    original = Algorithm.update

    def update(self, batch):
        calls["n"] += 1
        if calls["n"] == crash_at_step:
            raise Crash
        return original(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(Algorithm, "update", update)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    checkpoint = RunDir(out).read_checkpoint(RunDir(out).read_info()["identity"])
    assert checkpoint["steps"] == (9 if crash_at_step < 19 else 18)  # evaluations 1 or 2
    train(cfg, progress=False)
    assert run_outputs.records(out) == run_outputs.records(reference)
    assert run_outputs.summary_rows(out) == run_outputs.summary_rows(reference)
    assert run_outputs.evaluations(out) == run_outputs.evaluations(reference)


def test_checkpoints_are_written_when_checkpoint_every_seconds_have_passed(
        tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch):
    """A clock that advances 25 s per evaluation and a checkpoint every 60 s: checkpoints after
    evaluations 3 and 6 of 8; every record is written as it comes."""
    clock = {"now": 0.0}
    real = training._train_and_evaluate

    def evaluation_of_25_seconds(*args):
        clock["now"] += 25.0
        return real(*args)

    written = []
    original = RunDir.write_checkpoint

    def write_checkpoint(self, payload):
        written.append(payload["epoch"])
        original(self, payload)

    monkeypatch.setattr(training, "_clock", lambda: clock["now"])
    monkeypatch.setattr(training, "_train_and_evaluate", evaluation_of_25_seconds)
    monkeypatch.setattr(RunDir, "write_checkpoint", write_checkpoint)
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options, hparams={"epochs": 8},
                 checkpoint_every=60.0)
    train(cfg, progress=False)
    assert written == [3, 6]
    assert [r["epoch"] for r in read_jsonl(tmp_path / RunDir.RECORDS)] == list(range(1, 9))


def test_without_a_checkpoint_a_killed_run_starts_over(tmp_path, tiny_hparams,
                                                       tiny_synthetic_options, monkeypatch):
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options, hparams={"epochs": 3},
                 checkpoint_every=3600.0)
    original = run_dir.append_jsonl

    def append(path, record, **kw):
        original(path, record, **kw)
        if record["epoch"] == 2:
            raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(run_dir, "append_jsonl", append)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    assert not (tmp_path / RunDir.CHECKPOINT).exists()
    assert [r["epoch"] for r in read_jsonl(tmp_path / RunDir.RECORDS)] == [1, 2]
    trained = []
    real = training._train_and_evaluate

    def counted(run, batches, lines, done, until):
        trained.append(until)
        return real(run, batches, lines, done, until)

    monkeypatch.setattr(training, "_train_and_evaluate", counted)
    train(cfg, progress=False)
    assert len(trained) == 3  # from the start
    assert [r["epoch"] for r in read_jsonl(tmp_path / RunDir.RECORDS)] == [1, 2, 3]


def test_merdg_train_writes_plain_progress_lines_to_log_txt(tmp_path, tiny_hparams,
                                                           tiny_synthetic_options, capsys):
    out = tmp_path / "run"
    hparams = {k: v for k, v in tiny_hparams.items() if k != "epochs"}
    args = ["train", "--dataset", "synthetic", "--target", "d2", "--hparams",
            json.dumps({**hparams, "steps": 20, "eval_every": 10}), "--log-every", "4",
            "--out", str(out)]
    for key, value in tiny_synthetic_options.items():
        args += ["--dataset-option", f"{key}={value}"]
    assert main(args) == 0
    lines = (out / RunDir.LOG).read_text().splitlines()
    steps = [line for line in lines if " step " in f" {line.split(' ', 2)[2]}"]
    assert [line.split(" ", 3)[2:3] for line in steps] == [["step"]] * 4  # 4, 8, 12, 16
    assert "step 4/20 (epoch 1, batch 4/12): ce " in steps[0]
    assert steps[0].endswith("samples/s")
    assert any("evaluation 2/2 (step 20/20): ce " in line for line in lines)
    assert any("20 steps (1.66667 epochs of 12), evaluated every 10 steps (2 records)" in line
               for line in lines)
    assert "\r" not in (out / RunDir.LOG).read_text()  # no progress-bar frames
    err = capsys.readouterr().err
    assert "step 8/20" in err and "\r" not in err  # not a terminal: no bar either
    # and, read later from a file, every progress line says when it was written
    progress = [line for line in err.splitlines() if " step " in line or " evaluation " in line]
    assert len(progress) == 6 and all(
        re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (step|evaluation) ", line)
        for line in progress), err


def test_progress_lines_on_a_terminal_carry_no_timestamp(monkeypatch):
    import io
    import logging
    import sys

    from merdg.cli.options import _PlainFormatter

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def line(level):
        record = logging.LogRecord("merdg", level, "x.py", 1, "epoch 1/2: ce 0.5", None, None)
        return _PlainFormatter().format(record)

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert line(logging.INFO) == "epoch 1/2: ce 0.5"
    assert line(logging.WARNING) == "warning: epoch 1/2: ce 0.5"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d epoch 1/2: ce 0\.5", line(logging.INFO))
    assert line(logging.WARNING) == "warning: epoch 1/2: ce 0.5"
