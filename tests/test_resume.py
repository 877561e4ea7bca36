"""Resuming a run from its checkpoint: crashes at several points, SIGKILL, config mismatch."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import merdg.run.directory as run_dir
import merdg.run.training as training
import run_outputs
from merdg.algorithms.base import Algorithm
from merdg.cli import main
from merdg.run.checkpoint import CheckpointMismatchError
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir, RunDirBusyError, RunDirConflictError
from merdg.run.records import read_jsonl
from merdg.run.training import train


class Crash(Exception):
    """Stands in for the process dying."""


def config(out, tiny_hparams, tiny_synthetic_options, epochs=4, **kw):
    hparams = {**tiny_hparams, "epochs": epochs, **kw.pop("hparams", {})}
    kw.setdefault("checkpoint_every", 0.0)  # a checkpoint after every epoch
    return RunConfig(dataset="synthetic", target="d2", algorithm="MERDG", hparams=hparams,
                     dataset_options=tiny_synthetic_options, out_dir=str(out), **kw)


def comparable(out: Path):
    """Records, summary rows, saved models and evaluations (:mod:`run_outputs`)."""
    summary = json.loads((out / "summary.json").read_text())
    return (run_outputs.records(out), run_outputs.summary_rows(out), summary["models"],
            run_outputs.evaluations(out))


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

    def append(path, record, **kw):
        if record["epoch"] == epoch:  # after the checkpoint of this epoch, before its record
            raise Crash
        original(path, record, **kw)

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


def test_the_checkpoint_keeps_the_selected_weights(tmp_path, tiny_hparams,
                                                  tiny_synthetic_options, uninterrupted,
                                                  monkeypatch):
    """Interrupted after each epoch in turn, a run resumes with the weights of the epoch
    source validation selected so far (stored in the checkpoint when it is not the checkpoint's
    own epoch), so its model.pt and evaluations are the uninterrupted run's."""
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options)
    for epoch in (2, 3, 4):  # crash before each record after the first; resume up to there
        with monkeypatch.context() as patch:
            crash_in_record_append(epoch, patch)
            with pytest.raises(Crash):
                train(cfg, progress=False)
        saved = RunDir(tmp_path).read_checkpoint({**RunDir(tmp_path).read_info()["identity"]})
        selected = saved["selected"]
        records = json.loads(saved["records"])  # one JSON text in the checkpoint
        best = max(range(epoch), key=lambda k: (records[k]["val"]["acc"], k)) + 1
        assert selected["epoch"] == best  # the epoch select_epoch picks, ties to the later
        assert (selected["state"] is None) == (best == epoch)  # not stored twice
    train(cfg, progress=False)
    assert comparable(tmp_path) == uninterrupted


def test_a_checkpoint_of_an_earlier_version_loses_only_the_unkept_weights(
        tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch, caplog):
    """Checkpoints of merdg before the evaluation stage kept no selected weights: resuming one
    whose selected epoch is not its own says so, and the run's end evaluates its last epoch."""
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options,
                 hparams={"lr": 0.0})  # every epoch ties: the later one is selected
    with monkeypatch.context() as patch:
        crash_in_record_append(3, patch)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    directory = RunDir(tmp_path)
    payload = directory.read_checkpoint(directory.read_info()["identity"])
    del payload["selected"]  # as an earlier version wrote it, records as a list
    payload["records"] = json.loads(payload["records"])
    payload["records"][0]["val"]["acc"] = 2.0  # make epoch 1 the best so far
    directory.write_checkpoint({k: v for k, v in payload.items() if k != "format"})
    with caplog.at_level("WARNING", logger="merdg"):
        summary = train(cfg, progress=False)
    assert "kept no weights of the epoch source validation selects so far (1)" in caplog.text
    assert summary["selection"]["source_val"]["epoch"] == 1
    assert directory.read_model()["epoch"] == 4  # the last epoch's weights, labelled as such
    assert [m["epoch"] for m in summary["models"]] == [4]


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


def test_records_of_another_config_without_a_checkpoint_are_refused(
        tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch):
    """A run stopped before its first checkpoint (checkpoints every 60 s by default) holds
    records but nothing to resume: another config is refused with one line naming the
    difference, the records untouched; --restart discards them."""
    with monkeypatch.context() as patch:
        crash_in_record_append(3, patch)
        with pytest.raises(Crash):
            train(config(tmp_path, tiny_hparams, tiny_synthetic_options,
                         checkpoint_every=3600.0), progress=False)
    assert not (tmp_path / RunDir.CHECKPOINT).exists()
    before = (tmp_path / "records.jsonl").read_bytes()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "records.jsonl")] == [1, 2]
    other = config(tmp_path, tiny_hparams, tiny_synthetic_options, hparams={"lr": 0.5})
    with pytest.raises(RunDirConflictError, match=rf"^{re.escape(str(tmp_path))} holds an "
                       r"unfinished run of another config \(hparams\.lr: the default \(saved\) vs "
                       r"0\.5 \(requested\)\); use another --out, or --overwrite to replace it$"):
        train(other, progress=False)
    assert (tmp_path / "records.jsonl").read_bytes() == before
    train(other, progress=False, resume=False)  # an explicit restart discards them
    assert json.loads((tmp_path / "config.json").read_text())["hparams"]["lr"] == 0.5


def test_finished_run_returns_its_summary(tmp_path, tiny_hparams, tiny_synthetic_options,
                                          monkeypatch):
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options, epochs=1)
    first = train(cfg, progress=False)

    def no_training(*args):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(training, "_train_and_evaluate", no_training)
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


# --- integrity: a damaged checkpoint is never resumed from silently ------------------------

def flip_middle(path: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the middle of ``path`` (bit rot, a bad copy)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    path.write_bytes(bytes(data))


def interrupted_after(epochs_done, out, tiny_hparams, tiny_synthetic_options, monkeypatch):
    """A run of 4 epochs killed during epoch ``epochs_done + 1`` (12 steps per epoch)."""
    cfg = config(out, tiny_hparams, tiny_synthetic_options)
    with monkeypatch.context() as patch:
        crash_in_update_at(12 * epochs_done + 6, patch)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    return cfg


def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_hparams,
                                                           tiny_synthetic_options, uninterrupted,
                                                           monkeypatch, caplog):
    cfg = interrupted_after(2, tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch)
    assert (tmp_path / RunDir.PREVIOUS_CHECKPOINT).exists()
    flip_middle(tmp_path / RunDir.CHECKPOINT)
    with caplog.at_level("WARNING", logger="merdg"):
        train(cfg, progress=False)
    warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "checkpoint.pt: damaged" in warning and "resuming from" in warning
    assert RunDir.PREVIOUS_CHECKPOINT in warning and "(epoch 1)" in warning
    # epoch 2 was trained again from the intact epoch-1 state: the same numbers
    assert comparable(tmp_path) == uninterrupted
    assert (tmp_path / RunDir.DAMAGED_CHECKPOINT).exists()  # kept aside, not resumed from


@pytest.mark.parametrize("damaged", ["only_checkpoint", "both"])
def test_damaged_checkpoint_without_an_intact_one_stops_with_one_line(
        damaged, tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch, capsys):
    epochs_done = 1 if damaged == "only_checkpoint" else 2
    interrupted_after(epochs_done, tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch)
    flip_middle(tmp_path / RunDir.CHECKPOINT)
    if damaged == "both":
        flip_middle(tmp_path / RunDir.PREVIOUS_CHECKPOINT)
    records_before = (tmp_path / RunDir.RECORDS).read_text()
    args = ["train", "--dataset", "synthetic", "--target", "d2", "--algorithm", "MERDG",
            "--hparams", json.dumps({**tiny_hparams, "epochs": 4}), "--out", str(tmp_path),
            *[x for k, v in tiny_synthetic_options.items() for x in ("--dataset-option",
                                                                      f"{k}={v}")]]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"merdg train: error: {tmp_path / RunDir.CHECKPOINT}: damaged")
    assert "--restart" in err[0] and f"delete {tmp_path / RunDir.CHECKPOINT}" in err[0]
    assert (tmp_path / RunDir.RECORDS).read_text() == records_before  # nothing was changed
    assert main([*args, "--restart"]) == 0
    assert [r["epoch"] for r in read_jsonl(tmp_path / RunDir.RECORDS)] == [1, 2, 3, 4]


@pytest.mark.parametrize("kill_at", ["digest_file", "rename_to_previous", "rename_into_place"])
def test_kill_at_each_step_of_a_checkpoint_write(kill_at, tmp_path, tiny_hparams,
                                                 tiny_synthetic_options, uninterrupted,
                                                 monkeypatch):
    """RunDir.write_checkpoint: tmp file, digest file, checkpoint.pt -> previous, tmp ->
    checkpoint.pt. Killed at each step of the third write, the run resumes from a verified
    checkpoint and ends like an uninterrupted one."""
    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options)
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        src, dst = Path(src), Path(dst)
        hit = {"digest_file": dst.name == RunDir.CHECKPOINT_DIGESTS,
               "rename_to_previous": dst.name == RunDir.PREVIOUS_CHECKPOINT,
               "rename_into_place": dst.name == RunDir.CHECKPOINT}[kill_at]
        if hit and dst.parent == tmp_path:
            calls["n"] += 1
            # the third checkpoint write (epoch 3); rename_to_previous first happens at epoch 2
            if calls["n"] == (2 if kill_at == "rename_to_previous" else 3):
                raise Crash
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(Crash):
            train(cfg, progress=False)
    assert len(list(read_jsonl(tmp_path / RunDir.RECORDS))) == 2
    if kill_at == "rename_into_place":
        assert not (tmp_path / RunDir.CHECKPOINT).exists()  # only the previous one is left
    train(cfg, progress=False)
    assert comparable(tmp_path) == uninterrupted
    leftovers = {RunDir.CHECKPOINT, RunDir.PREVIOUS_CHECKPOINT, RunDir.CHECKPOINT_DIGESTS}
    assert not leftovers & {p.name for p in tmp_path.iterdir()}


class DiskFull:
    """A file whose writes fail with ENOSPC once ``limit`` bytes were written."""

    def __init__(self, file, limit):
        self.file, self.left = file, limit

    def write(self, data):
        size = len(data) if isinstance(data, str) else len(memoryview(data))
        if size > self.left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= size
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_full_disk_while_checkpointing_names_the_file(tmp_path, tiny_hparams,
                                                      tiny_synthetic_options, uninterrupted,
                                                      monkeypatch, capsys):
    import merdg.run.checkpoint as checkpoint_module

    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options)
    writes = {"n": 0}

    def full_open(path, mode="r", *args, **kw):
        file = open(path, mode, *args, **kw)
        if "w" in mode:
            writes["n"] += 1
            if writes["n"] == 3:  # the checkpoint of epoch 3
                return DiskFull(file, 4096)
        return file

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "open", full_open, raising=False)
        with pytest.raises(OSError) as raised:
            train(cfg, progress=False)
    message = str(raised.value)
    checkpoint = tmp_path / RunDir.CHECKPOINT
    assert message == (f"cannot write {checkpoint}: the disk is full (No space left on device); "
                       f"the last checkpoint {checkpoint} is intact: free some space and "
                       "run the same command to resume")
    assert not (tmp_path / (RunDir.CHECKPOINT + ".tmp")).exists()  # its space is given back
    assert RunDir(tmp_path).read_checkpoint(run_identity(tmp_path))["epoch"] == 2
    train(cfg, progress=False)
    assert comparable(tmp_path) == uninterrupted


def run_identity(out: Path):
    return json.loads((out / RunDir.CONFIG).read_text())["identity"]


@pytest.mark.parametrize("file", ["records", "summary"])
def test_full_disk_while_writing_records_or_summary(file, tmp_path, tiny_hparams,
                                                    tiny_synthetic_options, uninterrupted,
                                                    monkeypatch):
    import merdg.run.records as records_module

    cfg = config(tmp_path, tiny_hparams, tiny_synthetic_options)
    target = {"records": RunDir.RECORDS, "summary": RunDir.SUMMARY + ".tmp"}[file]
    seen = {"n": 0}

    def full_open(path, mode="r", *args, **kw):
        handle = open(path, mode, *args, **kw)
        if Path(path).name == target and mode in ("a", "w"):
            seen["n"] += 1
            if file == "summary" or seen["n"] == 3:
                return DiskFull(handle, 10)
        return handle

    with monkeypatch.context() as patch:
        patch.setattr(records_module, "open", full_open, raising=False)
        with pytest.raises(OSError, match=r"^cannot write .*: the disk is full \(No space left "
                           r"on device\); the last checkpoint .* is intact"):
            train(cfg, progress=False)
    assert not (tmp_path / RunDir.DONE).exists()
    train(cfg, progress=False)
    assert comparable(tmp_path) == uninterrupted


def test_unreadable_digest_file_stops_and_says_how_to_resume_unverified(
        tmp_path, tiny_hparams, tiny_synthetic_options, uninterrupted, monkeypatch, caplog):
    cfg = interrupted_after(2, tmp_path, tiny_hparams, tiny_synthetic_options, monkeypatch)
    digests = tmp_path / RunDir.CHECKPOINT_DIGESTS
    digests.write_text(digests.read_text()[:20])
    with pytest.raises(ValueError) as raised:
        train(cfg, progress=False)
    assert str(raised.value).startswith(f"{digests}: unreadable or truncated JSON")
    assert f"delete {digests} to resume from {tmp_path / RunDir.CHECKPOINT} unverified" in str(
        raised.value)
    digests.unlink()
    with caplog.at_level("WARNING", logger="merdg"):
        train(cfg, progress=False)
    assert any("no recorded sha256" in r.getMessage() for r in caplog.records)
    assert comparable(tmp_path) == uninterrupted
