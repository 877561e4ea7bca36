"""Corruption robustness wired through runs: settings, the evaluation of the selected model,
tables, figure, CLI errors.

The corruptions themselves and the views are tested in ``tests/evaluation``; here a run
evaluates its target under them (``--corruptions``, ``--severities``, ``--corruption-seed``) and
the result pipeline reports them.
"""

import csv
import io
import json

import pytest

import run_outputs
from figure_checks import assert_readable
from merdg.cli import main
from merdg.evaluation import CorruptionSpec, zero_filled
from merdg.evaluators import Corruptions, canonical_evaluations, corrupted_view, predict
from merdg.evaluators.corruptions import ACC, RELATIVE, figure_severity_curves, severity_curves
from merdg.experiments.report import ExperimentView
from merdg.experiments.results import load_rows
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.saved import load_saved_run
from merdg.run.training import train

OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]
TINY = {"epochs": 2, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
CORRUPTION_ACC, CORRUPTION_RELATIVE = ACC.name, RELATIVE.name


def run(tmp_path, name, options, evaluations=None, **settings):
    config = RunConfig(dataset="synthetic", target="d1", hparams=TINY, dataset_options=options,
                       out_dir=str(tmp_path / name), evaluations=evaluations or {}, **settings)
    return train(config, progress=False), run_outputs.records(tmp_path / name)


def corruptions(names, severities=None, seed=None):
    out = {"corruptions": names}
    out.update({"severities": severities} if severities else {})
    out.update({"corruption_seed": seed} if seed is not None else {})
    return {"corruptions": out}


# --- settings ------------------------------------------------------------------------------

def test_settings_normalize_and_stay_out_of_the_run_identity():
    settings = canonical_evaluations({"corruptions": {"corruptions": ["all"],
                                                      "severities": [5, 1, 3]}})
    assert settings == {"corruptions": {"corruptions": "all", "severities": [1, 3, 5],
                                        "corruption_seed": 0}}
    config = RunConfig(dataset="synthetic", evaluations=settings)
    # an evaluation of the trained model: the same run (and job hash) with or without it
    assert config.identity() == RunConfig(dataset="synthetic").identity() == {
        "dataset": "synthetic"}
    assert RunConfig.from_dict(config.to_dict()) == config


def test_a_config_of_an_earlier_version_reads_as_the_same_evaluation():
    old = {**RunConfig(dataset="synthetic").to_dict(), "corruptions": ["scaling"],
           "severities": [2], "corruption_seed": 3, "eval_corruptions": "last",
           "eval_missing": "every", "encoder_probes": "last", "save_model": True}
    del old["evaluations"]
    config = RunConfig.from_dict(old)
    assert config.evaluations == {
        "corruptions": {"corruptions": ["scaling"], "severities": [2], "corruption_seed": 3},
        "missing": {}, "encoder_probes": {}}
    assert config.save_model == "selected+last"  # it saved the final weights


# --- the evaluation of the selected model ----------------------------------------------------

def test_the_evaluation_holds_every_planned_spec_and_matches_a_recomputation(
        tmp_path, tiny_synthetic_options):
    summary, _ = run(tmp_path, "run", tiny_synthetic_options, algorithm="MERDG",
                     evaluations={**corruptions(["scaling", "missing"], [1, 5], 3),
                                  "missing": {}})
    evaluation = run_outputs.evaluation(tmp_path / "run", "corruptions")
    details, columns = evaluation["details"], evaluation["columns"]
    chosen = summary["selection"]["source_val"]
    assert evaluation["model"]["epoch"] == chosen["epoch"]  # the selected epoch's weights
    assert set(details["corruptions"]) == {"m0", "m1", "m2"}
    for m in ("m0", "m1", "m2"):
        assert {n: sorted(v) for n, v in details["corruptions"][m].items()} == {
            "scaling": ["1", "5"], "missing": ["-"]}
        # "missing" is the zero-filled missing-modality accuracy of --eval-missing: one column
        assert details["corruptions"][m]["missing"]["-"] == chosen[f"target_missing/{m}"]
    assert details["plan"][:3] == ["m0:scaling:1", "m0:scaling:5", "m0:missing:-"]
    assert len(details["plan"]) == 9

    # the numbers are what an independent evaluation of the saved weights gives
    loaded = load_saved_run(tmp_path / "run")
    clean = loaded.data.target_set
    assert predict(loaded.algorithm, clean, loaded.device).accuracy() == chosen["target_acc"]
    by_hand = {}
    for text in details["plan"]:
        m, name, severity = text.split(":")
        spec = CorruptionSpec(m, name, None if severity == "-" else int(severity))
        view = corrupted_view(loaded.data.dataset, clean, spec, seed=3)
        by_hand[text] = predict(loaded.algorithm, view, loaded.device,
                                zero=zero_filled(spec)).accuracy()
        assert details["corruptions"][m][name][severity] == by_hand[text], text
    robustness = details["robustness"]
    assert robustness["mean_corruption_acc"] == pytest.approx(sum(by_hand.values()) / 9)
    assert robustness["relative"] == pytest.approx(robustness["mean_corruption_acc"]
                                                   / chosen["target_acc"])
    assert robustness["per_severity"]["5"] == pytest.approx(
        sum(by_hand[f"{m}:scaling:5"] for m in ("m0", "m1", "m2")) / 3)
    assert details["time_s"] > 0
    assert chosen[CORRUPTION_ACC] == pytest.approx(robustness["mean_corruption_acc"])

    rows = [r for r in load_rows(tmp_path) if r["selection"] == "source_val"]
    assert rows[0][CORRUPTION_ACC] == columns[CORRUPTION_ACC] == chosen[CORRUPTION_ACC]
    assert rows[0][CORRUPTION_RELATIVE] == robustness["relative"]
    assert rows[0]["target_corruption/m2:scaling:5"] == by_hand["m2:scaling:5"]
    assert rows[0]["target_missing/m1"] == by_hand["m1:missing:-"]
    assert "target_corruption/m1:missing:-" not in rows[0]  # computed and shown once
    assert rows[0]["target_corruption_severity/1"] == robustness["per_severity"]["1"]
    assert rows[0]["target_corruption_modality/m0"] == robustness["per_modality"]["m0"]


def test_corruption_passes_do_not_change_the_training(tmp_path, tiny_synthetic_options):
    # every DataLoader pass draws from the global generator; dropout (0.5 in the fusion head)
    # would see other masks unless the optional passes restore it
    _, plain = run(tmp_path, "plain", tiny_synthetic_options, algorithm="SimMMDG")
    _, extra = run(tmp_path, "extra", tiny_synthetic_options, algorithm="SimMMDG",
                   evaluations=corruptions("all", [2, 4]))
    assert len(plain) == len(extra) == 2
    assert plain == extra
    assert [e["evaluator"] for e in RunDir(tmp_path / "extra").read_evaluations()] == [
        "corruptions", "selective"]


def test_the_corruption_seed_fixes_the_samples(tmp_path, tiny_synthetic_options):
    spec = (["spikes"], [5])
    run(tmp_path, "a", tiny_synthetic_options, evaluations=corruptions(*spec))
    run(tmp_path, "b", tiny_synthetic_options, evaluations=corruptions(*spec))
    _, c = run(tmp_path, "c", tiny_synthetic_options, evaluations=corruptions(*spec, seed=1))
    details = {x: run_outputs.evaluation(tmp_path / x, "corruptions")["details"]
               for x in "abc"}
    assert details["a"]["corruptions"] == details["b"]["corruptions"]
    assert c == run_outputs.records(tmp_path / "a")  # same training
    # the seed names the evaluation, not the run: two evaluation files of one trained model
    assert run_outputs.evaluation(tmp_path / "c", "corruptions")["file"] != (
        run_outputs.evaluation(tmp_path / "a", "corruptions")["file"])


def test_the_robustness_view_falls_back_to_the_last_epoch_of_earlier_runs():
    """Earlier versions evaluated corruptions at the last epoch only (their records hold them
    there): the robustness table then reports the last epoch, and says so."""
    def row(rule, epoch, corrupted):
        return {"dataset": "synthetic", "settings": "", "modalities": "m0", "algorithm": "ERM",
                "target": "d0", "column": "d0", "seed": 0, "hparams_seed": 0,
                "selection": rule, "epoch": epoch, "val_acc": 0.5, "target_acc": 0.6,
                "path": "p", "source_domains": '["d1"]', "setting": "multi",
                **({CORRUPTION_ACC: 0.4, CORRUPTION_RELATIVE: 0.4 / 0.6} if corrupted else {})}
    rows = [row("source_val", 1, False), row("oracle", 1, False), row("last", 2, True)]
    text = Corruptions.reporter().robustness_text(ExperimentView(rows))
    assert "epochs: last epoch" in text and "| m0 | ERM | 60.00 | 40.00 |" in text
    assert Corruptions.reporter().robustness_text(ExperimentView(rows[:2])) == ""


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
    last = [r for r in rows if r["selection"] == "source_val"]  # the models evaluated
    assert len(last) == 8 and all(CORRUPTION_ACC in r for r in last)
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
    assert "| m0+m1+m2 | MERDG | ERM | 4 |" in robustness  # paired differences
    assert "paired difference in mean corruption accuracy against ERM" in robustness

    accuracy, clean = severity_curves(ExperimentView(rows))
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
    assert {CORRUPTION_ACC, CORRUPTION_RELATIVE, "target_missing/m0",
            "target_corruption_severity/5", "target_corruption_modality/m2"} <= set(header)

    # merdg collect prints and writes exactly what the bench wrote
    collected = tmp_path / "collected"
    assert main(["collect", str(out), "--out", str(collected)]) == 0
    assert robustness in capsys.readouterr().out
    assert (collected / "robustness.md").read_text() == robustness
    assert (collected / "robustness.png").exists()
    assert Corruptions.reporter().robustness_text(ExperimentView(rows)) == robustness


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
    (["--corruptions", "all", "--severities", "1", "x"], "--severities expects integers such "
     "as 1 3 5, got 'x'"),
    (["--corruptions", "all", "--severities", "3,3"], "lists a value twice"),
    (["--severities", "1,3"], "--severities only apply with --corruptions"),
    (["--corruption-seed", "2"], "--corruption-seed only apply with --corruptions"),
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
