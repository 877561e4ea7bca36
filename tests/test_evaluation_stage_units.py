"""Unit tests of merdg.run.evaluation (in-process): the evaluation record's content, the
stage's bookkeeping with stand-in evaluators (which run at which time, what they are given,
the random state left untouched), which evaluations a finished run lacks, and ``merdg
evaluate`` on one tiny trained run (one epoch, trained once for the module)."""

import dataclasses
import datetime
import hashlib
import json
import logging
import shutil
from types import SimpleNamespace

import pytest
import torch

import merdg
import merdg.run.evaluation as evaluation_module
from merdg.evaluators import EVALUATORS
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir, RunDirBusyError
from merdg.run.evaluation import (
    EvaluationStage,
    evaluate_run,
    evaluation_record,
    missing_evaluations,
)


class Stand:
    """A stand-in evaluator: records what it is given, draws from the random state."""

    def __init__(self, name, times, key=None, settings=None):
        self.name, self.times, self.key = name, frozenset(times), key or f"{name}-k"
        self.settings_dict = settings or {"s": name}
        self.checked, self.contexts = [], []

    def file_key(self):
        return self.key

    def describe(self):
        return self.name

    def check(self, spec):
        self.checked.append(spec)

    def measure_init(self, context):
        self.contexts.append(context)
        return {f"{self.name}_init": torch.rand(1).item()}

    def measure_epoch(self, context):
        self.contexts.append(context)
        return {f"{self.name}_epoch": torch.rand(1).item()}

    def measure(self, context):
        self.contexts.append(context)
        columns = {f"{self.name}_col": float("nan"), "x": torch.rand(1).item()}
        return SimpleNamespace(columns=columns, details={"d": [float("inf"), 1.0]})


def stage_with(monkeypatch, evaluators, evaluations=None):
    calls = []

    def fake(settings, spec):
        calls.append((settings, spec))
        return evaluators

    monkeypatch.setattr(evaluation_module, "run_evaluators", fake)
    config = SimpleNamespace(evaluations={"from": "config"}, eval_batch_size=7, num_workers=2)
    data = SimpleNamespace(spec="SPEC", val_sets={"d0": "V"}, target_set="T",
                           train_parts=["P"])
    return EvaluationStage(config, data, evaluations), calls


def test_the_stage_checks_every_evaluator_with_the_run_before_any_work(monkeypatch):
    a, b = Stand("a", {"model"}), Stand("b", {"epoch", "init"})
    stage, calls = stage_with(monkeypatch, [a, b])
    assert calls == [({"from": "config"}, "SPEC")]
    assert a.checked == ["SPEC"] and b.checked == ["SPEC"]
    assert stage.evaluators == [a, b]
    assert stage.at("model") == [a] and stage.at("epoch") == [b] and stage.at("init") == [b]
    assert stage.at("never") == []
    _, calls = stage_with(monkeypatch, [], {"given": {}})
    assert calls == [({"given": {}}, "SPEC")]
    _, calls = stage_with(monkeypatch, [], {})  # an empty request is a request
    assert calls == [({}, "SPEC")]


def test_the_context_holds_the_runs_data_and_settings(monkeypatch):
    stage, _ = stage_with(monkeypatch, [])
    context = stage.context("ALGO", torch.device("cpu"), {"info": 1})
    assert (context.run, context.algorithm, context.val_sets, context.target_set,
            context.train_parts, context.device, context.batch_size, context.num_workers,
            context.run_info) == ("SPEC", "ALGO", {"d0": "V"}, "T", ["P"], torch.device("cpu"),
                                  7, 2, {"info": 1})


def test_init_and_model_leave_the_random_state_the_epoch_evaluation_does_not(monkeypatch):
    a, b, c = Stand("a", {"init"}), Stand("b", {"init", "epoch"}), Stand("c", {"model"})
    stage, _ = stage_with(monkeypatch, [a, b, c])
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    first = torch.rand(2)
    torch.manual_seed(0)
    measured = stage.init("ALGO", cpu, {"i": 1})
    assert sorted(measured) == ["a_init", "b_init"]
    assert torch.equal(torch.rand(2), first)  # untouched
    assert a.contexts[0].run_info == {"i": 1} and a.contexts[0] is b.contexts[0]
    torch.manual_seed(0)
    records = stage.model("ALGO", cpu, {}, {"epoch": 3, "rule": "source_val"})
    assert torch.equal(torch.rand(2), first)
    assert [r["evaluator"] for r in records] == ["c"]
    torch.manual_seed(0)
    assert list(stage.epoch("ALGO", cpu)) == ["b_epoch"]
    assert not torch.equal(torch.rand(2), first)  # part of the run's random stream
    assert b.contexts[-1].run_info == {}


def test_model_evaluations_skip_done_keys_and_share_a_given_context(monkeypatch, caplog):
    c, d = Stand("c", {"model"}, "c-1"), Stand("d", {"model", "epoch"}, "d-2")
    stage, _ = stage_with(monkeypatch, [c, d])
    cpu = torch.device("cpu")
    model = {"epoch": 3, "rule": "last", "digest": "ab" * 32, "file": "model.last.pt"}
    shared = stage.context("ALGO", cpu, {})
    with caplog.at_level(logging.DEBUG, logger="merdg"):
        records = stage.model("ALGO", cpu, {}, model, skip=["c-1"], context=shared)
    assert [r["key"] for r in records] == ["d-2"] and c.contexts == []
    assert d.contexts == [shared]
    assert caplog.records[-1].getMessage().startswith(
        "evaluated d on the model of epoch 3 (last) in ")
    assert records[0]["model"] == model and records[0]["model"] is not model
    records = stage.model("ALGO", cpu, {"r": 1}, model)
    assert [r["key"] for r in records] == ["c-1", "d-2"]
    assert c.contexts[0] is d.contexts[-1] and c.contexts[0].run_info == {"r": 1}


def test_an_evaluation_record_holds_what_docs_evaluation_md_lists(monkeypatch):
    monkeypatch.setattr(evaluation_module, "run_metadata",
                        lambda: {"merdg_version": "v", "git": "g", "torch_version": "t"})
    e = Stand("sel", {"model"}, "sel-123", {"fpr95_point": "first"})
    before = datetime.datetime.now(datetime.timezone.utc)
    record = evaluation_record(e, {"a": float("nan"), "b": 0.5}, {"c": (float("inf"), 1)},
                               {"epoch": 2, "rule": "source_val"}, 1.25)
    after = datetime.datetime.now(datetime.timezone.utc)
    created = record.pop("created")
    assert record == {"evaluator": "sel", "key": "sel-123",
                      "settings": {"fpr95_point": "first"},
                      "model": {"epoch": 2, "rule": "source_val"},
                      "columns": {"a": None, "b": 0.5}, "details": {"c": [None, 1]},
                      "time_s": 1.25, "merdg_version": "v", "git": "g", "torch_version": "t"}
    stamp = datetime.datetime.fromisoformat(created)
    assert before <= stamp <= after and stamp.utcoffset() == datetime.timedelta(0)
    assert len(created.split("+")[0].split(".")[1]) == 6  # microseconds, sortable as text
    json.dumps(record, allow_nan=False)


# --- on a trained run --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One ERM run of one epoch on a tiny synthetic benchmark, saved weights of epoch 1."""
    from merdg.run.training import train

    # the suite's tiny model (tests/conftest.py), one epoch; not imported from there, as the
    # name ``conftest`` also names tests/evaluation/conftest.py when the whole suite runs
    hparams = {"epochs": 1, "batch_size": 12, "proj_hidden": 32, "fusion_hidden": 16,
               "encoders": {m: {"hidden": 16, "out_dim": 8} for m in ("m0", "m1", "m2")}}
    out = tmp_path_factory.mktemp("evaluate") / "run"
    config = RunConfig(dataset="synthetic", target="d2", algorithm="ERM", hparams=hparams,
                       dataset_options={"samples_per_domain": 30, "n_classes": 3},
                       out_dir=str(out))
    train(config, progress=False)
    return out, config


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run (tests change its files), without the evaluations
    training wrote."""
    out, config = trained
    copy_dir = tmp_path / "run"
    shutil.copytree(out, copy_dir)
    assert (copy_dir / "evaluations").is_dir()
    shutil.rmtree(copy_dir / "evaluations")
    return copy_dir, config


def digests(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.iterdir()) if p.is_file()}


def selective_key(settings=None):
    return EVALUATORS.get("selective").from_settings(settings or {}).file_key()


def test_evaluate_run_writes_the_evaluations_and_touches_no_training_file(run):
    path, _ = run
    before = digests(path)
    model_digest = json.loads((path / "summary.json").read_text())["models"][0]["digest"]
    records = [json.loads(line) for line in (path / "records.jsonl").read_text().splitlines()]
    out = evaluate_run(str(path), {})
    assert digests(path) == before
    assert out["path"] == str(path) and out["skipped"] == []
    assert out["model"]["epoch"] == 1 and out["model"]["digest"] == model_digest
    file = path / "evaluations" / f"{selective_key()}-{model_digest[:12]}.json"
    assert out["written"] == [file] and file.is_file()
    assert [r["evaluator"] for r in out["results"]] == ["selective"]
    assert json.loads(file.read_text())["columns"] == out["results"][0]["columns"]
    assert out["recorded_target_acc"] == records[0]["target"]["acc"]
    assert out["target_acc"] == pytest.approx(records[0]["target"]["acc"], abs=1e-12)
    # done: skipped; forced: measured again
    again = evaluate_run(str(path), {})
    assert again["written"] == [] and again["skipped"] == [selective_key()]
    forced = evaluate_run(str(path), {}, force=True)
    assert forced["written"] == [file] and forced["skipped"] == []


def test_evaluate_run_warns_when_the_weights_disagree_with_the_record(run, caplog):
    path, _ = run
    lines = (path / "records.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    recorded = first["target"]["acc"]
    first["target"]["acc"] = recorded + 0.25
    (path / "records.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="merdg"):
        out = evaluate_run(str(path), {}, eval_batch_size=5)
    assert out["recorded_target_acc"] == recorded + 0.25
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{path}: the saved weights of epoch 1 give target accuracy {out['target_acc']:.6f}, "
        f"the record says {recorded + 0.25:.6f}: the data or the code changed since training"]


def test_evaluate_run_without_the_record_of_the_epoch_says_nothing(run, caplog):
    path, _ = run
    lines = (path / "records.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["epoch"] = 5
    (path / "records.jsonl").write_text(json.dumps(first) + "\n")
    with caplog.at_level(logging.WARNING, logger="merdg"):
        out = evaluate_run(str(path), {})
    assert out["recorded_target_acc"] is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_evaluate_run_refuses_an_unfinished_or_busy_run(run, tmp_path):
    path, _ = run
    message = (r"holds no finished run \(no done marker and summary.json\); train it first "
               r"\(merdg train\), then evaluate it$")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'nothing'} {message}"):
        evaluate_run(str(tmp_path / "nothing"), {})
    (path / "summary.json").rename(tmp_path / "summary.json")
    with pytest.raises(ValueError, match=rf"^{path} {message}"):
        evaluate_run(str(path), {})
    (tmp_path / "summary.json").rename(path / "summary.json")
    (path / "done").unlink()
    with pytest.raises(ValueError, match=rf"^{path} {message}"):
        evaluate_run(str(path), {})
    (path / "done").write_text("done\n")
    with RunDir(path).lock(), pytest.raises(RunDirBusyError):
        evaluate_run(str(path), {})
    assert not (path / "evaluations").exists()


def test_missing_evaluations_of_a_finished_run(run):
    path, config = run
    directory = RunDir(path)
    asked = {"selective": {"fpr95_point": "nearest"}}
    config = dataclasses.replace(config, evaluations=asked)
    key = selective_key({"fpr95_point": "nearest"})
    assert missing_evaluations(directory, config) == [key]
    evaluate_run(str(path), asked)
    assert missing_evaluations(directory, config) == []
    # another saved model (the last epoch's) lacks it
    summary = json.loads((path / "summary.json").read_text())
    summary["models"].append({"digest": "f" * 64, "file": "model.last.pt", "epoch": 1,
                              "rule": "last"})
    summary["models"].append({"digest": "e" * 64, "epoch": 1, "rule": "x"})  # no weights
    (path / "summary.json").write_text(json.dumps(summary))
    assert missing_evaluations(directory, config) == [key]
    summary["models"] = []
    (path / "summary.json").write_text(json.dumps(summary))
    assert missing_evaluations(directory, config) == []


def test_missing_evaluations_of_a_run_of_an_earlier_version(run):
    """A summary without ``models``: the digest is read from the saved weights."""
    path, config = run
    directory = RunDir(path)
    summary = json.loads((path / "summary.json").read_text())
    digest = summary.pop("models")[0]["digest"]
    (path / "summary.json").write_text(json.dumps(summary))
    assert missing_evaluations(directory, config) == [selective_key()]
    (path / "evaluations").mkdir()
    (path / "evaluations" / f"{selective_key()}-{digest[:12]}.json").write_text("{}")
    assert missing_evaluations(directory, config) == []
    (path / "model.pt").unlink()
    (path / "evaluations" / f"{selective_key()}-{digest[:12]}.json").unlink()
    assert missing_evaluations(directory, config) == []  # no weights saved: nothing to do


def test_the_package_version_is_in_every_evaluation_file(run):
    path, _ = run
    out = evaluate_run(str(path), {})
    saved = json.loads(out["written"][0].read_text())
    assert saved["merdg_version"] == merdg.__version__
    assert saved["model"]["file"] == "model.pt" and saved["model"]["rule"] == "source_val"


def test_a_finished_run_leaves_no_split_or_dataset_alive(monkeypatch, tiny_hparams,
                                                          tiny_synthetic_options):
    """Runs in one process (a bench or sweep with one worker) do not pile up: once ``train``
    returns, nothing holds its data, the loader forms built for its per-epoch evaluations
    included (they lived in a module-level cache, 15 MiB per UTD-MHAD run)."""
    import gc
    import weakref

    import merdg.run.training as training

    alive = []
    real = training.prepare_data

    def watched(*args, **kwargs):
        data = real(*args, **kwargs)
        alive.extend(weakref.ref(x) for x in (data.target_set, *data.val_sets.values(),
                                             *data.train_parts, data.spec.dataset))
        return data

    monkeypatch.setattr(training, "prepare_data", watched)
    config = RunConfig("synthetic", "d0", "ERM", hparams=tiny_hparams,
                       dataset_options=tiny_synthetic_options,
                       evaluations={"missing": {}})
    training.train(config, progress=False)
    gc.collect()
    assert alive and [ref() for ref in alive if ref() is not None] == []
