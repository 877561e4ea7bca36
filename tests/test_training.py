"""One run end to end: records, selection, determinism, errors."""

import json

import pytest

from merdg.run.config import RunConfig
from merdg.run.records import read_jsonl
from merdg.run.selection import select_epoch
from merdg.run.training import train


def tiny_config(tmp_path, tiny_hparams, tiny_synthetic_options, **kw):
    return RunConfig(dataset="synthetic", target="d1", algorithm=kw.pop("algorithm", "MERDG"),
                     hparams=tiny_hparams, dataset_options=tiny_synthetic_options,
                     out_dir=str(tmp_path), **kw)


def test_run_writes_records_and_summary(tmp_path, tiny_hparams, tiny_synthetic_options):
    summary = train(tiny_config(tmp_path, tiny_hparams, tiny_synthetic_options), progress=False)
    records = list(read_jsonl(tmp_path / "records.jsonl"))
    assert [r["epoch"] for r in records] == [1, 2]
    rec = records[-1]
    assert {"ce", "probe_ce", "mer", "mer_marg/m0", "mer_spec/m2"} <= set(rec["train"])
    assert set(rec["val"]["per_domain"]) == {"d0", "d2", "d3"}
    assert set(rec["target"]["probe_acc"]) == {"m0", "m1", "m2"}
    run = records[0]["run"]  # the run's info, once, in the first record
    assert "run" not in rec
    assert run["config"]["algorithm"] == "MERDG" and run["merdg_version"]
    assert "git" in run and run["hparams"]["epochs"] == 2
    assert (tmp_path / "done").exists()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["selection"]["oracle"]["target_acc"] == max(r["target"]["acc"] for r in records)
    assert summary["selection"]["source_val"]["epoch"] == select_epoch(records)["epoch"]


def test_cpu_runs_are_deterministic(tmp_path, tiny_hparams, tiny_synthetic_options):
    def strip(rs):
        return [{k: v for k, v in r.items() if k not in ("time_s", "run")} for r in rs]

    train(tiny_config(tmp_path / "a", tiny_hparams, tiny_synthetic_options), progress=False)
    train(tiny_config(tmp_path / "b", tiny_hparams, tiny_synthetic_options), progress=False)
    train(tiny_config(tmp_path / "c", tiny_hparams, tiny_synthetic_options, seed=1),
          progress=False)
    a, b, c = (strip(read_jsonl(tmp_path / x / "records.jsonl")) for x in "abc")
    assert a == b
    assert a != c


def test_selection_rules():
    recs = [{"epoch": e, "val": {"acc": v}, "target": {"acc": t}}
            for e, v, t in [(1, 0.5, 0.9), (2, 0.7, 0.4), (3, 0.7, 0.5)]]
    assert select_epoch(recs)["epoch"] == 3  # ties go to the later epoch
    assert select_epoch(recs, "oracle")["epoch"] == 1
    assert select_epoch(recs, "last")["epoch"] == 3
    with pytest.raises(ValueError, match="unknown selection"):
        select_epoch(recs, "best")


def test_bad_config_errors(tmp_path, tiny_hparams, tiny_synthetic_options):
    with pytest.raises(ValueError, match="unknown domains"):
        train(RunConfig(dataset="synthetic", target="d7"), progress=False)
    with pytest.raises(KeyError, match="unknown hparam"):
        train(RunConfig(dataset="synthetic", target="d1", hparams={"lrr": 1}), progress=False)
    with pytest.raises(ValueError, match="also a source"):
        train(RunConfig(dataset="synthetic", target="d1", sources=["d1", "d2"]), progress=False)
