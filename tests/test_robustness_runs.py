"""Corruption robustness wired through runs: options, records, tables, figure, CLI errors.

The corruptions themselves and the views are tested in ``tests/evaluation``; here a run
evaluates its target under them (``--corruptions``, ``--severities``, ``--corruption-seed``,
``--eval-corruptions``) and the result pipeline reports them.
"""

import csv
import io
import json

import pytest

from figure_checks import assert_readable
from merdg.cli import main
from merdg.diagnostics.features import load_run
from merdg.evaluation import CorruptionSpec, corrupted_view, zero_filled
from merdg.experiments.plots import figure_severity_curves
from merdg.experiments.report import robustness_text
from merdg.experiments.results import (
    CORRUPTION_ACC,
    CORRUPTION_RELATIVE,
    load_rows,
    robustness_rule,
    robustness_table,
    severity_curves,
)
from merdg.run.config import RunConfig
from merdg.run.evaluation import evaluate
from merdg.run.records import read_jsonl
from merdg.run.training import train

OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]
TINY = {"epochs": 2, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}


def run(tmp_path, name, options, **settings):
    config = RunConfig(dataset="synthetic", target="d1", hparams=TINY, dataset_options=options,
                       out_dir=str(tmp_path / name), **settings)
    summary = train(config, progress=False)
    return summary, list(read_jsonl(tmp_path / name / "records.jsonl"))


# --- options -------------------------------------------------------------------------------

def test_options_normalize_and_enter_the_identity_only_when_set():
    config = RunConfig(dataset="synthetic", corruptions=["all"], severities=[5, 1, 3])
    assert config.corruptions == "all" and config.severities == [1, 3, 5]
    assert config.identity() == {"dataset": "synthetic", "corruptions": "all",
                                 "severities": [1, 3, 5]}
    plain = RunConfig(dataset="synthetic")
    assert plain.corruptions is None and plain.severities == [1, 2, 3, 4, 5]
    assert plain.identity() == {"dataset": "synthetic"}  # existing job hashes stay valid
    assert RunConfig.from_dict(config.to_dict()) == config


# --- records -------------------------------------------------------------------------------

def test_records_hold_every_planned_evaluation_and_match_a_recomputation(
        tmp_path, tiny_synthetic_options):
    summary, records = run(tmp_path, "run", tiny_synthetic_options, algorithm="MERDG",
                           corruptions=["scaling", "missing"], severities=[1, 5],
                           corruption_seed=3, eval_missing="last", save_model=True)
    assert all("corruptions" not in r["target"] for r in records[:-1])  # default: last epoch
    target = records[-1]["target"]
    assert set(target["corruptions"]) == {"m0", "m1", "m2"}
    for m in ("m0", "m1", "m2"):
        assert {n: sorted(v) for n, v in target["corruptions"][m].items()} == {
            "scaling": ["1", "5"], "missing": ["-"]}
        # "missing" is the zero-filled missing-modality accuracy of --eval-missing
        assert target["corruptions"][m]["missing"]["-"] == target["missing"][m]
    info = records[-1]["run"]["corruptions"]
    assert info["names"] == ["scaling", "missing"] and info["severities"] == [1, 5]
    assert info["seed"] == 3 and info["when"] == "last"
    assert info["plan"][:3] == ["m0:scaling:1", "m0:scaling:5", "m0:missing:-"]
    assert len(info["plan"]) == 9

    # the recorded numbers are what an independent evaluation of the saved weights gives
    loaded = load_run(tmp_path / "run")
    clean = loaded.split("d1", "test")
    assert evaluate(loaded.algorithm, clean, loaded.device)["acc"] == target["acc"]
    by_hand = {}
    for text in info["plan"]:
        m, name, severity = text.split(":")
        spec = CorruptionSpec(m, name, None if severity == "-" else int(severity))
        view = corrupted_view(loaded.dataset, clean, spec, seed=3)
        by_hand[text] = evaluate(loaded.algorithm, view, loaded.device,
                                 zero=zero_filled(spec))["acc"]
        assert target["corruptions"][m][name][severity] == by_hand[text], text
    robustness = target["robustness"]
    assert robustness["mean_corruption_acc"] == pytest.approx(sum(by_hand.values()) / 9)
    assert robustness["relative"] == pytest.approx(robustness["mean_corruption_acc"]
                                                   / target["acc"])
    assert robustness["per_severity"]["5"] == pytest.approx(
        sum(by_hand[f"{m}:scaling:5"] for m in ("m0", "m1", "m2")) / 3)
    assert robustness["time_s"] > 0
    assert summary["selection"]["last"]["target_mean_corruption_acc"] == pytest.approx(
        robustness["mean_corruption_acc"])

    rows = [r for r in load_rows(tmp_path) if r["selection"] == "last"]
    assert rows[0][CORRUPTION_ACC] == robustness["mean_corruption_acc"]
    assert rows[0][CORRUPTION_RELATIVE] == robustness["relative"]
    assert rows[0]["target_corruption/m2:scaling:5"] == by_hand["m2:scaling:5"]
    assert rows[0]["target_corruption_severity/1"] == robustness["per_severity"]["1"]
    assert rows[0]["target_corruption_modality/m0"] == robustness["per_modality"]["m0"]


def test_corruption_passes_do_not_change_the_training(tmp_path, tiny_synthetic_options):
    # every DataLoader pass draws from the global generator; dropout (0.5 in the fusion head)
    # would see other masks unless the optional passes restore it
    _, plain = run(tmp_path, "plain", tiny_synthetic_options, algorithm="SimMMDG")
    _, extra = run(tmp_path, "extra", tiny_synthetic_options, algorithm="SimMMDG",
                   corruptions="all", severities=[2, 4], eval_corruptions="every")
    assert len(plain) == len(extra) == 2
    for a, b in zip(plain, extra):
        assert "corruptions" in b["target"] and "corruptions" not in a["target"]
        assert a["train"] == b["train"] and a["val"] == b["val"]
        corrupted = {"corruptions", "robustness"}
        assert a["target"] == {k: v for k, v in b["target"].items() if k not in corrupted}


def test_the_corruption_seed_fixes_the_samples(tmp_path, tiny_synthetic_options):
    spec = {"corruptions": ["spikes"], "severities": [5]}
    _, a = run(tmp_path, "a", tiny_synthetic_options, **spec)
    _, b = run(tmp_path, "b", tiny_synthetic_options, **spec)
    _, c = run(tmp_path, "c", tiny_synthetic_options, corruption_seed=1, **spec)
    assert a[-1]["target"]["corruptions"] == b[-1]["target"]["corruptions"]
    assert RunConfig(dataset="synthetic", corruption_seed=1, corruptions="all").identity()[
        "corruption_seed"] == 1  # part of the run's identity
    assert c[-1]["target"]["acc"] == a[-1]["target"]["acc"]  # same training


def test_every_epoch_and_the_epoch_rule_of_the_tables(tmp_path, tiny_synthetic_options):
    _, records = run(tmp_path / "every", "run", tiny_synthetic_options,
                     corruptions=["dropout"], severities=[3], eval_corruptions="every")
    assert all("robustness" in r["target"] for r in records)
    assert robustness_rule(load_rows(tmp_path / "every")) == "source_val"
    run(tmp_path / "last", "run", tiny_synthetic_options, corruptions=["dropout"],
        severities=[3], hparams_seed=0)
    rows = load_rows(tmp_path / "last")
    selected = next(r for r in rows if r["selection"] == "source_val")
    expected = "source_val" if selected["epoch"] == 2 else "last"
    assert robustness_rule(rows) == expected
    assert robustness_rule([r for r in rows if "target_corruption_acc" not in r]) == "source_val"
    assert robustness_table([r for r in rows if CORRUPTION_ACC not in r]) == ""


# --- tables, figure, collect ----------------------------------------------------------------

def test_bench_writes_the_robustness_table_and_figure_and_collect_repeats_them(tmp_path,
                                                                              capsys):
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "synthetic", "--algorithms", "ERM,MERDG", "--seeds", "2",
            "--targets", "d0", "d1", "--hparams", json.dumps(TINY), *OPTS,
            "--corruptions", "gaussian_noise,scaling,missing", "--severities", "1,5",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    robustness = (out / "robustness.md").read_text()
    assert robustness in printed and robustness in (out / "report.md").read_text()
    assert "![accuracy under corruptions](robustness.png)" in (out / "report.md").read_text()
    assert (out / "robustness.png").stat().st_size > 0

    rows = load_rows(out)
    last = [r for r in rows if r["selection"] == "last"]
    assert len(last) == 8
    # the table's cells by hand: targets averaged within a seed, then mean over the 2 seeds
    for algorithm in ("ERM", "MERDG"):
        per_seed = [sum(r[CORRUPTION_ACC] for r in last
                        if r["algorithm"] == algorithm and r["seed"] == s) / 2 for s in (0, 1)]
        line = next(x for x in robustness.splitlines() if x.startswith(f"| m0+m1+m2 | "
                                                                        f"{algorithm} |"))
        mean = 100 * sum(per_seed) / 2
        assert line.split(" | ")[3].startswith(f"{mean:.2f} ± ")
    header = next(x for x in robustness.splitlines() if x.startswith("| modalities"))
    assert "severity 1 | severity 5 | m0 corrupted" in header
    assert "| synthetic m0+m1+m2 | MERDG | ERM | 4 |" in robustness  # paired differences

    accuracy, clean = severity_curves(rows, "last")
    assert set(accuracy) == {"ERM", "MERDG"}
    assert set(accuracy["ERM"]) == {("gaussian_noise", 1), ("gaussian_noise", 5),
                                    ("scaling", 1), ("scaling", 5)}  # missing: no severity
    erm = [r for r in last if r["algorithm"] == "ERM"]
    by_hand = sum(r[f"target_corruption/{m}:scaling:5"] for r in erm
                  for m in ("m0", "m1", "m2")) / (3 * len(erm))
    assert accuracy["ERM"][("scaling", 5)] == pytest.approx(by_hand)
    assert clean["ERM"] == pytest.approx(sum(r["target_acc"] for r in erm) / len(erm))
    assert_readable(figure_severity_curves(accuracy, clean))

    header = next(csv.reader(io.StringIO((out / "results.csv").read_text())))
    assert {CORRUPTION_ACC, CORRUPTION_RELATIVE, "target_corruption/m0:missing:-",
            "target_corruption_severity/5", "target_corruption_modality/m2"} <= set(header)

    # merdg collect prints and writes exactly what the bench wrote
    collected = tmp_path / "collected"
    assert main(["collect", str(out), "--out", str(collected)]) == 0
    assert robustness in capsys.readouterr().out
    assert (collected / "robustness.md").read_text() == robustness
    assert (collected / "robustness.png").exists()
    assert robustness_text(rows) == robustness


def test_runs_without_corruptions_write_no_robustness_files(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--dataset", "synthetic", "--algorithms", "ERM", "--seeds", "1",
                 "--targets", "d0", "--hparams", json.dumps(TINY), *OPTS,
                 "--out", str(out)]) == 0
    assert not (out / "robustness.md").exists() and not (out / "robustness.png").exists()
    assert "under corruptions" not in (out / "report.md").read_text()


# --- errors before any work -----------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    (["--corruptions", "fog"], "--corruptions: unknown corruption(s) ['fog']; names by "
     "modality kind: video: brightness"),
    (["--corruptions", "jpeg_compression"], "--corruptions: unknown corruption(s) "
     "['jpeg_compression'] for modalities ['m0', 'm1', 'm2']; accepted names: m0 (array): "
     "dropout, gaussian_noise, scaling, spikes, missing"),
    (["--corruptions", "all,missing"], "corruptions (--corruptions): 'all' stands alone"),
    (["--corruptions", "all", "--severities", "0,3"], "severities (--severities) values must "
     "be >= 1 and <= 5, got [0, 3]"),
    (["--corruptions", "all", "--severities", "1,x"], "--severities expects integers such as "
     "1,3,5, got 'x'"),
    (["--corruptions", "all", "--severities", "3,3"], "lists a value twice"),
    (["--severities", "1,3"], "--severities only apply with --corruptions"),
    (["--eval-corruptions", "every"], "--eval-corruptions only apply with --corruptions"),
])
@pytest.mark.parametrize("command", ["train", "bench"])
def test_bad_corruption_options_stop_before_any_work(command, extra, message, tmp_path,
                                                    capsys):
    out = tmp_path / "out"
    base = (["train", "--target", "d1"] if command == "train"
            else ["bench", "--targets", "d1", "--seeds", "1"])
    assert main([*base, "--dataset", "synthetic", *OPTS, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*.json"))


def test_list_corruptions_prints_each_kind_with_its_sources(capsys):
    assert main(["list", "corruptions"]) == 0
    text = capsys.readouterr().out
    for kind in ("video:", "flow:", "audio:", "timeseries:", "array:"):
        assert f"\n{kind}\n" in text
    assert "defocus_blur" in text and "arXiv 1903.12261" in text and "arXiv 1706.00527" in text
    assert "0.08, 0.12, 0.18, 0.26, 0.38" in text  # the ImageNet-C noise ladder
