"""Unit tests of merdg.run.records (fast, in-process): the record schema, the one flattener of
records and evaluations into rows (every expected row written out by hand), the choice among
several evaluations, JSON safety, and the writes (appends, atomic replacements, failures)."""

import errno
import json
import os
from pathlib import Path

import pytest

import merdg
import merdg.run.records as records_module
from merdg.run.records import (
    EpochRecord,
    WriteFailedError,
    append_jsonl,
    choose_evaluations,
    fsync_dir,
    fsync_file,
    git_revision,
    json_safe,
    read_jsonl,
    run_columns,
    run_info_of,
    run_metadata,
    run_rows,
    write_failure,
    write_json_atomic,
    write_jsonl_atomic,
    writing,
)

# --- a run of three epochs, its rows written out by hand -------------------------------------

RUN = {"config": {"dataset": "synthetic", "algorithm": "MERDG", "target": "d3", "seed": 7,
                  "hparams_seed": 2, "sources": ["d0", "d1"]},
       "sources": ["d0", "d1"], "modalities": ["m0", "m1"], "domains": ["d0", "d1", "d2", "d3"],
       "num_classes": 3, "epoch_plan": {"steps_per_epoch": 5, "seen_per_epoch": {"d0": 10}}}


def record(epoch, val, target, time_s, **extra):
    return {"epoch": epoch, "steps": 5 * epoch, "train": {"ce": 1.0 / epoch},
            "val": {"acc": val, "loss": 2.0 - val, "n": 20, "probe_acc": {"m0": val / 2}},
            "target": {"acc": target, "probe_acc": {"m1": target / 2}}, "time_s": time_s,
            **extra}


def three_epochs():
    """Source validation picks epoch 2 (0.75 beats 0.5 and 0.6), oracle and last epoch 3."""
    return [{**record(1, 0.5, 0.25, 1.5), "run": RUN}, record(2, 0.75, 0.5, 2.25),
            record(3, 0.625, 0.875, 4.0)]


SHARED = {"dataset": "synthetic", "modalities": "m0+m1", "algorithm": "MERDG", "target": "d3",
          "seed": 7, "hparams_seed": 2, "sources": "d0+d1", "setting": "multi", "column": "d3",
          "source_domains": '["d0", "d1"]', "path": "runs/a", "left_out": "d2",
          "num_classes": 3, "task": "classification", "steps_per_epoch": 5,
          "seen_per_epoch": '{"d0": 10}', "train_time_s": 7.75}


def clean(epoch, val, target):
    return {"epoch": epoch, "val_acc": val, "target_acc": target, "val_loss": 2.0 - val,
            "val_n": 20, "val_probe_acc/m0": val / 2, "target_probe_acc/m1": target / 2}


def evaluation(name, epoch, columns, settings=None, created="", file=""):
    return {"evaluator": name, "settings": settings or {}, "model": {"epoch": epoch},
            "columns": columns, "created": created, "file": file}


def test_run_rows_of_three_epochs_written_out_by_hand():
    evaluations = [evaluation("selective", 2, {"aurc_msp": 0.125}),
                   evaluation("missing", 3, {"target_missing/m0": 0.25})]
    rows = run_rows(three_epochs(), evaluations, "runs/a")
    assert rows == [
        {**SHARED, "selection": "source_val", **clean(2, 0.75, 0.5), "aurc_msp": 0.125},
        {**SHARED, "selection": "oracle", **clean(3, 0.625, 0.875), "target_missing/m0": 0.25},
        {**SHARED, "selection": "last", **clean(3, 0.625, 0.875), "target_missing/m0": 0.25}]


def test_evaluations_of_one_epoch_are_merged_and_legacy_columns_read():
    """Two evaluators of the selected epoch both give their columns; a record of an earlier
    version (the zero-filled missing-modality accuracy inside the record) gives the same
    column as an evaluation file."""
    records = three_epochs()
    records[1]["target"]["missing"] = {"m1": 0.125}
    evaluations = [evaluation("selective", 2, {"aurc_msp": 0.5}),
                   evaluation("open_set", 2, {"h_score": 0.25})]
    source_val, oracle, last = run_rows(records, evaluations, "runs/a")
    assert source_val == {**SHARED, "selection": "source_val", **clean(2, 0.75, 0.5),
                          "aurc_msp": 0.5, "h_score": 0.25, "target_missing/m1": 0.125}
    assert "aurc_msp" not in oracle and "target_missing/m1" not in last


def test_run_rows_needs_the_run_info_and_merdg_records():
    with pytest.raises(ValueError, match=r"^not a merdg run's records \(the first record holds "
                                         r"no 'run' entry\)$"):
        run_rows([record(1, 0.5, 0.5, 1.0)])
    with pytest.raises(ValueError, match="first record holds no 'run'"):
        run_rows([])
    broken = three_epochs()
    del broken[1]["target"]
    broken[1]["val"]["acc"] = 0.9  # selected by source validation
    with pytest.raises(ValueError, match=r"missing or malformed \['target'\]"):
        run_rows(broken)


def test_run_columns_of_single_source_older_and_plain_runs():
    single = {"config": {**RUN["config"], "sources": ["d1"]}, "sources": ["d1"],
              "modalities": ["m0"], "domains": ["d0", "d1", "d3"]}
    assert run_columns(single, [{"time_s": 2.5}, {}], "p") == {
        "dataset": "synthetic", "modalities": "m0", "algorithm": "MERDG", "target": "d3",
        "seed": 7, "hparams_seed": 2, "sources": "d1", "setting": "single",
        "column": "d1->d3", "source_domains": '["d1"]', "path": "p", "left_out": "d0",
        "task": "classification", "train_time_s": 2.5}
    # an older run: the sources only in the config; no domains, classes or plan; all sources
    older = {"config": {**RUN["config"], "sources": None}, "modalities": ["m0", "m1"],
             "domains": ["d0", "d1", "d2", "d3"], "num_classes": 0}
    columns = run_columns(older, [])
    assert columns == {**{k: SHARED[k] for k in ("dataset", "modalities", "algorithm",
                                                   "target", "seed", "hparams_seed")},
                       "sources": "", "setting": "multi", "column": "d3",
                       "source_domains": "[]", "path": "", "task": "classification",
                       "train_time_s": 0}
    # sources in the config only, two domains unseen: no single left-out domain
    two_unseen = {"config": {**RUN["config"], "sources": ["d0"]}, "sources": ["d0"],
                  "modalities": ["m0"],
                  "domains": ["d0", "d1", "d2", "d3"]}
    columns = run_columns(two_unseen, [])
    assert columns["sources"] == "d0" and columns["column"] == "d0->d3"
    assert "left_out" not in columns
    # no domains recorded: no left-out domain
    assert "left_out" not in run_columns({**RUN, "domains": []}, [])
    # the task: regression when the first record's clean evaluation holds an MAE
    assert run_columns(RUN, [{"target": {"acc": 0.5, "mae": 0.75}}])["task"] == "regression"
    assert run_columns(RUN, [{"target": {"acc": 0.5}}])["task"] == "classification"


def test_epoch_record_round_trip_and_its_errors():
    data = {"epoch": "3", "steps": 15, "train": {"ce": 0.5}, "val": {"acc": 0.5},
            "target": {"acc": 0.25}, "time_s": "1.5", "data_issues": ["x"]}
    rec = EpochRecord.from_dict(data)
    assert (rec.epoch, rec.steps, rec.train, rec.time_s, rec.run) == (3, 15, {"ce": 0.5},
                                                                       1.5, None)
    assert rec.extra == {"data_issues": ["x"]}
    assert rec.to_dict() == {"epoch": 3, "steps": 15, "train": {"ce": 0.5}, "val": {"acc": 0.5},
                             "target": {"acc": 0.25}, "time_s": 1.5, "data_issues": ["x"]}
    minimal = EpochRecord.from_dict({"epoch": 1, "val": {"acc": 1.0}, "target": {},
                                     "run": {"config": {}}})
    assert (minimal.steps, minimal.train, minimal.time_s, minimal.extra) == (0, {}, 0.0, {})
    assert minimal.to_dict()["run"] == {"config": {}}
    assert EpochRecord(1, 2, {}, {}, {}).to_dict() == {"epoch": 1, "steps": 2, "train": {},
                                                      "val": {}, "target": {}, "time_s": 0.0}
    for bad, what in (({"val": {"acc": 1}, "target": {}}, r"\['epoch'\]"),
                      ({"epoch": 1, "target": {}}, r"\['val'\]"),
                      ({"epoch": 1, "val": {"acc": 1}}, r"\['target'\]"),
                      ({"epoch": 1, "val": [], "target": {}}, "'val'/'target'"),
                      ({"epoch": 1, "val": {"acc": 1}, "target": 0.5}, "'val'/'target'"),
                      ({"epoch": 1, "val": {"loss": 1}, "target": {}}, "'val'/'target'")):
        with pytest.raises(ValueError, match=r"^not a merdg epoch record \(missing or "
                                             rf"malformed {what}\)$"):
            EpochRecord.from_dict(bad)


def test_run_info_of():
    assert run_info_of([{"run": {"a": 1}}, {}]) == {"a": 1}
    for bad in ([], [{}], [{"run": None}], [{"run": [1]}]):
        with pytest.raises(ValueError, match="first record holds no 'run' entry"):
            run_info_of(bad)


# --- choosing among evaluations ------------------------------------------------------------

def test_the_newest_evaluation_of_each_evaluator_and_epoch_is_chosen():
    old = evaluation("selective", 2, {"a": 1}, created="2026-01-01", file="s-1.json")
    new = evaluation("selective", 2, {"a": 2}, created="2026-02-01", file="s-0.json")
    other_epoch = evaluation("selective", 3, {"a": 3}, created="2025-01-01")
    missing = evaluation("missing", "2", {"b": 1})
    chosen, ambiguous = choose_evaluations([new, missing, old, other_epoch])
    # sorted by (evaluator, epoch); the epoch read as a number
    assert chosen == [missing, new, other_epoch] and ambiguous == []
    # the same creation time: the file name decides; no creation time counts as the oldest
    a = evaluation("ood", 1, {}, created="t", file="a.json")
    b = evaluation("ood", 1, {}, created="t", file="b.json")
    undated = {k: v for k, v in evaluation("ood", 1, {}, file="z.json").items()
               if k != "created"}
    assert choose_evaluations([b, a, undated])[0] == [b]
    assert choose_evaluations([{k: v for k, v in a.items() if k != "file"}, undated])[0] == [
        {k: v for k, v in a.items() if k != "file"}]


def test_wanted_settings_choose_and_several_settings_without_a_wish_are_named():
    low = evaluation("corruptions", 2, {"c": 1}, {"severity": [1]}, created="2")
    high = evaluation("corruptions", 2, {"c": 2}, {"severity": [5]}, created="1")
    ood = evaluation("ood", 2, {"o": 1}, {"dataset": "x"}, created="1")
    ood2 = evaluation("ood", 2, {"o": 2}, {"dataset": "y"}, created="0")
    sel = evaluation("selective", 2, {"s": 1}, {"p": 1}, created="1")
    chosen, ambiguous = choose_evaluations([low, high, ood, ood2, sel])
    assert chosen == [low, ood, sel] and ambiguous == ["corruptions", "ood"]
    chosen, ambiguous = choose_evaluations([low, high, ood, ood2, sel],
                                           {"corruptions": {"severity": [5]}})
    assert chosen == [high, ood, sel] and ambiguous == ["ood"]
    # nothing with the wanted settings: the evaluator is left out (not the newest instead)
    chosen, ambiguous = choose_evaluations([low, high, sel], {"corruptions": {"severity": [3]},
                                                              "ood": {}})
    assert chosen == [sel] and ambiguous == []
    # the same settings written in another key order are one setting
    one = evaluation("selective", 2, {"s": 2}, {"q": 2, "p": 1}, created="0")
    assert choose_evaluations([one, {**one, "settings": {"p": 1, "q": 2}}])[1] == []
    twice = evaluation("missing", 2, {}, None)
    del twice["settings"]
    assert choose_evaluations([twice, dict(twice)])[1] == []


def test_wanted_settings_are_compared_as_a_dict():
    """``wanted`` holds canonical settings as any mapping."""
    from types import MappingProxyType

    e = evaluation("ood", 1, {"o": 1}, {"dataset": "x"})
    assert choose_evaluations([e], {"ood": MappingProxyType({"dataset": "x"})})[0] == [e]


# --- JSON safety and files --------------------------------------------------------------------

def test_json_safe_turns_non_finite_floats_into_none_everywhere():
    data = {1: float("nan"), "b": [float("inf"), (-float("inf"), 2.5)], "c": {"d": "x"},
            "e": True, "f": None, "g": 3}
    assert json_safe(data) == {"1": None, "b": [None, [None, 2.5]], "c": {"d": "x"},
                               "e": True, "f": None, "g": 3}
    assert json.dumps(json_safe(data), allow_nan=False)
    assert json_safe(float("nan")) is None and json_safe(0.5) == 0.5


def test_append_jsonl_adds_sorted_json_safe_lines_and_fsyncs_only_when_asked(tmp_path,
                                                                               monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(records_module.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"b": float("nan"), "a": 1})
    assert len(synced) == 1
    append_jsonl(path, {"c": [1.5]}, sync=False)
    assert len(synced) == 1
    assert path.read_text(encoding="utf-8") == '{"a": 1, "b": null}\n{"c": [1.5]}\n'
    assert list(read_jsonl(path)) == [{"a": 1, "b": None}, {"c": [1.5]}]


def test_append_jsonl_failure_is_one_line_with_the_note(tmp_path):
    missing = tmp_path / "no-such-dir" / "r.jsonl"
    with pytest.raises(WriteFailedError, match=rf"^cannot write {missing}: the write failed "
                                               r"\(No such file or directory\); keep calm$"):
        append_jsonl(missing, {"a": 1}, note="keep calm")


def test_read_jsonl_skips_blank_lines_and_names_a_malformed_one(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n{"a": \n', encoding="utf-8")
    got = []
    with pytest.raises(ValueError, match=rf"^{path}:5: malformed record \("):
        for rec in read_jsonl(path):
            got.append(rec)
    assert got == [{"a": 1}, {"a": 2}]


def test_write_json_atomic_replaces_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    path.write_text("old", encoding="utf-8")
    synced = []
    real = os.fsync
    monkeypatch.setattr(records_module.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    write_json_atomic(path, {"b": [float("inf")], "a": 1})
    assert path.read_text(encoding="utf-8") == '{\n  "a": 1,\n  "b": [\n    null\n  ]\n}\n'
    assert synced and not (tmp_path / "s.json.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_write_jsonl_atomic_replaces_every_line(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_text('{"old": 1}\n', encoding="utf-8")
    synced = []
    real = os.fsync
    monkeypatch.setattr(records_module.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    write_jsonl_atomic(path, [{"b": 1, "a": float("nan")}, {"c": 2}])
    assert path.read_text(encoding="utf-8") == '{"a": null, "b": 1}\n{"c": 2}\n'
    assert synced and sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]
    write_jsonl_atomic(path, [])
    assert path.read_text(encoding="utf-8") == ""


@pytest.mark.parametrize("write", ["json", "jsonl"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch,
                                                                    write):
    path = tmp_path / "f"
    path.write_text("old", encoding="utf-8")

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(records_module.os, "replace", full)
    writer = write_json_atomic if write == "json" else write_jsonl_atomic
    with pytest.raises(WriteFailedError, match=rf"^cannot write {path}: the disk is full "
                                               rf"\({os.strerror(errno.ENOSPC)}\); intact$"):
        writer(path, {"a": 1} if write == "json" else [{"a": 1}], note="intact")
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_write_failure_messages():
    full = OSError(errno.ENOSPC, "No space")
    quota = OSError(errno.EDQUOT, "Quota")
    assert str(write_failure("f", full)) == (
        f"cannot write f: the disk is full ({os.strerror(errno.ENOSPC)})")
    assert str(write_failure("f", quota, "x")) == (
        f"cannot write f: the disk is full ({os.strerror(errno.EDQUOT)}); x")
    assert str(write_failure("f", OSError(errno.EIO, "I/O error"))) == (
        "cannot write f: the write failed (I/O error)")
    assert str(write_failure("f", OSError("plain"))) == "cannot write f: the write failed (plain)"
    assert str(write_failure(Path("g"), RuntimeError("unexpected pos 12"), "n")) == (
        "cannot write g: the write failed, most likely because the disk is full (torch: "
        "unexpected pos 12); n")
    assert isinstance(write_failure("f", full), OSError)


def test_writing_turns_write_errors_into_one_line_and_removes_the_temporary(tmp_path):
    tmp = tmp_path / "t.tmp"
    for err in (OSError(errno.EIO, "I/O error"), RuntimeError("PytorchStreamWriter failed x"),
                RuntimeError("[enforce fail] file write failed"),
                RuntimeError("unexpected pos 3 vs 4")):
        tmp.write_text("half")
        with pytest.raises(WriteFailedError, match=r"^cannot write out: .*; n$") as info:
            with writing("out", "n", cleanup=tmp):
                raise err
        assert info.value.__cause__ is err and not tmp.exists()
    tmp.write_text("half")
    other = RuntimeError("a bug, not a write")
    with pytest.raises(RuntimeError) as info, writing("out", cleanup=tmp):
        raise other
    assert info.value is other and tmp.exists()  # not a write failure: untouched, re-raised
    already = WriteFailedError("cannot write x: done")
    with pytest.raises(WriteFailedError) as info, writing("out", cleanup=tmp):
        raise already
    assert info.value is already and tmp.exists()
    with pytest.raises(WriteFailedError, match=r"^cannot write out: the write failed \(e\)$"):
        with writing("out"):  # no note, no temporary
            raise OSError("e")
    with writing("out", cleanup=tmp):
        pass
    assert tmp.exists()


def test_fsync_file_and_dir_sync_what_they_name(tmp_path, monkeypatch):
    synced, closed = [], []
    real_fsync, real_close = os.fsync, os.close
    monkeypatch.setattr(records_module.os, "fsync",
                        lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                    real_fsync(fd)))
    monkeypatch.setattr(records_module.os, "close", lambda fd: (closed.append(fd),
                                                                 real_close(fd)))
    file = tmp_path / "r.jsonl"
    file.write_text("x")
    fsync_file(file)
    fsync_dir(tmp_path)
    assert synced == [str(file), str(tmp_path)] and len(closed) == 1
    fsync_dir(tmp_path / "missing")  # cannot be opened: nothing to do
    assert len(synced) == 2
    with pytest.raises(WriteFailedError, match=r"^cannot write .*missing: the write failed "
                                               r"\(No such file or directory\); n$"):
        fsync_file(tmp_path / "missing", note="n")


def test_fsync_dir_closes_what_it_opened_when_fsync_fails(tmp_path, monkeypatch):
    closed = []
    real_close = os.close

    def fail(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(records_module.os, "fsync", fail)
    monkeypatch.setattr(records_module.os, "close", lambda fd: (closed.append(fd),
                                                                 real_close(fd)))
    with pytest.raises(OSError, match="I/O error"):
        fsync_dir(tmp_path)
    assert len(closed) == 1


def test_git_revision_of_the_source_tree(monkeypatch):
    calls = []
    root = str(Path(merdg.__file__).resolve().parent.parent.parent)

    def run(cmd, **kw):
        calls.append((cmd, kw))
        out = "abc123\n" if "rev-parse" in cmd else dirty

        class Done:
            stdout = out
        return Done()

    monkeypatch.setattr(records_module.subprocess, "run", run)
    dirty = " M src/x.py\n"
    assert git_revision() == "abc123+dirty"
    assert calls[0][0] == ["git", "-C", root, "rev-parse", "HEAD"]
    assert calls[1][0] == ["git", "-C", root, "status", "--porcelain", "--", "src"]
    for _, kw in calls:
        assert kw["capture_output"] and kw["text"] and kw["timeout"] == 10
    assert calls[0][1]["check"] is True
    dirty = "\n"
    assert git_revision() == "abc123"

    def missing(cmd, **kw):
        raise FileNotFoundError("git")

    monkeypatch.setattr(records_module.subprocess, "run", missing)
    assert git_revision() is None

    def failing(cmd, **kw):
        raise records_module.subprocess.CalledProcessError(128, cmd)

    monkeypatch.setattr(records_module.subprocess, "run", failing)
    assert git_revision() is None


def test_run_metadata_names_the_versions(monkeypatch):
    import torch

    monkeypatch.setattr(records_module, "git_revision", lambda: "rev")
    meta = run_metadata()
    assert meta == {"merdg_version": merdg.__version__, "git": "rev",
                    "torch_version": str(torch.__version__)}
    assert type(meta["torch_version"]) is str


def test_newest_evaluation_ties_and_missing_entries():
    """Creation times are ISO texts compared as text: a missing one is the oldest; on equal
    times the larger file name wins, a missing file name counting as the smallest."""
    dated = evaluation("ood", 1, {"o": 1}, created="2026-01-01T00:00:00", file="a.json")
    undated = {k: v for k, v in evaluation("ood", 1, {"o": 2}, file="b.json").items()
               if k != "created"}
    assert choose_evaluations([undated, dated])[0] == [dated]
    assert choose_evaluations([dated, undated])[0] == [dated]
    a = evaluation("ood", 1, {"o": 3}, created="t", file="a.json")
    b = evaluation("ood", 1, {"o": 4}, created="t", file="b.json")
    assert choose_evaluations([a, b])[0] == [b] and choose_evaluations([b, a])[0] == [b]
    nameless = {k: v for k, v in a.items() if k != "file"}
    named = evaluation("ood", 1, {"o": 5}, created="t", file="0.json")
    assert choose_evaluations([named, nameless])[0] == [named]
    assert choose_evaluations([nameless, named])[0] == [named]


def test_run_columns_read_the_sources_of_the_run_then_of_the_config():
    # the run's sources (all of the dataset's but the target: the config names none)
    every = {"config": {**RUN["config"], "sources": None}, "sources": ["d0", "d1", "d2"],
             "modalities": ["m0"]}
    columns = run_columns(every, [])
    assert (columns["sources"], columns["source_domains"], columns["setting"]) == (
        "d0+d1+d2", '["d0", "d1", "d2"]', "multi")
    # an older run: its config only
    older = {"config": {**RUN["config"], "sources": ["d1", "d0"]}, "modalities": ["m0"]}
    columns = run_columns(older, [])
    assert (columns["sources"], columns["source_domains"], columns["column"]) == (
        "d1+d0", '["d1", "d0"]', "d3")
    assert run_rows(three_epochs())[0]["path"] == ""


def test_writes_without_a_note_end_with_the_reason(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-dir" / "f"
    reason = r"the write failed \(No such file or directory\)$"
    with pytest.raises(WriteFailedError, match=rf"^cannot write {missing}: {reason}"):
        append_jsonl(missing, {"a": 1})
    with pytest.raises(WriteFailedError, match=rf"^cannot write {missing}: {reason}"):
        fsync_file(missing)
    with pytest.raises(WriteFailedError, match=rf"^cannot write {missing}: {reason}"):
        write_json_atomic(missing, {"a": 1})
    with pytest.raises(WriteFailedError, match=rf"^cannot write {missing}: {reason}"):
        write_jsonl_atomic(missing, [{"a": 1}])


@pytest.mark.parametrize("write", ["json", "jsonl"])
def test_an_atomic_write_goes_through_name_dot_tmp(tmp_path, monkeypatch, write):
    """``<name>.tmp``: the name a reset of the run directory clears after a kill
    (RunDir.TEMPORARY_FILES)."""
    renames = []
    real = os.replace
    monkeypatch.setattr(records_module.os, "replace",
                        lambda src, dst: (renames.append((str(src), str(dst))),
                                          real(src, dst)))
    path = tmp_path / "summary.json"
    if write == "json":
        write_json_atomic(path, {"a": 1})
    else:
        write_jsonl_atomic(path, [{"a": 1}])
    assert renames == [(str(tmp_path / "summary.json.tmp"), str(path))]
