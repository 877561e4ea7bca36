"""W&B logging in offline mode, read back from the run's own ``.wandb`` file (no network)."""

import json
import struct
import sys

import pytest

pytest.importorskip("wandb")

from merdg.run.wandb import WandbLogger  # noqa: E402

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of 7-byte-header chunks
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path):
    """Protobuf records of a ``run-*.wandb`` file, decoded with wandb's own message types."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B transaction log"
    chunks, pending, pos = [], b"", 7
    while pos + 7 <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == FULL:
            chunks.append(data)
        elif kind == FIRST:
            pending = data
        elif kind == MIDDLE:
            pending += data
        elif kind == LAST:
            chunks.append(pending + data)
        else:
            raise AssertionError(f"unexpected chunk type {kind} at byte {pos}")
    records = []
    for data in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    return records


def history(path):
    """``[{key: value}]`` of every ``run.log`` row, with W&B's ``_step``."""
    rows = []
    for record in read_wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """W&B offline and silent, every directory it may use under tmp_path (home included)."""
    home = tmp_path / "home"
    for name, sub in [("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "config"),
                      ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                      ("WANDB_ARTIFACT_DIR", "artifacts"), ("HOME", "home"),
                      ("XDG_CACHE_HOME", "home/.cache"), ("XDG_CONFIG_HOME", "home/.config")]:
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    yield tmp_path
    assert not home.exists() or not any(home.rglob("*")), "W&B wrote into the home directory"


RECORDS = [
    {"epoch": 1, "steps": 4, "train": {"ce": 1.5, "mer_spec/audio": 0.7},
     "val": {"acc": 0.5, "per_domain": {"D1": 0.4}}, "target": {"acc": 0.3, "loss": 2.0},
     "time_s": 1.25, "run": {"algorithm": "MERDG"}},
    {"epoch": 2, "steps": 8, "train": {"ce": 1.1, "mer_spec/audio": 0.6},
     "val": {"acc": 0.6, "per_domain": {"D1": 0.55}}, "target": {"acc": 0.35, "loss": 1.8},
     "time_s": 1.0, "run": {"algorithm": "MERDG"}},
]


def run_files(run_dir):
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def test_offline_run_holds_the_logged_scalars(offline_env):
    run_dir = offline_env / "run"
    logger = WandbLogger(run_dir, config={"algorithm": "MERDG", "lr": 1e-4})
    logger.log_steps([{"ce": 1.7, "mer": 0.2}, {"ce": 1.6, "mer": 0.1}], first_step=0)
    logger.log_record(RECORDS[0])
    logger.log_record(RECORDS[1])
    logger.close()
    [path] = run_files(run_dir)
    rows = history(path)
    by_step = {}
    for row in rows:
        by_step.setdefault(row["_step"], {}).update(row)
    assert by_step[1]["step/ce"] == 1.7 and by_step[2]["step/mer"] == 0.1
    assert by_step[4]["val/acc"] == 0.5 and by_step[4]["train/mer_spec/audio"] == 0.7
    assert by_step[4]["val/per_domain/D1"] == 0.4 and by_step[4]["epoch"] == 1.0
    assert by_step[8]["target/loss"] == 1.8 and by_step[8]["time_s"] == 1.0
    assert not any(key.startswith("run") for row in rows for key in row)  # config is no scalar
    run = next(r.run for r in read_wandb_records(path) if r.WhichOneof("record_type") == "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    lr = config["lr"]["value"] if isinstance(config["lr"], dict) else config["lr"]
    assert lr == 1e-4 and run.display_name == "run"


def test_a_rerun_replaces_the_previous_wandb_run(offline_env):
    run_dir = offline_env / "run"
    for _ in range(2):
        logger = WandbLogger(run_dir)
        logger.log_record(RECORDS[0])
        logger.close()
    assert len(run_files(run_dir)) == 1
    other = run_dir / "wandb" / "notes.txt"  # anything else there is left alone
    other.write_text("mine")
    WandbLogger(run_dir).close()
    assert other.read_text() == "mine"


def test_missing_package_and_bad_mode_are_explained(offline_env, monkeypatch):
    with pytest.raises(ValueError, match="W&B mode must be one of"):
        WandbLogger(offline_env / "run", mode="cloud")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(RuntimeError, match=r"pip install 'merdg\[wandb\]'"):
        WandbLogger(offline_env / "run")


def test_merdg_train_wandb_logs_every_epoch_and_replays_them_on_resume(offline_env,
                                                                       monkeypatch):
    """`merdg train --wandb` end to end (offline); a run interrupted after its first epoch
    and resumed logs the first epoch again from its records, then the second."""
    from merdg.cli import main
    from merdg.run import training
    from merdg.run.directory import RunDir
    from merdg.run.records import read_jsonl

    out = offline_env / "run"
    hparams = {"epochs": 2, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
    args = ["train", "--dataset", "synthetic", "--target", "d1", "--algorithm", "MERDG",
            "--hparams", json.dumps(hparams), "--dataset-option", "samples_per_domain=40",
            "--dataset-option", "n_classes=3", "--wandb", "--checkpoint-every", "0",
            "--out", str(out)]
    real_epoch = training._train_and_evaluate

    def one_epoch_then_stop(run, batches, lines, done, until):
        if done > 0:  # the second epoch
            raise KeyboardInterrupt
        return real_epoch(run, batches, lines, done, until)

    monkeypatch.setattr(training, "_train_and_evaluate", one_epoch_then_stop)
    assert main(args) == 130  # interrupted: one line, what was written is kept
    monkeypatch.setattr(training, "_train_and_evaluate", real_epoch)
    assert main(args) == 0
    records = list(read_jsonl(out / "records.jsonl"))
    [path] = run_files(out)  # the interrupted attempt's W&B run was replaced
    by_step = {}
    for row in history(path):
        by_step.setdefault(row["_step"], {}).update(row)
    for record in records:  # both epochs, at their step counts
        logged = by_step[record["steps"]]
        assert logged["val/acc"] == pytest.approx(record["val"]["acc"])
        assert logged["target/acc"] == pytest.approx(record["target"]["acc"])
        assert logged["epoch"] == record["epoch"]
    # then the evaluations of the selected model, at the last step
    (selective,) = [e for e in RunDir(out).read_evaluations() if e["evaluator"] == "selective"]
    logged = by_step[records[-1]["steps"]]
    assert logged["selected/aurc_msp"] == pytest.approx(selective["columns"]["aurc_msp"])
    first_steps = range(records[0]["steps"] + 1, records[1]["steps"] + 1)
    assert all("step/ce" in by_step[s] for s in first_steps)  # the resumed epoch's steps
    run = next(r.run for r in read_wandb_records(path) if r.WhichOneof("record_type") == "run")
    assert run.display_name == "MERDG all d1 seed0"


def _tiny_cli(command, out, *extra):
    hparams = {"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
    return [command, "--dataset", "synthetic", "--hparams", json.dumps(hparams),
            "--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3",
            "--wandb", "--out", str(out), *extra]


def test_online_without_credentials_is_refused_before_any_work(offline_env, monkeypatch,
                                                                capsys):
    """Before: WANDB_MODE=online without an API key ended in a Python traceback, after the
    data was built and config.json written."""
    from merdg.cli import main
    from snapshots import tree_digest

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("NETRC", raising=False)
    before = tree_digest(offline_env)
    home = offline_env / "home"
    for command, extra in (("train", ["--target", "d1"]),
                           ("bench", ["--targets", "d1", "--algorithms", "ERM", "--seeds", "1"])):
        capsys.readouterr()
        assert main(_tiny_cli(command, offline_env / "out", *extra)) == 2
        assert capsys.readouterr().err.strip() == (
            f"merdg {command}: error: --wandb with WANDB_MODE=online needs W&B credentials and "
            f"none were found (no WANDB_API_KEY, no entry for api.wandb.ai in {home / '.netrc'})"
            ": run `wandb login` or set WANDB_API_KEY, or log offline (unset WANDB_MODE) and "
            "upload later with `wandb sync OUT/wandb/offline-run-*`")
        assert tree_digest(offline_env) == before


def test_offline_files_stay_under_out(offline_env, monkeypatch):
    """Before: W&B's service wrote its debug logs under the home directory
    (~/.cache/wandb/logs) even offline."""
    from merdg.cli import main

    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR",
                 "WANDB_ARTIFACT_DIR"):
        monkeypatch.delenv(name, raising=False)  # W&B's defaults: under the home directory
    out = offline_env / "run"
    assert main(_tiny_cli("train", out, "--target", "d1")) == 0
    assert len(run_files(out)) == 1 and list((out / "wandb" / "cache").rglob("*.log"))
    outside = [p for p in offline_env.rglob("*") if p.is_file()
               and not p.is_relative_to(out) and not p.is_relative_to(offline_env / "cache")]
    assert outside == []  # (the fixture also checks that the home directory stayed empty)


def test_project_entity_and_group_are_options_and_bench_groups_by_experiment(offline_env,
                                                                           monkeypatch):
    """Before: the project could only be set through $WANDB_PROJECT and bench runs were not
    grouped."""
    from merdg.cli import main

    monkeypatch.setenv("MPLCONFIGDIR", str(offline_env / "matplotlib"))  # the bench's figure
    out = offline_env / "my-bench"
    assert main(_tiny_cli("bench", out, "--targets", "d1", "--algorithms", "ERM,MERDG",
                          "--seeds", "1", "--wandb-project", "mmdg", "--wandb-entity",
                          "lab")) == 0
    runs = [next(r.run for r in read_wandb_records(path)
                 if r.WhichOneof("record_type") == "run")
            for path in sorted(out.rglob("offline-run-*/run-*.wandb"))]
    assert len(runs) == 2
    assert {(r.project, r.entity, r.run_group) for r in runs} == {("mmdg", "lab", "my-bench")}
    assert {r.display_name for r in runs} == {"ERM m0+m1+m2 d1 seed0", "MERDG m0+m1+m2 d1 seed0"}
    single = offline_env / "single"
    assert main(_tiny_cli("train", single, "--target", "d1", "--wandb-group", "ablation")) == 0
    [path] = run_files(single)
    run = next(r.run for r in read_wandb_records(path) if r.WhichOneof("record_type") == "run")
    assert (run.project, run.run_group) == ("merdg", "ablation")
