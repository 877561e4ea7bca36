"""RunDir method by method, without training (a run is started from its config alone): what each
file means, every status, the one-line errors, and what each write leaves behind."""

import dataclasses
import json
import logging
import os

import pytest
import torch

from merdg.run.checkpoint import CheckpointDamagedError, CheckpointMismatchError
from merdg.run.config import RunConfig
from merdg.run.directory import STATUSES, RunDir, RunDirBusyError
from merdg.run.records import WriteFailedError

IDENTITY = {"config": {"algorithm": "ERM"}, "hparams": {"lr": 0.1}}


def model(state, epoch=4, rule="source_val"):
    """A model to save with the run (RunDir.finish)."""
    from merdg.run.checkpoint import state_digest

    return {"rule": rule, "epoch": epoch, "state": state, "digest": state_digest(state)}


def config(tmp_path, **kw):
    return RunConfig(dataset="synthetic", target="d1", out_dir=str(tmp_path / "run"), **kw)


def started(tmp_path, **kw):
    cfg = config(tmp_path, **kw)
    run = RunDir(cfg.out_dir)
    run.start({"config": cfg.to_dict(), "note": "started"})
    return cfg, run


def test_file_names_and_paths(tmp_path):
    run = RunDir(tmp_path / "r")
    assert repr(run) == f"RunDir({str(tmp_path / 'r')!r})"
    assert run.file(RunDir.SUMMARY) == tmp_path / "r" / "summary.json"
    assert (run.checkpoint_file, run.pretraining_file, run.model_file, run.records_file,
            run.log_file, run.tensorboard_dir) == tuple(
        tmp_path / "r" / n for n in ("checkpoint.pt", "pretraining.pt", "model.pt",
                                     "records.jsonl", "log.txt", "tensorboard"))
    assert STATUSES == ("absent", "running", "foreign", "finished", "failed", "incomplete")


def test_every_status_of_one_config(tmp_path):
    cfg, run = started(tmp_path)
    assert run.status(cfg) == "incomplete" and not run.finished(cfg)
    assert run.status(dataclasses.replace(cfg, seed=3)) == "foreign"
    assert run.differences(dataclasses.replace(cfg, seed=3)) == [
        "seed: 0 (saved, the default) vs 3 (requested)"]
    assert run.differences(cfg) == []
    run.mark_failed("ValueError: boom\nmore")
    assert run.status(cfg) == "failed" and run.failure() == "ValueError: boom"
    run.clear_failed()
    assert run.failure() == "" and run.status(cfg) == "incomplete"
    run.finish({"selection": {}, "epochs": 0})
    assert run.status(cfg) == "finished" and run.finished(cfg) and run.has_finished_run()
    with run.lock():
        assert run.status(cfg) == "running" and run.is_locked()
    assert not run.is_locked()
    absent = RunDir(tmp_path / "nothing")
    assert absent.status(cfg) == "absent" and not absent.has_run_files()
    assert not absent.is_locked() and not absent.has_finished_run()


def test_run_files_without_a_config_are_foreign_except_a_failure(tmp_path):
    cfg = config(tmp_path)
    run = RunDir(cfg.out_dir)
    run.mark_failed("KeyError: 'x'")
    assert run.status(cfg) == "failed" and run.has_run_files()
    for name in (RunDir.RECORDS, RunDir.DONE, RunDir.MODEL):
        (run.path / name).write_text("x")
        assert run.status(cfg) == "foreign", name
        (run.path / name).unlink()
    assert run.differences(cfg) == ["(no merdg config.json)"] and run.saved_config() is None


def test_reading_the_run_files(tmp_path):
    cfg, run = started(tmp_path)
    assert run.read_info()["note"] == "started" and run.saved_config() == cfg.to_dict()
    assert run.read_records() == []
    run.append_record({"epoch": 1})
    run.append_record({"epoch": 2})
    assert run.read_records() == [{"epoch": 1}, {"epoch": 2}]
    run.rewrite_records([{"epoch": 1}])
    assert run.read_records() == [{"epoch": 1}]
    run.update_info({"config": cfg.to_dict(), "note": "updated"})
    assert run.read_info()["note"] == "updated"


def test_unreadable_run_files_are_one_line_errors(tmp_path):
    run = RunDir(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match=r"config\.json not found: .* is not a merdg run "
                       r"directory$"):
        run.read_info()
    run.path.mkdir()
    (run.path / RunDir.CONFIG).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json is not a merdg run's config\.json \(no "
                       r"'config' entry\)$"):
        run.read_info()
    (run.path / RunDir.CONFIG).write_text('{"config": 3}')
    with pytest.raises(ValueError, match=r"no 'config' entry"):
        run.read_info()
    (run.path / RunDir.CONFIG).write_text('{"config": ')
    with pytest.raises(ValueError, match=r"config\.json: unreadable or truncated JSON \(.*\); "
                       r"merdg writes its run files whole, so it was damaged or edited since: "
                       r"restore it, or replace the run \(merdg train \.\.\. --overwrite\)$"):
        run.read_info()
    (run.path / RunDir.SUMMARY).write_text('{"epochs": 1}')
    with pytest.raises(ValueError, match=r"summary\.json is not a merdg summary \(no "
                       r"'selection' entry\); rerun with --overwrite to train it again$"):
        run.read_summary()
    (run.path / RunDir.SUMMARY).write_text('[]')
    with pytest.raises(ValueError, match=r"not a merdg summary"):
        run.read_summary()
    (run.path / RunDir.SUMMARY).write_text('{"selection": {"last": {}}}')
    assert run.read_summary() == {"selection": {"last": {}}}


def test_conflict_messages_say_what_the_directory_holds(tmp_path):
    cfg, run = started(tmp_path)
    other = dataclasses.replace(cfg, seed=3)
    assert run.conflict_message(other) == (
        f"{run.path} holds a unfinished run of another config (seed: 0 (saved, the default) vs "
        "3 (requested)); use another --out, or --overwrite to replace it")
    (run.path / RunDir.DONE).write_text("done\n")
    assert " holds a finished run of another config (" in run.conflict_message(other)
    many = dataclasses.replace(cfg, seed=3, target="d2", algorithm="MERDG", holdout_fraction=0.3,
                               split_seed=5, hparams={"lr": 0.5, "epochs": 3})
    assert len(run.differences(many)) == 6
    message = run.conflict_message(many)
    assert message.count(" vs ") == 5 and "(+1 more)" in message
    mine = RunDir(tmp_path / "mine")
    mine.path.mkdir()
    (mine.path / RunDir.RECORDS).write_text("x\n")
    assert mine.conflict_message(cfg) == (
        f"{mine.path} is not a merdg run directory of this config but holds records.jsonl; use "
        "another --out, or --overwrite to replace them")
    (mine.path / RunDir.CONFIG).write_text('{"my": 1}')
    assert mine.conflict_message(cfg).startswith(
        f"{mine.path} is not a merdg run directory of this config but holds config.json, "
        f"records.jsonl ({mine.path / RunDir.CONFIG} is not a merdg run's config.json")


def test_check_writable_names_the_blocking_path(tmp_path):
    RunDir(tmp_path / "a" / "b").check_writable()  # missing folders are fine
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"^cannot write the run to {blocker}/run/x: "
                       rf"{blocker} is a file, not a directory$"):
        RunDir(blocker / "run" / "x").check_writable()


def test_check_writable_refuses_a_read_only_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=rf"^cannot write the run to {tmp_path}/run: "
                       rf"{tmp_path} is not writable$"):
        RunDir(tmp_path / "run").check_writable()


def test_reset_removes_run_files_and_nothing_else(tmp_path):
    cfg, run = started(tmp_path)
    for name in (*RunDir.RUN_FILES, *RunDir.TEMPORARY_FILES, "mine.txt", RunDir.JOB):
        (run.path / name).write_text("x")
    run.reset()
    assert sorted(p.name for p in run.path.iterdir()) == [RunDir.JOB, "mine.txt"]


def test_start_clears_an_earlier_attempt_but_may_keep_pretraining(tmp_path):
    cfg, run = started(tmp_path)
    names = [RunDir.RECORDS, RunDir.SUMMARY, RunDir.DONE, RunDir.FAILED, *RunDir.CHECKPOINT_FILES,
             RunDir.DAMAGED_CHECKPOINT, RunDir.MODEL, RunDir.MODEL_DIGEST]
    keep = [RunDir.PRETRAINING, RunDir.PRETRAINING_DIGEST, RunDir.JOB, RunDir.LOG]
    for name in names + keep:
        (run.path / name).write_text("x")
    run.start({"config": cfg.to_dict()}, keep_pretraining=True)
    assert sorted(p.name for p in run.path.iterdir()) == sorted(keep + [RunDir.CONFIG])
    run.start({"config": cfg.to_dict()})
    assert sorted(p.name for p in run.path.iterdir()) == sorted(
        [RunDir.JOB, RunDir.LOG, RunDir.CONFIG])


def test_a_second_writer_is_refused_and_a_lock_failure_warns(tmp_path, monkeypatch):
    import merdg.run.directory as directory

    run = RunDir(tmp_path / "r")
    with run.lock():
        with pytest.raises(RunDirBusyError, match=r"is being written by another process; wait "
                           r"for it to finish or use another output directory$"):
            with RunDir(tmp_path / "r").lock():
                pass
    assert (run.path / RunDir.LOCK).exists()

    class NoFlock:
        LOCK_EX, LOCK_NB, LOCK_UN = 2, 4, 8

        @staticmethod
        def flock(fd, op):
            raise OSError(38, "Function not implemented")

    monkeypatch.setattr(directory, "fcntl", NoFlock)
    with pytest.warns(UserWarning, match=r"cannot lock .* \(\[Errno 38\] Function not "
                      r"implemented\); two processes writing this run directory at once would "
                      r"not be detected"):
        with run.lock():
            pass
    assert not run.is_locked()  # a lock that cannot be taken is not held by anyone
    monkeypatch.setattr(directory, "fcntl", None)  # not POSIX
    with run.lock():
        assert not run.is_locked()


def test_finished_runs_under_a_root(tmp_path):
    for name, files in [("a", ["done", "records.jsonl"]), ("b/c", ["done", "records.jsonl"]),
                        ("d", ["records.jsonl"]), ("e", ["done"])]:
        for f in files:
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / name / f).write_text("x")
    (tmp_path / "f" / "done").mkdir(parents=True)  # a folder called done
    (tmp_path / "f" / "records.jsonl").write_text("x")
    assert [r.path for r in RunDir.finished_under(tmp_path)] == [tmp_path / "a",
                                                                 tmp_path / "b" / "c"]


def test_jobs_and_failures(tmp_path):
    run = RunDir(tmp_path / "job")
    with pytest.raises(FileNotFoundError, match=r"job\.json not found: .* is not a prepared merdg "
                       r"job directory$"):
        run.read_job()
    run.write_job({"command": ["train"]})
    assert run.read_job() == {"command": ["train"]}
    run.mark_failed("no newline")
    assert (run.path / RunDir.FAILED).read_text() == "no newline\n"
    run.mark_failed("with newline\n")
    assert (run.path / RunDir.FAILED).read_text() == "with newline\n"
    assert not (run.path / (RunDir.FAILED + ".tmp")).exists()
    (run.path / RunDir.FAILED).write_text("")
    assert run.failure() == ""


# --- checkpoints, the model and the pretraining state ----------------------------------------

def payload(epoch):
    return {"identity": IDENTITY, "epoch": epoch, "w": torch.full((2,), float(epoch))}


def test_checkpoints_keep_two_verified_generations(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert run.resume_checkpoint(IDENTITY) is None
    for epoch in (1, 2, 3, 4):
        run.write_checkpoint(payload(epoch))
    digests = json.loads((run.path / RunDir.CHECKPOINT_DIGESTS).read_text())["sha256"]
    # written before the renames: the new file and the two it may still find on disk
    assert sorted(digests.values()) == [2, 3, 4]
    name, state = run.resume_checkpoint(IDENTITY)
    assert name == RunDir.CHECKPOINT and state["epoch"] == 4
    assert run.read_checkpoint(IDENTITY, name=RunDir.PREVIOUS_CHECKPOINT)["epoch"] == 3
    assert not (run.path / (RunDir.CHECKPOINT + ".tmp")).exists()
    with pytest.raises(CheckpointMismatchError):
        run.resume_checkpoint({"config": {"algorithm": "MERDG"}, "hparams": {"lr": 0.1}})


def test_a_damaged_checkpoint_falls_back_and_is_moved_aside(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    run.write_checkpoint(payload(2))
    data = bytearray(run.checkpoint_file.read_bytes())
    data[-30] ^= 0xFF
    run.checkpoint_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="merdg"):
        name, state = run.resume_checkpoint(IDENTITY)
    assert name == RunDir.PREVIOUS_CHECKPOINT and state["epoch"] == 1
    assert (run.path / RunDir.DAMAGED_CHECKPOINT).exists() and not run.checkpoint_file.exists()
    assert "damaged" in caplog.text and "resuming from" in caplog.text
    assert "(epoch 1)" in caplog.text


def test_no_intact_checkpoint_left_is_one_line(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    run.checkpoint_file.write_bytes(b"changed")
    with pytest.raises(CheckpointDamagedError, match=r"checkpoint\.pt: damaged .*; no intact "
                       r"checkpoint\.previous\.pt is kept: start the run over with --restart "
                       r"\(merdg train\), or delete .*checkpoint\.pt$"):
        run.resume_checkpoint(IDENTITY)
    (run.path / RunDir.CHECKPOINT_DIGESTS).write_text("{")
    with pytest.raises(CheckpointDamagedError, match=r"the checkpoints cannot be verified: delete "
                       r".*checkpoint\.sha256 to resume from .*checkpoint\.pt unverified, or "
                       r"start the run over with --restart$"):
        run.resume_checkpoint(IDENTITY)
    (run.path / RunDir.CHECKPOINT_DIGESTS).write_text('{"other": 1}')
    with pytest.raises(CheckpointDamagedError, match=r"not a merdg digest file \(no 'sha256' "
                       r"entry\)"):
        run.resume_checkpoint(IDENTITY)


def test_a_checkpoint_without_digests_is_resumed_unverified(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    (run.path / RunDir.CHECKPOINT_DIGESTS).unlink()
    with caplog.at_level(logging.WARNING, logger="merdg"):
        name, state = run.resume_checkpoint(IDENTITY)
    assert state["epoch"] == 1 and "has no recorded sha256" in caplog.text


def test_stopped_between_the_renames_resumes_from_the_previous_one(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    run.write_checkpoint(payload(2))
    run.checkpoint_file.unlink()
    with caplog.at_level(logging.INFO, logger="merdg"):
        name, state = run.resume_checkpoint(IDENTITY)
    assert name == RunDir.PREVIOUS_CHECKPOINT and state["epoch"] == 1
    assert "resuming from checkpoint.previous.pt (epoch 1)" in caplog.text
    assert not (run.path / RunDir.DAMAGED_CHECKPOINT).exists()


def test_an_unreadable_digest_file_is_started_over_on_the_next_write(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    (run.path / RunDir.CHECKPOINT_DIGESTS).write_text("{")
    run.write_checkpoint(payload(1))
    assert run.resume_checkpoint(IDENTITY)[1]["epoch"] == 1


def test_a_failed_digest_write_removes_the_new_file_and_names_the_intact_one(tmp_path,
                                                                             monkeypatch):
    import merdg.run.directory as directory

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))

    def full(path, obj, note=""):
        raise WriteFailedError(f"cannot write {path}: the disk is full; {note}")

    monkeypatch.setattr(directory, "write_json_atomic", full)
    with pytest.raises(WriteFailedError, match=r"the last checkpoint .*checkpoint\.pt is intact: "
                       r"free some space and run the same command to resume$"):
        run.write_checkpoint(payload(2))
    assert not (run.path / (RunDir.CHECKPOINT + ".tmp")).exists()
    assert run.resume_checkpoint(IDENTITY)[1]["epoch"] == 1
    empty = RunDir(tmp_path / "e")
    empty.path.mkdir()
    with pytest.raises(WriteFailedError, match=r"; free some space and run the same command "
                       r"again$"):
        empty.write_checkpoint(payload(1))


def test_finish_writes_model_summary_done_and_drops_the_checkpoints(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    run.write_pretraining({"identity": IDENTITY, "stage": {"epochs_done": 1}})
    run.finish({"selection": {}, "epochs": 4}, models=[model({"w": torch.ones(2)})],
               info={"config": {"algorithm": "ERM"}})
    names = sorted(p.name for p in run.path.iterdir())
    assert names == sorted([RunDir.MODEL, RunDir.MODEL_DIGEST, RunDir.SUMMARY, RunDir.DONE])
    assert json.loads((run.path / RunDir.MODEL_DIGEST).read_text())["sha256"].popitem()[1] == 4
    assert torch.equal(run.read_model_state()["w"], torch.ones(2))
    assert (run.path / RunDir.DONE).read_text() == "done\n"


def test_model_weights_are_verified(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(FileNotFoundError, match=r"model\.pt not found: .* saved no weights of its "
                       r"selected epoch; train with --save-model selected \(the default saves "
                       r"the selected epoch's\)$"):
        run.read_model_state()
    run.finish({"selection": {}, "epochs": 4}, models=[model({"w": torch.ones(1)})])
    run.model_file.write_bytes(run.model_file.read_bytes()[:-8] + b"12345678")
    with pytest.raises(CheckpointDamagedError, match=r"model\.pt: damaged .*; train the run again "
                       r"\(merdg train with the same settings, --overwrite\)$"):
        run.read_model_state()
    torch.save({"weights": 1}, run.model_file)
    (run.path / RunDir.MODEL_DIGEST).unlink()
    with caplog.at_level(logging.WARNING, logger="merdg"):
        with pytest.raises(ValueError, match=r"model\.pt: expected a dict with 'state_dict' "
                           r"\(merdg train\)$"):
            run.read_model_state()
    assert "has no recorded sha256" in caplog.text
    torch.save({"state_dict": {"w": torch.zeros(1)}, "run": {"torch": torch.__version__}},
               run.model_file)
    assert torch.equal(run.read_model_state()["w"], torch.zeros(1))


def test_pretraining_state_is_verified_and_replaced_atomically(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert run.read_pretraining(IDENTITY) is None
    for done in (1, 2, 3):
        run.write_pretraining({"identity": IDENTITY, "stage": {"epochs_done": done}})
    digests = json.loads((run.path / RunDir.PRETRAINING_DIGEST).read_text())["sha256"]
    assert sorted(digests.values()) == [2, 3]  # the new file and the one it replaces
    assert run.read_pretraining(IDENTITY)["stage"] == {"epochs_done": 3}
    assert not (run.path / (RunDir.PRETRAINING + ".tmp")).exists()
    run.pretraining_file.write_bytes(b"changed")
    with pytest.raises(CheckpointDamagedError, match=r"pretraining\.pt: damaged .*: delete "
                       r".*pretraining\.pt to run the pretraining stage again, or start the run "
                       r"over with --restart$"):
        run.read_pretraining(IDENTITY)
    (run.path / RunDir.PRETRAINING_DIGEST).write_text("[")
    with pytest.raises(CheckpointDamagedError, match=r"pretraining\.pt cannot be verified: "
                       r"delete .*pretraining\.pt to run the pretraining stage again"):
        run.read_pretraining(IDENTITY)
    (run.path / RunDir.PRETRAINING_DIGEST).unlink()
    run.write_pretraining({"identity": IDENTITY})  # no stage: epoch 0
    (run.path / RunDir.PRETRAINING_DIGEST).unlink()
    with caplog.at_level(logging.WARNING, logger="merdg"):
        assert "stage" not in run.read_pretraining(IDENTITY)
    assert "written before merdg recorded its digest" in caplog.text


def test_a_failed_pretraining_write_names_what_is_intact(tmp_path, monkeypatch):
    import merdg.run.directory as directory

    run = RunDir(tmp_path / "r")
    run.path.mkdir()

    def full(path, obj, note=""):
        raise WriteFailedError(f"cannot write {path}: the disk is full; {note}")

    monkeypatch.setattr(directory, "write_json_atomic", full)
    with pytest.raises(WriteFailedError, match=r"; free some space and run the same command "
                       r"again$"):
        run.write_pretraining({"identity": IDENTITY, "stage": {"epochs_done": 1}})
    monkeypatch.undo()
    run.write_pretraining({"identity": IDENTITY, "stage": {"epochs_done": 1}})
    monkeypatch.setattr(directory, "write_json_atomic", full)
    with pytest.raises(WriteFailedError, match=r"the last state .*pretraining\.pt is intact: free "
                       r"some space and run the same command to resume$"):
        run.write_pretraining({"identity": IDENTITY, "stage": {"epochs_done": 2}})
    assert not (run.path / (RunDir.PRETRAINING + ".tmp")).exists()


# --- where each write can fail, and what it then says and leaves ------------------------------

def failing_replace(monkeypatch, renames, target):
    """os.replace: record (source, target) names of renames onto ``target`` and fail them (disk
    full); other renames (the digest files' atomic writes) go through."""
    import merdg.run.directory as directory

    real = os.replace

    def replace(src, dst):
        if os.path.basename(dst) != target:
            return real(src, dst)
        renames.append((os.path.basename(src), os.path.basename(dst)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(directory.os, "replace", replace)


def test_a_failed_checkpoint_rename_names_the_file_and_removes_the_temporary(tmp_path,
                                                                             monkeypatch):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    renames = []
    failing_replace(monkeypatch, renames, "checkpoint.pt")
    with pytest.raises(WriteFailedError, match=r"^cannot write .*/checkpoint\.pt: the disk is "
                       r"full \(No space left on device\); free some space and run the same "
                       r"command again$"):
        run.write_checkpoint(payload(1))
    assert renames == [("checkpoint.pt.tmp", "checkpoint.pt")]
    assert not (run.path / "checkpoint.pt.tmp").exists()


def test_a_failed_pretraining_rename_names_the_file_and_removes_the_temporary(tmp_path,
                                                                              monkeypatch):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    renames = []
    failing_replace(monkeypatch, renames, "pretraining.pt")
    with pytest.raises(WriteFailedError, match=r"^cannot write .*/pretraining\.pt: the disk is "
                       r"full \(No space left on device\); free some space and run the same "
                       r"command again$"):
        run.write_pretraining({"identity": IDENTITY, "stage": {"epochs_done": 2}})
    assert renames == [("pretraining.pt.tmp", "pretraining.pt")]
    assert not (run.path / "pretraining.pt.tmp").exists()


def test_a_failed_model_rename_names_the_file_and_removes_the_temporary(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    renames = []
    failing_replace(monkeypatch, renames, "model.pt")
    with pytest.raises(WriteFailedError, match=r"^cannot write .*/model\.pt: the disk is full "
                       r"\(No space left on device\); the last checkpoint .*checkpoint\.pt is "
                       r"intact: free some space and run the same command to resume$"):
        run.finish({"selection": {}}, models=[model({"w": torch.ones(1)})])
    assert renames == [("model.pt.tmp", "model.pt")]
    assert not (run.path / "model.pt.tmp").exists()
    assert not (run.path / RunDir.DONE).exists() and run.checkpoint_file.exists()


def test_a_failed_failure_marker_names_it(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "a" / "b" / "r")  # parents are created
    renames = []
    failing_replace(monkeypatch, renames, "failed")
    with pytest.raises(WriteFailedError, match=r"^cannot write .*/failed: the disk is full"):
        run.mark_failed("boom")
    assert renames == [("failed.tmp", "failed")] and not (run.path / "failed.tmp").exists()


def test_failed_summary_done_and_record_writes_say_what_is_intact(tmp_path, monkeypatch):
    import merdg.run.directory as directory

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    notes = []

    def full(path, obj, note=""):
        notes.append((os.path.basename(path), note))
        raise WriteFailedError(f"cannot write {path}; {note}")

    for name in ("write_json_atomic", "append_jsonl", "write_jsonl_atomic"):
        monkeypatch.setattr(directory, name, full)
    intact = (f"the last checkpoint {run.checkpoint_file} is intact: free some space and run "
              "the same command to resume")
    for call in (lambda: run.finish({"selection": {}}), lambda: run.append_record({"e": 1}),
                 lambda: run.rewrite_records([{"e": 1}])):
        with pytest.raises(WriteFailedError):
            call()
    assert notes == [("summary.json", intact), ("records.jsonl", intact),
                     ("records.jsonl", intact)]
    monkeypatch.undo()

    def no_done(path, note="", cleanup=None):
        raise WriteFailedError(f"{os.path.basename(path)}: {note}")

    monkeypatch.setattr(directory, "writing", no_done)
    with pytest.raises(WriteFailedError, match=rf"^done: {intact}$"):
        run.finish({"selection": {}})


def test_finish_records_the_epochs_and_the_run_info_with_the_weights(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.finish({"selection": {}}, models=[model({"w": torch.ones(1)}, epoch=2),
                                          model({"w": torch.zeros(1)}, epoch=3, rule="last")])
    digests = json.loads((run.path / RunDir.MODEL_DIGEST).read_text())["sha256"]
    assert sorted(digests.values()) == [2, 3]
    saved = torch.load(run.model_file, weights_only=True)
    assert saved["run"] == {} and torch.equal(saved["state_dict"]["w"], torch.ones(1))
    assert (saved["epoch"], saved["rule"]) == (2, "source_val")
    assert torch.equal(run.read_model_state("last")["w"], torch.zeros(1))
    run.finish({"selection": {}}, models=[model({"w": torch.ones(1)})],
               info={"config": {"seed": 1}})
    assert torch.load(run.model_file, weights_only=True)["run"] == {"config": {"seed": 1}}
    with caplog.at_level(logging.WARNING, logger="merdg"):
        run.read_model_state()
    assert "no recorded sha256" not in caplog.text  # verified: nothing to warn about


def test_log_lines_of_resuming_are_exact(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_checkpoint(payload(1))
    with caplog.at_level(logging.INFO, logger="merdg"):
        run.resume_checkpoint(IDENTITY)
    assert caplog.text == ""  # verified, newest: silent
    run.write_checkpoint(payload(2))
    run.checkpoint_file.unlink()
    with caplog.at_level(logging.INFO, logger="merdg"):
        run.resume_checkpoint(IDENTITY)
    assert caplog.messages == [f"{run.path}: resuming from checkpoint.previous.pt (epoch 1)"]
    caplog.clear()
    run.write_checkpoint(payload(2))
    run.checkpoint_file.write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="merdg"):
        run.resume_checkpoint(IDENTITY)
    [message] = caplog.messages
    assert message.startswith(f"{run.checkpoint_file}: damaged (its sha256 ")
    assert message.endswith(f"; resuming from {run.path / RunDir.PREVIOUS_CHECKPOINT} (epoch 1) "
                            f"instead; the damaged file was moved to "
                            f"{run.path / RunDir.DAMAGED_CHECKPOINT}")
    caplog.clear()
    run.write_checkpoint(payload(3))
    (run.path / RunDir.CHECKPOINT_DIGESTS).unlink()
    with caplog.at_level(logging.INFO, logger="merdg"):
        run.resume_checkpoint(IDENTITY)
    assert caplog.messages == [f"{run.checkpoint_file} has no recorded sha256 (written before "
                               "merdg recorded checkpoint digests): resuming from it unverified"]


def test_unverified_model_and_pretraining_warnings_are_exact(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.finish({"selection": {}}, models=[model({"w": torch.ones(1)})])
    run.write_pretraining({"identity": IDENTITY})
    with caplog.at_level(logging.WARNING, logger="merdg"):
        run.read_pretraining(IDENTITY)
        run.read_model_state()
    assert caplog.messages == []
    (run.path / RunDir.MODEL_DIGEST).unlink()
    (run.path / RunDir.PRETRAINING_DIGEST).unlink()
    with caplog.at_level(logging.WARNING, logger="merdg"):
        run.read_model_state()
        run.read_pretraining(IDENTITY)
    assert caplog.messages == [
        f"{run.model_file} has no recorded sha256 (saved before merdg recorded digests): not "
        "verified",
        f"{run.pretraining_file} has no recorded sha256 (written before merdg recorded its "
        "digest): resuming from it unverified"]
    data = json.loads(json.dumps({"sha256": {}}))
    (run.path / RunDir.PRETRAINING_DIGEST).write_text(json.dumps(data))
    with pytest.raises(CheckpointDamagedError, match=r"pretraining\.pt: damaged"):
        run.read_pretraining(IDENTITY)


def test_small_things_the_directory_must_get_right(tmp_path, monkeypatch):
    cfg, run = started(tmp_path)
    run.clear_failed()  # nothing to clear: no error
    (run.path / RunDir.SUMMARY).write_text("{}")
    run.reset()  # only some run files exist: no error
    assert not (run.path / RunDir.SUMMARY).exists()
    run.write_job({"a": 1})
    run.write_job({"a": 2})  # the folder exists already
    deep = RunDir(tmp_path / "x" / "y" / "job")
    deep.write_job({"a": 3})
    assert deep.read_job() == {"a": 3}
    RunDir(tmp_path / "p" / "q").start({"config": cfg.to_dict()})
    (run.path / RunDir.FAILED).write_bytes(b"bad byte \xff here\nsecond")
    assert run.failure() == "bad byte \ufffd here"
    run.start({"config": cfg.to_dict()})  # (reset removed config.json)
    five = dataclasses.replace(cfg, seed=3, target="d2", algorithm="MERDG", holdout_fraction=0.3,
                               split_seed=5)
    assert len(run.differences(five)) == 5 and "more)" not in run.conflict_message(five)
    assert "; " in run.conflict_message(five) and "XX" not in run.conflict_message(five)
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    with pytest.raises(PermissionError, match="is not writable"):
        RunDir(tmp_path / "new").check_writable()


# --- the saved models of the selection rules ---------------------------------------------------

def test_the_model_file_of_each_rule(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert run.model_file_of("source_val") is None and run.model_file_of("last") is None
    with pytest.raises(ValueError, match=r"^no saved model for selection rule 'oracle'; saved "
                       r"models: source_val, last$"):
        run.model_file_of("oracle")
    run.finish({"selection": {"source_val": {"epoch": 3}, "last": {"epoch": 3}}},
               models=[model({"w": torch.ones(1)}, epoch=3)])
    assert run.model_file_of("source_val") == run.model_file
    assert run.model_file_of("last") == run.model_file  # the selected epoch is the last one
    (run.path / RunDir.SUMMARY).write_text(json.dumps(
        {"selection": {"source_val": {"epoch": 2}, "last": {"epoch": 3}}}))
    assert run.model_file_of("last") is None  # model.pt holds another epoch
    run.finish({"selection": {}}, models=[model({"w": torch.ones(1)}, epoch=2),
                                          model({"w": torch.zeros(1)}, epoch=3, rule="last")])
    assert run.model_file_of("last") == run.path / RunDir.LAST_MODEL


def test_read_model_returns_weights_epoch_rule_digest_and_run(tmp_path):
    from merdg.run.checkpoint import state_digest

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(FileNotFoundError, match=r"model\.last\.pt not found: .* saved no weights "
                       r"of its last epoch; train with --save-model selected\+last \(the default "
                       r"saves the selected epoch's\)$"):
        run.read_model("last")
    state = {"w": torch.arange(3.0)}
    run.finish({"selection": {}, "epochs": 5}, models=[model(state, epoch=4)],
               info={"config": {"seed": 2}})
    saved = run.read_model()
    assert (saved["epoch"], saved["rule"], saved["digest"]) == (4, "source_val",
                                                                state_digest(state))
    assert saved["run"] == {"config": {"seed": 2}} and torch.equal(saved["state_dict"]["w"],
                                                                   state["w"])
    # a model.pt of an earlier merdg: the final weights, without epoch, rule or digest
    torch.save({"state_dict": state, "run": {}}, run.model_file)
    (run.path / RunDir.MODEL_DIGEST).unlink()
    old = run.read_model()
    assert (old["epoch"], old["rule"], old["digest"]) == (5, "last", state_digest(state))
