"""Target evaluation with a modality missing (``--eval-missing``): the evaluation of the
selected model, its row columns, the report table, the CLI."""

import json

import pytest

import run_outputs
from merdg.cli import main
from merdg.evaluators import MissingModality, predict
from merdg.experiments.report import ExperimentView
from merdg.experiments.results import load_rows
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.saved import load_saved_run
from merdg.run.training import train

OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]


def run(tmp_path, tiny_hparams, tiny_synthetic_options, algorithm, missing, name="run"):
    config = RunConfig(dataset="synthetic", target="d1", algorithm=algorithm,
                       hparams=tiny_hparams, dataset_options=tiny_synthetic_options,
                       out_dir=str(tmp_path / name),
                       evaluations={"missing": {}} if missing else {})
    return train(config, progress=False)


def test_zero_filled_and_translated_on_the_selected_model(tmp_path, tiny_hparams,
                                                         tiny_synthetic_options):
    summary = run(tmp_path, tiny_hparams, tiny_synthetic_options, "SimMMDG", True)
    chosen = summary["selection"]["source_val"]
    columns = run_outputs.evaluation(tmp_path / "run", "missing")["columns"]
    assert set(columns) == {f"target_{k}/{m}" for k in ("missing", "missing_translated")
                            for m in ("m0", "m1", "m2")}
    assert all(0 <= a <= 1 for a in columns.values())
    assert {k: chosen[k] for k in columns} == columns  # the summary's row holds them
    # an independent pass of the saved weights with each modality zero-filled
    saved = load_saved_run(tmp_path / "run")
    assert saved.model["epoch"] == chosen["epoch"]
    for m in ("m0", "m1", "m2"):
        zeroed = predict(saved.algorithm, saved.data.target_set, saved.device, zero=[m])
        assert columns[f"target_missing/{m}"] == zeroed.accuracy()
    rows = load_rows(tmp_path)
    report = "\n".join(MissingModality.reporter().report(ExperimentView(rows)))
    assert "| m0+m1+m2 | SimMMDG |" in report and "no m2" in report
    assert "cross-modal translation" in report


def test_no_translation_without_translators_and_nothing_unless_asked(
        tmp_path, tiny_hparams, tiny_synthetic_options):
    run(tmp_path, tiny_hparams, tiny_synthetic_options, "ERM", True)
    columns = run_outputs.evaluation(tmp_path / "run", "missing")["columns"]
    assert set(columns) == {f"target_missing/{m}" for m in ("m0", "m1", "m2")}  # ERM
    run(tmp_path, tiny_hparams, tiny_synthetic_options, "ERM", False, "none")
    assert [e["evaluator"] for e in RunDir(tmp_path / "none").read_evaluations()
            ] == ["selective"]  # only what every run evaluates
    with pytest.raises(ValueError, match=r"evaluator 'missing' has no setting \['when'\]"):
        train(RunConfig(dataset="synthetic", target="d1", hparams=tiny_hparams,
                        dataset_options=tiny_synthetic_options,
                        evaluations={"missing": {"when": "always"}}), progress=False)


def test_bench_report_has_missing_modality_and_time_tables(tmp_path):
    tiny = json.dumps({"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16})
    out = tmp_path / "bench"
    assert main(["bench", "--dataset", "synthetic", "--algorithms", "ERM,MOOSA+MER", "--seeds",
                 "1", "--targets", "d0", "--hparams", tiny, "--eval-missing",
                 "--out", str(out), *OPTS]) == 0
    report = (out / "report.md").read_text()
    assert "one modality missing (zero-filled" in report and "| m0+m1+m2 | MOOSA+MER |" in report
    assert "cross-modal translation" in report and "seconds per run" in report
    assert "| m0+m1+m2 | MOOSA+MER | 1 |" in report  # one run in the timing table


def test_missing_modality_passes_do_not_change_the_training(tmp_path, tiny_hparams,
                                                            tiny_synthetic_options):
    # every DataLoader pass draws from the global generator; dropout (0.5 in the fusion head)
    # then sees other masks unless the optional passes restore the generator
    assert tiny_hparams.get("dropout", 0.5) > 0
    run(tmp_path, tiny_hparams, tiny_synthetic_options, "SimMMDG", False, "plain")
    run(tmp_path, tiny_hparams, tiny_synthetic_options, "SimMMDG", True, "extra")
    plain, extra = run_outputs.records(tmp_path / "plain"), run_outputs.records(tmp_path / "extra")
    assert len(plain) == len(extra) >= 2
    assert plain == extra
