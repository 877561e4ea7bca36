"""Evaluating trained models: ``merdg evaluate`` on saved weights, benches and sweeps that only
evaluate their finished runs, and every setting x evaluator x algorithm x reference through
bench, sweep, collect and evaluate."""

import csv
import hashlib
import json

import pytest

import run_outputs
from merdg.cli import main
from merdg.experiments.results import load_rows
from merdg.run.directory import RunDir
from merdg.run.records import read_jsonl

OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]
TINY = json.dumps({"epochs": 3, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16})
# another random benchmark: the OOD data of the evaluations below
OOD = ["--ood-dataset", "synthetic", "--ood-dataset-option", "data_seed=7",
       "--ood-dataset-option", "samples_per_domain=40", "--ood-dataset-option", "n_classes=3"]


def digests(root):
    """sha256 of every file a training wrote under ``root`` (not the evaluations, the lock,
    and a job's description and log, which a launch that only evaluates writes)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
            and RunDir.EVALUATIONS not in p.parts
            and p.name not in (RunDir.LOCK, RunDir.JOB, RunDir.LOG)}


def train_run(out, *extra):
    assert main(["train", "--dataset", "synthetic", "--target", "d1", "--algorithm", "MERDG",
                 "--hparams", TINY, *OPTS, "--out", str(out), *extra]) == 0


def test_evaluate_a_trained_run_without_touching_its_training_files(tmp_path, capsys):
    out = tmp_path / "run"
    train_run(out)
    before = digests(out)
    chosen = json.loads((out / "summary.json").read_text())["selection"]["source_val"]
    assert main(["evaluate", str(out), "--corruptions", "gaussian_noise", "--severities", "1",
                 *OOD]) == 0
    printed = capsys.readouterr().out
    assert digests(out) == before  # records.jsonl, summary.json, config.json, model.pt ...
    # the clean accuracy of the saved weights is the table's, to the last digit
    assert f"target acc {100 * chosen['target_acc']:.2f}" in printed
    corruptions = run_outputs.evaluation(out, "corruptions")
    ood = run_outputs.evaluation(out, "ood")
    assert corruptions["model"]["epoch"] == ood["model"]["epoch"] == chosen["epoch"]
    assert corruptions["model"]["file"] == "model.pt"
    assert set(corruptions["details"]["plan"]) == {f"m{i}:gaussian_noise:1" for i in range(3)}
    assert 0 <= ood["columns"]["ood_auroc_msp"] <= 1 and ood["details"]["n_out"] == 160
    assert ood["details"]["ood"] == "synthetic (d0, d1, d2, d3)"
    # collect picks the evaluations up, next to the training's clean columns
    assert main(["collect", str(out), "--out", str(tmp_path / "tables")]) == 0
    rows = [r for r in csv.DictReader((tmp_path / "tables" / "results.csv").open())
            if r["selection"] == "source_val"]
    assert float(rows[0]["ood_auroc_msp"]) == ood["columns"]["ood_auroc_msp"]
    assert float(rows[0]["target_acc"]) == chosen["target_acc"]
    assert float(rows[0]["target_corruption_acc"]) == corruptions["columns"][
        "target_corruption_acc"]
    assert (tmp_path / "tables" / "robustness.md").exists()
    # again: nothing new; --force evaluates again, to the same numbers
    assert main(["evaluate", str(out), "--corruptions", "gaussian_noise", "--severities",
                 "1"]) == 0
    assert "evaluated nothing new; already there: 2" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--corruptions", "gaussian_noise", "--severities", "1",
                 "--force"]) == 0
    assert run_outputs.evaluation(out, "corruptions")["columns"] == corruptions["columns"]
    assert digests(out) == before


def test_saved_weights_are_the_selected_epochs_and_the_last_on_request(tmp_path):
    out = tmp_path / "run"
    train_run(out, "--save-model", "selected+last")
    summary = json.loads((out / "summary.json").read_text())
    records = list(read_jsonl(out / RunDir.RECORDS))
    selected, last = summary["selection"]["source_val"]["epoch"], len(records)
    saved = RunDir(out).read_model()
    assert saved["epoch"] == selected and saved["rule"] == "source_val"
    models = {m["rule"]: m for m in summary["models"]}
    assert models["source_val"]["digest"] == saved["digest"]
    if selected != last:  # the last epoch's weights too
        assert RunDir(out).read_model("last")["epoch"] == last
        assert (out / RunDir.LAST_MODEL).exists() and models["last"]["epoch"] == last
    else:  # one file for both
        assert not (out / RunDir.LAST_MODEL).exists() and "last" not in models
        assert RunDir(out).model_file_of("last") == out / RunDir.MODEL
    assert main(["evaluate", str(out), "--model", "last", "--eval-missing"]) == 0
    missing = [e for e in RunDir(out).read_evaluations() if e["evaluator"] == "missing"]
    assert [e["model"]["epoch"] for e in missing] == [last]


def test_what_evaluate_refuses(tmp_path, capsys):
    out = tmp_path / "run"
    train_run(out, "--save-model", "none")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--eval-missing"]) == 2
    err = capsys.readouterr().err
    assert "saved no weights of its selected epoch; train with --save-model selected" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    other = tmp_path / "other"
    train_run(other)
    capsys.readouterr()
    assert main(["evaluate", str(other), "--ood-domains", "d1"]) == 2
    assert "--ood-domains: d1 is the run's target (in-distribution)" in capsys.readouterr().err
    assert main(["evaluate", str(other), "--corruptions", "fog"]) == 2
    assert "--corruptions: unknown corruption(s) ['fog']" in capsys.readouterr().err
    assert main(["evaluate", str(other), "--ood-dataset", "synthetic", "--ood-dataset-option",
                 "noise_dim=3"]) == 2
    assert ("--ood-dataset synthetic: sample shapes differ from the run's: m0 (" in
            capsys.readouterr().err)
    assert [e["evaluator"] for e in RunDir(other).read_evaluations()] == ["selective"]


def test_a_finished_bench_evaluates_without_training(tmp_path, capsys):
    out = tmp_path / "bench"
    bench = ["bench", "--dataset", "synthetic", "--algorithms", "ERM", "MERDG", "--seeds", "1",
             "--targets", "d0", "d1", "--hparams", TINY, *OPTS, "--out", str(out)]
    assert main(bench) == 0
    runs = out / "runs"
    before = digests(runs)
    capsys.readouterr()
    assert main([*bench, "--corruptions", "gaussian_noise", "--severities", "1"]) == 0
    printed = capsys.readouterr().out
    assert "merdg bench: 4 finished runs evaluated without training" in printed
    assert digests(runs) == before  # records, summaries, weights: as the training left them
    robustness = (out / "robustness.md").read_text()
    assert robustness in printed and "| m0+m1+m2 | MERDG | ERM | 2 |" in robustness
    experiment = json.loads((out / "experiment.json").read_text())
    assert experiment["skipped"] == 0 and experiment["status"]["done"] == 4
    # once more: everything is there
    assert main([*bench, "--corruptions", "gaussian_noise", "--severities", "1"]) == 0
    assert json.loads((out / "experiment.json").read_text())["skipped"] == 4


def test_the_single_source_robustness_bench_of_the_issue(tmp_path, capsys):
    """Two single-source runs share (target, seed): the robustness table pairs by column."""
    out = tmp_path / "bench"
    assert main(["bench", "--dataset", "synthetic", "--dataset-option", "samples_per_domain=120",
                 "--algorithms", "ERM", "MERDG", "--seeds", "1", "--targets", "d0",
                 "--setting", "single", "--corruptions", "gaussian_noise", "--severities", "1",
                 "3", "--hparams", '{"epochs": 1}', "--out", str(out)]) == 0
    robustness = (out / "robustness.md").read_text()
    assert "single-source" in robustness and "| m0+m1+m2 | MERDG | ERM | 3 |" in robustness


@pytest.mark.parametrize("setting", ["multi", "single", "all"])
def test_every_setting_with_every_evaluator_through_bench_sweep_collect_and_evaluate(
        setting, tmp_path, capsys):
    """Open set, missing modalities and corruptions, two algorithms, a reference that is not
    ERM: bench, collect, then `merdg evaluate` with OOD data on every run and collect again;
    a sweep of the same evaluations (and OOD data from the start) with both settings."""
    out = tmp_path / "bench"
    one_epoch = json.dumps({**json.loads(TINY), "epochs": 1})
    common = ["--dataset", "synthetic", *OPTS, "--algorithms", "ERM", "SimMMDG", "--targets",
              "d0", "--setting", setting, "--hparams", one_epoch, "--open-set", "--known-classes",
              "0,1", "--eval-missing", "--corruptions", "scaling", "--severities", "2",
              "--reference", "SimMMDG"]
    assert main(["bench", *common, "--seeds", "1", "--out", str(out)]) == 0
    table, report = (out / "table.md").read_text(), (out / "report.md").read_text()
    robustness = (out / "robustness.md").read_text()
    columns = {"multi": ["d0"], "single": ["d1->d0", "d2->d0", "d3->d0"],
               "all": ["d0", "d1->d0", "d2->d0", "d3->d0"]}[setting]
    for column in columns:
        assert f"| {column} |" in table or f" {column} |" in table
    assert "paired difference in H-score against SimMMDG" in table
    assert "| m0+m1+m2 | ERM | SimMMDG |" in table and "| m0+m1+m2 | ERM | SimMMDG |" in robustness
    for section in ("## Open set", "## Selective prediction on the target",
                    "one modality missing (zero-filled", "imputed by the method's cross-modal",
                    "under corruptions"):
        assert section in report, section
    if setting == "all":  # one table per setting, the robustness table too
        assert robustness.count("*synthetic (") >= 2
    capsys.readouterr()
    assert main(["collect", str(out), "--out", str(tmp_path / "collected")]) == 0
    assert (tmp_path / "collected" / "table.md").read_text() == table
    assert (tmp_path / "collected" / "robustness.md").read_text() == robustness
    assert main(["evaluate", str(out), *OOD]) == 0
    rows = load_rows(out)
    chosen = [r for r in rows if r["selection"] == "source_val"]
    assert len(chosen) == 2 * len(columns)
    assert all(r.get("ood_auroc_msp") is not None and r.get("h_score") is not None
               and r.get("target_missing/m0") is not None for r in chosen)
    assert main(["collect", str(out), "--out", str(tmp_path / "again")]) == 0
    assert "## Out-of-distribution" not in report  # a report is written by bench and sweep
    if setting != "all":
        return  # the sweep: once, with every setting
    sweep = tmp_path / "sweep"
    assert main(["sweep", *common, "--trials", "1", "--seeds", "1", *OOD,
                 "--out", str(sweep)]) == 0
    sweep_rows = [r for r in load_rows(sweep) if r["selection"] == "source_val"]
    assert sweep_rows and all(r.get("ood_fpr95_energy") is not None for r in sweep_rows)
    assert "## Out-of-distribution detection" in (sweep / "report.md").read_text()
