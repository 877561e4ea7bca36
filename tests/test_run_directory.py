"""RunDir: the status of a run directory, and what train does with each (nothing finished or
foreign is ever replaced without --overwrite)."""

import dataclasses
import json
import os

import pytest

from merdg.cli import main
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir, RunDirConflictError
from merdg.run.training import train

TINY = {"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
OPTIONS = {"samples_per_domain": 40, "n_classes": 3}


def config(out, **kw) -> RunConfig:
    return RunConfig(dataset="synthetic", target="d1", hparams=dict(TINY),
                     dataset_options=OPTIONS, out_dir=str(out), **kw)


def test_statuses(tmp_path):
    cfg = config(tmp_path / "run")
    run_dir = RunDir(cfg.out_dir)
    assert run_dir.status(cfg) == "absent"
    train(cfg, progress=False)
    assert run_dir.status(cfg) == "finished"
    other = dataclasses.replace(cfg, seed=4)
    assert run_dir.status(other) == "foreign"
    assert run_dir.differences(other) == ["seed: 0 (saved, the default) vs 4 (requested)"]
    (run_dir.path / RunDir.DONE).unlink()
    assert run_dir.status(cfg) == "incomplete"
    run_dir.mark_failed("ValueError: boom\n\ntraceback")
    assert run_dir.status(cfg) == "failed" and run_dir.failure() == "ValueError: boom"
    with run_dir.lock():
        assert run_dir.status(cfg) == "running"
    stray = RunDir(tmp_path / "stray")
    stray.path.mkdir()
    (stray.path / RunDir.RECORDS).write_text("{}\n")
    assert stray.status(cfg) == "foreign"  # run files without a merdg config.json
    only_failed = RunDir(tmp_path / "setup_failed")
    only_failed.mark_failed("KeyError: 'x'")
    assert only_failed.status(cfg) == "failed"  # a job that failed before writing anything


def test_finished_run_of_another_config_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    train(config(out), progress=False)
    before = (out / RunDir.RECORDS).read_text()
    capsys.readouterr()  # the epoch lines the run logged (to stderr once a command set it up)
    args = ["train", "--dataset", "synthetic", "--target", "d1", "--hparams",
            json.dumps({**TINY, "lr": 0.01}), "--dataset-option", "samples_per_domain=40",
            "--dataset-option", "n_classes=3", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "finished run of another config" in err[0]
    assert "hparams.lr: the default (saved) vs 0.01 (requested)" in err[0]
    assert (out / RunDir.RECORDS).read_text() == before and (out / RunDir.DONE).exists()
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((out / RunDir.CONFIG).read_text())["hparams"]["lr"] == 0.01


def test_files_merdg_did_not_write_are_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / RunDir.CONFIG).write_text('{"my": "settings"}')
    (out / RunDir.RECORDS).write_text("my data\n")
    with pytest.raises(RunDirConflictError, match="not a merdg run directory"):
        train(config(out), progress=False)
    assert (out / RunDir.CONFIG).read_text() == '{"my": "settings"}'
    assert (out / RunDir.RECORDS).read_text() == "my data\n"


def test_restart_does_not_replace_a_finished_run(tmp_path):
    cfg = config(tmp_path / "run")
    train(cfg, progress=False)
    with pytest.raises(RunDirConflictError, match="--restart only restarts unfinished runs"):
        train(cfg, progress=False, resume=False)
    train(cfg, progress=False, resume=False, overwrite=True)


def test_unwritable_or_blocked_out_fails_before_the_data_is_loaded(tmp_path, capsys,
                                                                   monkeypatch):
    import merdg.run.training as training

    def no_setup(*args):
        raise AssertionError("the dataset was built before the output was checked")

    monkeypatch.setattr(training, "_setup_run", no_setup)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    base = ["train", "--dataset", "synthetic", "--target", "d1"]
    assert main([*base, "--out", str(blocker / "run")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main([*base, "--out", str(locked / "run")]) == 2
        assert "is not writable" in capsys.readouterr().err
