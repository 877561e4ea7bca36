"""Resuming a run from its checkpoint: crashes at several points, SIGKILL, config mismatch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import merdg.run.directory as run_dir
import merdg.run.training as training
from merdg.algorithms.base import Algorithm
from merdg.run.checkpoint import CheckpointMismatchError
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir, RunDirBusyError
from merdg.run.records import read_jsonl
from merdg.run.training import train


class Crash(Exception):
    """Stands in for the process dying."""


def config(out, tiny_hparams, tiny_synthetic_options, epochs=4, **kw):
    hparams = {**tiny_hparams, "epochs": epochs, **kw.pop("hparams", {})}
    return RunConfig(dataset="synthetic", target="d2", algorithm="MERDG", hparams=hparams,
                     dataset_options=tiny_synthetic_options, out_dir=str(out), **kw)


def comparable(out: Path):
    """Records and summary without wall times and the run block (it names the directory)."""
    records = [{k: v for k, v in r.items() if k not in ("time_s", "run")}
               for r in read_jsonl(out / "records.jsonl")]
    summary = json.loads((out / "summary.json").read_text())
    return records, summary["selection"]


@pytest.fixture
def uninterrupted(tmp_path_factory, tiny_hparams, tiny_synthetic_options):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(config(out, tiny_hparams, tiny_synthetic_options), progress=False)
    return comparable(out)


def crash_in_update_at(step, monkeypatch):
    calls = {"n": 0}
    original = Algorithm.update

    def update(self, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise Crash
        return original(self, batch)

    monkeypatch.setattr(Algorithm, "update", update)


def crash_in_record_append(epoch, monkeypatch):
    original = run_dir.append_jsonl

    def append(path, record):
        if record["epoch"] == epoch:  # after the checkpoint of this epoch, before its record
            raise Crash
        original(path, record)

    monkeypatch.setattr(run_dir, "append_jsonl", append)


@pytest.mark.parametrize("where", ["mid_epoch", "after_checkpoint"])
def test_resumed_run_equals_uninterrupted(where, tmp_path, tiny_hparams, tiny_synthetic_options,
                                          uninterrupted, monkeypatch):
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options)
    with monkeypatch.context() as patch:
        if where == "mid_epoch":
            crash_in_update_at(30, patch)  # 12 steps per epoch: during epoch 3
        else:
            crash_in_record_append(2, patch)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    assert len(list(read_jsonl(tmp_path / "records.jsonl"))) == (2 if where == "mid_epoch" else 1)
    # debris a kill can leave: half a record line and half a checkpoint
    with open(tmp_path / "records.jsonl", "a") as f:
        f.write('{"epoch": 3, "trai')
    (tmp_path / (RunDir.CHECKPOINT + ".tmp")).write_bytes(b"\x80partial")
    train(cfg, progress=False)
    assert comparable(tmp_path) == uninterrupted
    assert (tmp_path / "done").exists() and not (tmp_path / RunDir.CHECKPOINT).exists()


def test_checkpoint_of_another_config_is_refused(tmp_path, tiny_hparams, tiny_synthetic_options,
                                                 monkeypatch):
    with monkeypatch.context() as patch:
        crash_in_record_append(2, patch)
        with pytest.raises(Crash):
            train(config(tmp_path, tiny_hparams, tiny_synthetic_options), progress=False)
    other = config(tmp_path, tiny_hparams, tiny_synthetic_options, hparams={"lr": 0.5})
    with pytest.raises(CheckpointMismatchError, match=r"hparams\.lr: 0\.001 .* vs 0\.5"):
        train(other, progress=False)
    train(other, progress=False, resume=False)  # an explicit restart discards it
    assert [r["epoch"] for r in read_jsonl(tmp_path / "records.jsonl")] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "config.json").read_text())["hparams"]["lr"] == 0.5


def test_finished_run_returns_its_summary(tmp_path, tiny_hparams, tiny_synthetic_options,
                                          monkeypatch):
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options, epochs=1)
    first = train(cfg, progress=False)

    def no_training(*args):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(training, "_run_epoch", no_training)
    assert train(cfg, progress=False) == json.loads(json.dumps(first))


def test_busy_run_directory_is_refused(tmp_path, tiny_hparams, tiny_synthetic_options):
    with RunDir(tmp_path).lock(), pytest.raises(RunDirBusyError, match="another process"):
        train(config(tmp_path, tiny_hparams, tiny_synthetic_options), progress=False)


def test_sigkill_then_same_command_ends_like_uninterrupted(tmp_path, tiny_hparams,
                                                           tiny_synthetic_options):
    hparams = {**tiny_hparams, "epochs": 6}
    reference = tmp_path / "reference"
    train(RunConfig(dataset="synthetic", target="d1", algorithm="MERDG", hparams=hparams,
                    dataset_options={"samples_per_domain": 100, "n_classes": 3},
                    out_dir=str(reference)), progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "merdg.cli", "train", "--dataset", "synthetic", "--target", "d1",
           "--algorithm", "MERDG", "--hparams", json.dumps(hparams), "--out", str(out),
           "--dataset-option", "samples_per_domain=100", "--dataset-option", "n_classes=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(training.__file__).parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        records = out / "records.jsonl"
        if records.exists() and len(records.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = len((out / "records.jsonl").read_text().splitlines())
    assert 3 <= killed_after < 6 and not (out / "done").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    assert comparable(out) == comparable(reference)
