"""Target evaluation with a modality missing: records, summary, report table, CLI."""

import json

import pytest

from merdg.cli import main
from merdg.experiments.results import load_rows, missing_modality_table, time_table
from merdg.run.config import RunConfig
from merdg.run.records import read_jsonl
from merdg.run.training import train

OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]


def run(tmp_path, tiny_hparams, tiny_synthetic_options, algorithm, mode, name="run"):
    config = RunConfig(dataset="synthetic", target="d1", algorithm=algorithm,
                       hparams=tiny_hparams, dataset_options=tiny_synthetic_options,
                       out_dir=str(tmp_path / name), eval_missing=mode)
    summary = train(config, progress=False)
    return summary, list(read_jsonl(tmp_path / name / "records.jsonl"))


def test_every_epoch_zero_filled_and_translated(tmp_path, tiny_hparams, tiny_synthetic_options):
    summary, records = run(tmp_path, tiny_hparams, tiny_synthetic_options, "SimMMDG", "every")
    for rec in records:
        assert set(rec["target"]["missing"]) == {"m0", "m1", "m2"}
        assert set(rec["target"]["missing_translated"]) == {"m0", "m1", "m2"}
        assert all(0 <= a <= 1 for a in rec["target"]["missing"].values())
    chosen = summary["selection"]["source_val"]
    assert set(chosen["target_missing_acc"]) == {"m0", "m1", "m2"}
    rows = load_rows(tmp_path)
    table = missing_modality_table(rows)
    assert "| m0+m1+m2 | SimMMDG |" in table and "no m2" in table
    assert "| SimMMDG |" in missing_modality_table(rows, kind="missing_translated")
    assert "| m0+m1+m2 | SimMMDG | 1 |" in time_table(rows)


def test_last_epoch_only_and_none(tmp_path, tiny_hparams, tiny_synthetic_options):
    _, records = run(tmp_path, tiny_hparams, tiny_synthetic_options, "ERM", "last")
    assert "missing" not in records[0]["target"] and "missing" in records[-1]["target"]
    assert "missing_translated" not in records[-1]["target"]  # ERM has no translators
    _, records = run(tmp_path, tiny_hparams, tiny_synthetic_options, "ERM", "none", "none")
    assert all("missing" not in r["target"] for r in records)
    with pytest.raises(ValueError, match="eval_missing"):
        run(tmp_path, tiny_hparams, tiny_synthetic_options, "ERM", "always", "bad")


def test_bench_report_has_missing_modality_and_time_tables(tmp_path):
    tiny = json.dumps({"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16})
    out = tmp_path / "bench"
    assert main(["bench", "--dataset", "synthetic", "--algorithms", "ERM,MOOSA+MER", "--seeds",
                 "1", "--targets", "d0", "--hparams", tiny, "--eval-missing", "every",
                 "--out", str(out), *OPTS]) == 0
    report = (out / "report.md").read_text()
    assert "one modality missing (zero-filled" in report and "| m0+m1+m2 | MOOSA+MER |" in report
    assert "cross-modal translation" in report and "seconds per run" in report


def test_missing_modality_passes_do_not_change_the_training(tmp_path, tiny_hparams,
                                                            tiny_synthetic_options):
    # every DataLoader pass draws from the global generator; dropout (0.5 in the fusion head)
    # then sees other masks unless the optional passes restore the generator
    assert tiny_hparams.get("dropout", 0.5) > 0
    _, plain = run(tmp_path, tiny_hparams, tiny_synthetic_options, "SimMMDG", "none", "plain")
    _, extra = run(tmp_path, tiny_hparams, tiny_synthetic_options, "SimMMDG", "every", "extra")
    assert len(plain) == len(extra) >= 2
    for a, b in zip(plain, extra):
        assert a["train"] == b["train"]
        assert (a["val"]["acc"], a["target"]["acc"]) == (b["val"]["acc"], b["target"]["acc"])
