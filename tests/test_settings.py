"""The settings of docs/settings.md wired end to end: single-source pairs, open-set runs, the
selective-prediction columns and the paired-difference tables (bench, sweep, collect)."""

import csv
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from merdg.cli import main
from merdg.datasets.base import TensorSamples
from merdg.evaluators import OpenSet, Predictions
from merdg.evaluators.clean import split_metrics
from merdg.experiments.jobs import job_hash
from merdg.experiments.plan import ExperimentConfig, Task, run_config, tasks
from merdg.experiments.report import rows_to_csv, write_tables
from merdg.experiments.results import load_rows, paired_rows, paired_tables
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.records import read_jsonl, run_rows
from merdg.run.training import train

TINY = {"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
OPTIONS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]
BENCH = ["bench", "--dataset", "synthetic", "--hparams", json.dumps(TINY), *OPTIONS,
         "--threads", "1"]
SELECTIVE = ["aurc_msp", "aurc_energy", "auroc_msp", "auroc_energy", "fpr95_msp",
             "fpr95_energy", "ece"]


# --- single source ------------------------------------------------------------------------

def test_single_source_tasks_and_run_directories(tmp_path):
    base = RunConfig(dataset="synthetic", hparams={"epochs": 1})
    domains = ["d0", "d1", "d2"]

    def experiment(setting, layout="named"):
        return ExperimentConfig(base=base, out_dir=str(tmp_path), algorithms=["ERM"],
                                modality_sets=[["m0"]], targets=["d0"], setting=setting,
                                layout=layout)

    assert [t.sources for t in tasks(experiment("multi"), domains, [])] == [None]
    assert [t.sources for t in tasks(experiment("single"), domains, [])] == [("d1",), ("d2",)]
    assert [t.sources for t in tasks(experiment("all"), domains, [])] == [None, ("d1",),
                                                                           ("d2",)]
    single = run_config(experiment("all"), Task(("m0",), "ERM", "d0", ("d2",)), 0, 1)
    multi = run_config(experiment("all"), Task(("m0",), "ERM", "d0"), 0, 1)
    assert single.sources == ["d2"] and multi.sources is None
    assert single.out_dir == str(tmp_path / "runs" / "m0" / "ERM" / "d2-to-d0" / "seed1")
    assert multi.out_dir == str(tmp_path / "runs" / "m0" / "ERM" / "d0" / "seed1")  # as before
    # hashed layout: the sources are in the identity; multi-source hashes are those of v0.2
    hashed = run_config(experiment("all", "hashed"), Task(("m0",), "ERM", "d0", ("d2",)), 0, 1)
    assert hashed.out_dir.endswith(job_hash(hashed)) and "sources" in hashed.identity()
    old = RunConfig(dataset="synthetic", target="d0", algorithm="ERM", modalities=["m0", "m1"],
                    seed=1, hparams_seed=2, split_seed=0, hparams={"epochs": 1})
    assert job_hash(old) == "391bcb37b2d04abfa56c276c159af959"
    with pytest.raises(ValueError, match="--setting must be one of multi, single, all"):
        experiment("pairs").validate()


def test_single_and_multi_source_tables_and_collect(tmp_path, capsys):
    out = tmp_path / "bench"
    args = [*BENCH, "--algorithms", "ERM", "MERDG", "--targets", "d0", "--seeds", "2",
            "--setting", "all", "--reference", "MERDG", "--out", str(out)]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    multi, single = table.split("**synthetic (single-source, source->target): target")[:2]
    assert "| modalities | algorithm | d0 | avg |" in multi
    assert "| modalities | algorithm | d1->d0 | d2->d0 | d3->d0 | avg |" in single
    # the average column averages every pair within a seed (equal seeds: mean of the cells)
    cells = list(csv.DictReader((out / "cells.csv").open()))
    single_erm = {c["target"]: float(c["mean"]) for c in cells
                  if "single-source" in c["settings"] and c["algorithm"] == "ERM"}
    assert set(single_erm) == {"d1->d0", "d2->d0", "d3->d0", "avg"}
    assert single_erm["avg"] == pytest.approx(np.mean([single_erm[k] for k in single_erm
                                                       if k != "avg"]), abs=2e-6)
    # paired differences against the reference of --reference, in each table
    assert table.count("paired difference in target accuracy against MERDG") == 2
    assert "| m0+m1+m2 | ERM | MERDG | 2 |" in table  # multi: d0 x 2 seeds
    assert "| m0+m1+m2 | ERM | MERDG | 6 |" in table  # single: 3 pairs x 2 seeds
    assert r"d1$\rightarrow$d0" in (out / "table.tex").read_text()
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"sources", "setting", *SELECTIVE} <= set(header)
    # collect reads the reference from experiment.json and prints the same tables
    assert main(["collect", str(out), "--out", str(tmp_path / "collected")]) == 0
    assert (tmp_path / "collected" / "table.md").read_text() == table
    with pytest.raises(ValueError, match="--reference SimMMDG: no finished run"):
        write_tables(out, tmp_path / "other", reference="SimMMDG")


def test_reference_errors_and_notes(tmp_path, capsys):
    assert main([*BENCH, "--algorithms", "ERM", "MERDG", "--reference", "SimMMDG",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--reference SimMMDG is not among --algorithms ERM MERDG" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before any work
    rows = [{"dataset": "toy", "settings": "{}", "modalities": "a", "algorithm": algo,
             "target": "A", "seed": 0, "hparams_seed": 0, "selection": "source_val",
             "val_acc": 0.5, "target_acc": 0.5, "path": algo} for algo in ("MERDG", "CMRF")]
    [table] = paired_tables(rows, "ERM")
    assert table.markdown() == ("No paired differences here: the reference algorithm ERM has "
                                "no runs in this table (choose one with --reference).\n")


def row(algo, target, seed, acc, trial=0):
    return {"dataset": "toy", "settings": "{}", "modalities": "a", "algorithm": algo,
            "target": target, "seed": seed, "hparams_seed": trial, "selection": "source_val",
            "val_acc": 0.5, "val_loss": 1.0, "target_acc": acc, "path": f"{algo}{target}{seed}",
            "setting": "multi"}


def test_paired_differences_by_hand():
    """MERDG - ERM = 0.1, 0.2, 0.0, 0.1 on (A, 0), (A, 1), (B, 0), (B, 1): mean 0.1, sd
    0.081650, t_{0.975, 3} = 3.182446, half-width 0.129923: [-0.0299, 0.2299], within noise."""
    erm = [row("ERM", "A", 0, 0.5), row("ERM", "A", 1, 0.6), row("ERM", "B", 0, 0.7),
           row("ERM", "B", 1, 0.4)]
    mer = [row("MERDG", "A", 0, 0.6), row("MERDG", "A", 1, 0.8), row("MERDG", "B", 0, 0.7),
           row("MERDG", "B", 1, 0.5)]
    assert {(r["target"], r["seed"]) for r in paired_rows(erm + mer)} == {
        ("A", "search"), ("A", 1), ("B", "search"), ("B", 1)}
    [table] = paired_tables(erm + mer, "ERM")
    [result] = table.results
    assert result.n_pairs == 4 and result.mean == pytest.approx(0.1)
    assert (result.t_low, result.t_high) == pytest.approx((-0.029923, 0.229923), abs=1e-6)
    assert result.verdict() == "within noise"
    assert "| a | MERDG | ERM | 4 | +10.00 | [-2.99, +22.99] |" in table.markdown()
    assert "- MERDG (a): 10.00 points better than ERM on average over 4 pairs, CI " \
           "[-2.99, +22.99]: within noise." in table.words()


# --- selective prediction and open set ------------------------------------------------------

def test_selective_metrics_reach_the_evaluation_and_results_csv(tmp_path, tiny_hparams,
                                                                tiny_synthetic_options):
    train(RunConfig(dataset="synthetic", target="d1", hparams=tiny_hparams,
                    dataset_options=tiny_synthetic_options, out_dir=str(tmp_path / "run")),
          progress=False)
    records = list(read_jsonl(tmp_path / "run" / "records.jsonl"))
    [evaluation] = RunDir(tmp_path / "run").read_evaluations()  # every run evaluates them
    assert evaluation["evaluator"] == "selective" and set(evaluation["columns"]) == set(SELECTIVE)
    assert 0.0 <= evaluation["columns"]["aurc_msp"] <= 1.0
    rows = load_rows(tmp_path)
    selected = next(r for r in rows if r["selection"] == "source_val")
    assert selected["epoch"] == evaluation["model"]["epoch"]
    assert selected["auroc_energy"] == evaluation["columns"]["auroc_energy"]
    # an undefined metric (NaN, null in the evaluation) is an empty cell of results.csv
    evaluation["columns"]["auroc_msp"] = None
    undefined = [r for r in run_rows(records, [evaluation]) if r["selection"] == "source_val"]
    assert undefined[0]["auroc_msp"] is None
    write_tables(tmp_path, tmp_path / "tables")
    written = list(csv.DictReader((tmp_path / "tables" / "results.csv").open()))
    assert all(set(SELECTIVE) <= set(r) for r in written)
    assert {r["auroc_msp"] for r in rows_to_csv_rows(undefined)} == {""}


def rows_to_csv_rows(rows):
    return list(csv.DictReader(io.StringIO(rows_to_csv(rows))))


def predictions(logits, labels):
    logits = np.asarray(logits, dtype=np.float32)
    return Predictions(logits, logits.argmax(1), np.asarray(labels), {}, 0.0)


def test_open_set_metrics_of_predictions_by_hand():
    """Source val MSPs 0.9, 0.8, 0.7, 0.6 -> the threshold accepting 95% of them is 0.6
    (ceil(0.95 * 4) = 4th largest). Target: two known samples (one right with MSP 0.9, one
    right with MSP 0.5: rejected), two unknown (MSP 0.55 rejected, 0.95 accepted):
    known_acc 1/2, unknown_acc 1/2, H-score 1/2."""
    def two_class(p):  # logits with softmax (p, 1 - p)
        return [math.log(p), math.log(1 - p)]
    source = predictions([two_class(p) for p in (0.9, 0.8, 0.7, 0.6)], [0, 0, 0, 0])
    target = predictions([two_class(0.9), two_class(0.5), two_class(0.55), two_class(0.95)],
                         [0, 0, -1, -1])
    context = SimpleNamespace(target_predictions=lambda: target,
                              pooled_val_predictions=lambda: source)
    scores = OpenSet.reporter().measure(context).columns
    assert scores["open_set_threshold"] == pytest.approx(0.6, abs=1e-6)
    assert (scores["known_acc"], scores["unknown_acc"], scores["h_score"]) == pytest.approx(
        (0.5, 0.5, 0.5))
    metrics = split_metrics(target)  # accuracy over the known samples, no rejection
    assert metrics["acc"] == 1.0 and metrics["n"] == 2 and metrics["n_unknown"] == 2
    assert scores["oracle_h_score"] >= scores["h_score"]  # tuned on the target


def test_open_set_views_relabel_and_filter():
    from merdg.datasets.base import _Subset
    from merdg.datasets.open_set import known_class_part, open_set_part, part_labels

    part = TensorSamples({"m": torch.arange(6.0).unsqueeze(1)}, torch.tensor([0, 1, 2, 3, 1, 2]))
    known = known_class_part(part, [3, 1])  # known: 1 -> 0, 3 -> 1
    assert isinstance(known, TensorSamples) and known.y.tolist() == [0, 1, 0]
    assert known.x["m"].flatten().tolist() == [1.0, 3.0, 4.0]
    assert open_set_part(part, [3, 1]).y.tolist() == [-1, 0, -1, 1, 0, -1]
    generic = _Subset(part, [5, 3, 0])  # not a TensorSamples: relabelled item by item
    assert part_labels(generic) == [2, 3, 0]
    view = known_class_part(generic, [3, 1])
    assert len(view) == 1 and view[0][1] == 1 and view[0][0]["m"].item() == 3.0
    assert [open_set_part(generic, [0])[i][1] for i in range(3)] == [-1, -1, 0]
    with pytest.raises(ValueError, match="no sample of the known classes"):
        known_class_part(part, [5])


def test_open_set_run_end_to_end(tmp_path, tiny_hparams, tiny_synthetic_options, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--target", "d0", "--open-set",
                 "--known-classes", "class0,class2", "--hparams", json.dumps(tiny_hparams),
                 *[f"--dataset-option={k}={v}" for k, v in tiny_synthetic_options.items()],
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["selection"]
    records = list(read_jsonl(out / "records.jsonl"))
    target = records[-1]["target"]
    # 60 target samples, 20 per class: class1 is unknown
    assert target["n"] == 40 and target["n_unknown"] == 20
    chosen = summary["source_val"]
    open_set = RunDir(out).read_evaluations()
    assert [e["evaluator"] for e in open_set] == ["open_set", "selective"]
    assert {"h_score", "known_acc", "unknown_acc", "open_set_threshold",
            "oracle_h_score"} <= set(chosen) and set(SELECTIVE) <= set(chosen)
    selected = next(r for r in records if r["epoch"] == chosen["epoch"])
    assert chosen["known_acc"] <= selected["target"]["acc"]  # rejection only removes right ones
    assert records[0]["run"]["known_classes"] == ["class0", "class2"]
    assert chosen["h_score"] == open_set[0]["columns"]["h_score"]
    state = RunDir(out).read_model_state()
    assert state["net.probes.m0.weight"].shape[0] == 2  # one output per known class
    assert records[-1]["val"]["n"] < 36  # the known classes of the 3 x 12 held-out samples


def test_open_set_bench_with_moosa_os_and_its_errors(tmp_path, capsys):
    out = tmp_path / "bench"
    args = [*BENCH, "--algorithms", "ERM", "MOOSA-OS", "--targets", "d0", "--seeds", "1",
            "--open-set", "--known-classes", "0,1", "--out", str(out)]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "target accuracy on the known classes (no rejection)" in table
    assert "H-score (unknowns rejected below the source-validation threshold)" in table
    assert "paired difference in H-score against ERM" in table
    assert "| m0+m1+m2 | MOOSA-OS |" in table
    report = (out / "report.md").read_text()
    assert "## Open set" in report and "## Selective prediction on the target" in report
    assert "target-tuned threshold (oracle)" in report
    capsys.readouterr()
    # a closed-set MOOSA-OS, and an open-set run without a class split, stop before any work
    assert main([*BENCH, "--algorithms", "MOOSA-OS", "--out", str(tmp_path / "a")]) == 2
    assert "MOOSA-OS is an open-set method; run it with --open-set" in capsys.readouterr().err
    assert main([*BENCH, "--open-set", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "dataset synthetic has no published open-set class split; choose the known " \
           "classes with --known-classes" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match=r"known_classes \(--known-classes\) .* needs "
                                         "--open-set"):
        RunConfig(dataset="synthetic", known_classes=["0"])


def test_single_source_sweep_pairs_the_chosen_trials(tmp_path):
    """A fair sweep with one random trial: each task's chosen trial has its search run at
    seed 0 or 1 (its trial index), so pairs are matched by replicate ("search"), not by seed."""
    out = tmp_path / "sweep"
    assert main(["sweep", "--dataset", "synthetic", "--hparams", json.dumps(TINY), *OPTIONS,
                 "--algorithms", "ERM", "MERDG", "--targets", "d0", "--setting", "single",
                 "--trials", "1", "--seeds", "1", "--out", str(out), "--threads", "1"]) == 0
    rows = load_rows(out)
    assert {r["sources"] for r in rows} == {"d1", "d2", "d3"} and len(rows) == 12 * 3
    assert {r["setting"] for r in rows} == {"single"}
    table = (out / "table.md").read_text()
    assert "| m0+m1+m2 | MERDG | ERM | 3 |" in table  # one replicate for each of 3 pairs
    assert json.loads((out / "experiment.json").read_text())["experiment"]["setting"] == "single"
