"""``diagnose`` on tiny trained runs: files, agreement with the training records, errors, CLI."""

import json

import pytest
import torch

from merdg.cli import main
from merdg.diagnostics import DiagnoseOptions, diagnose, load_run
from merdg.evaluators.clean import evaluate
from merdg.run.config import RunConfig
from merdg.run.records import read_jsonl
from merdg.run.training import train

OPTIONS = {"samples_per_domain": 60, "n_classes": 3}
# a high learning rate: source validation selects an epoch before the last (checked below)
HPARAMS = {"epochs": 4, "lr": 0.05, "batch_size": 12, "proj_hidden": 32, "proj_dim": 16,
           "fusion_hidden": 16,
           "encoders": {m: {"hidden": 16, "out_dim": 8} for m in ("m0", "m1", "m2")}}
FAST = DiagnoseOptions(probe_epochs=3, batch_draws=3)


def tiny_run(path, algorithm="ERM", target="d1", save_model=True, **kw):
    train(RunConfig(dataset="synthetic", target=target, algorithm=algorithm,
                    hparams=json.loads(json.dumps(HPARAMS)), dataset_options=dict(OPTIONS),
                    out_dir=str(path), save_model="selected" if save_model else "none", **kw),
          progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return tiny_run(root / "erm", "ERM"), tiny_run(root / "mer", "MERDG")


@pytest.fixture(scope="module")
def diagnosed(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    return diagnose(list(runs), out, FAST, progress=False), out


def test_writes_report_json_and_figures(diagnosed):
    result, out = diagnosed
    for name in ("report.md", "diagnostics.json", "unimodal.png", "reliance.png",
                 "diversity.png", "dependence.png", "curves.png"):
        assert (out / name).exists(), name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "diagnostics.json").read_text())
    assert saved["labels"] == ["ERM", "MERDG"] == result["labels"]
    run = saved["runs"][1]
    assert set(run) >= {"accuracy", "diversity", "training_batch", "dependence", "probes",
                        "headline", "samples", "run"}
    assert set(run["diversity"]) == {"embedding", "projection"}
    assert run["diversity"]["projection"]["m2"]["d0"]["dim"] == 16
    assert set(run["dependence"]) == {"m0~m1", "m0~m2", "m1~m2"}
    assert set(run["probes"]["mlp"]) == {"m0", "m1", "m2", "concat"}
    report = (out / "report.md").read_text()
    for heading in ("## Summary", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6."):
        assert heading in report
    assert "![diversity](diversity.png)" in report and "| ERM | MERDG |" in report


def test_sample_counts_follow_the_training_splits(diagnosed):
    run = diagnosed[0]["runs"][0]
    # 60 samples per domain, 20% of each source held out for validation
    assert run["samples"]["d0"] == {"role": "source", "stats": 60, "eval": 12}
    assert run["samples"]["d1"] == {"role": "target", "stats": 60, "eval": 60}
    assert run["diversity"]["embedding"]["m0"]["d0"]["half"]["n"] == 30
    assert run["training_batch"]["projection"]["m0"]["batch_size"] == 12


def test_accuracies_agree_with_the_training_records(runs, diagnosed):
    selected_epochs = []
    for path, run in zip(runs, diagnosed[0]["runs"]):
        # model.pt holds the epoch source validation selects
        epoch = json.loads((path / "summary.json").read_text())["selection"]["source_val"][
            "epoch"]
        records = list(read_jsonl(path / "records.jsonl"))
        selected_epochs.append((epoch, len(records)))
        last = records[epoch - 1]
        acc = run["accuracy"]
        assert acc["d1"]["fused"] == pytest.approx(last["target"]["acc"], abs=1e-6)
        assert acc["all sources"]["fused"] == pytest.approx(last["val"]["acc"], abs=1e-6)
        for d, value in last["val"]["per_domain"].items():
            assert acc[d]["fused"] == pytest.approx(value, abs=1e-6)
        for m, value in last["target"]["probe_acc"].items():
            assert acc["d1"]["heads"][m] == pytest.approx(value, abs=1e-6)
    # the runs select an earlier epoch than the last: the weights are not the final ones
    assert any(epoch < epochs for epoch, epochs in selected_epochs), selected_epochs


def test_zeroed_modalities_match_algorithm_evaluate(runs, diagnosed):
    loaded = load_run(runs[0])
    target = loaded.split("d1", "test")
    acc = diagnosed[0]["runs"][0]["accuracy"]["d1"]["variants"]
    assert set(acc) == {"all", "without m0", "without m1", "without m2", "only m0", "only m1",
                        "only m2"}
    direct = evaluate(loaded.algorithm, target, loaded.device, zero=["m1"])
    assert acc["without m1"] == pytest.approx(direct["acc"], abs=1e-6)
    direct = evaluate(loaded.algorithm, target, loaded.device, zero=["m0", "m2"])
    assert acc["only m1"] == pytest.approx(direct["acc"], abs=1e-6)


def test_missing_or_bad_weights_are_named(tmp_path, runs):
    no_model = tiny_run(tmp_path / "nomodel", save_model=False)
    with pytest.raises(FileNotFoundError, match="--save-model"):
        load_run(no_model)
    (no_model / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.pt: cannot be read"):
        load_run(no_model)
    # weights of a different architecture
    other = tiny_run(tmp_path / "other", save_model=False)
    (other / "model.pt").write_bytes((runs[0] / "model.pt").read_bytes())
    config = json.loads((other / "config.json").read_text())
    config["hparams"]["proj_dim"] = 4
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not fit the model rebuilt"):
        load_run(other)
    with pytest.raises(FileNotFoundError, match="not a merdg run directory"):
        diagnose(tmp_path / "nowhere", progress=False)


def test_non_finite_features_name_the_run_modality_and_domain(tmp_path, runs):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "records.jsonl", "done"):
        (broken / name).write_bytes((runs[0] / name).read_bytes())
    saved = torch.load(runs[0] / "model.pt", weights_only=False)
    key = next(k for k in saved["state_dict"] if k.startswith("net.encoders.m2.")
               and k.endswith("bias"))
    saved["state_dict"][key] = torch.full_like(saved["state_dict"][key], float("nan"))
    torch.save(saved, broken / "model.pt")
    with pytest.raises(ValueError, match=r"embedding m2 d0: .*NaN"):
        diagnose(broken, options=FAST, progress=False)


def test_damaged_weights_are_refused_in_one_line(tmp_path, runs, capsys):
    """model.pt is verified against the sha256 recorded when the run finished."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in runs[0].iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    assert load_run(copy)  # an intact copy loads
    data = bytearray((copy / "model.pt").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    (copy / "model.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["diagnose", str(copy), "--probes", "none", "--no-figures"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and "it/s" not in line]  # progress bars aside
    assert len(err) == 1 and err[0].startswith(f"merdg diagnose: error: {copy / 'model.pt'}: "
                                               "damaged (its sha256")
    assert "train the run again" in err[0]


def test_runs_must_be_comparable(tmp_path, runs):
    other_target = tiny_run(tmp_path / "t2", target="d2")
    with pytest.raises(ValueError, match="not comparable.*target: 'd1' vs 'd2'"):
        diagnose([runs[0], other_target], progress=False)


def test_cli(tmp_path, runs, capsys):
    assert main(["diagnose", str(runs[0]), "--probes", "linear", "--probe-epochs", "2",
                 "--no-figures"]) == 0
    assert (runs[0] / "diagnostics" / "report.md").exists()
    assert not (runs[0] / "diagnostics" / "diversity.png").exists()
    assert "![diversity]" not in (runs[0] / "diagnostics" / "report.md").read_text()
    assert "report:" in capsys.readouterr().out
    saved = json.loads((runs[0] / "diagnostics" / "diagnostics.json").read_text())
    assert list(saved["runs"][0]["probes"]) == ["linear"]
    assert main(["diagnose", str(runs[0]), str(runs[1])]) == 2
    assert "--out is required" in capsys.readouterr().err
    no_model = tiny_run(tmp_path / "nomodel", save_model=False)
    assert main(["diagnose", str(no_model)]) == 2
    assert "--save-model" in capsys.readouterr().err
    assert main(["diagnose", str(runs[0]), "--probes", "svm", "--out", str(tmp_path)]) == 2
    assert "unknown probe kinds" in capsys.readouterr().err


def test_bench_diagnose_links_reports(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "synthetic", "--algorithms", "ERM,MERDG", "--seeds", "2",
            "--targets", "d0", "--hparams", json.dumps(HPARAMS), "--out", str(out),
            "--dataset-option", "samples_per_domain=60", "--dataset-option", "n_classes=3",
            "--save-model", "none", "--diagnose"]  # the seeds diagnosed save their weights
    assert main(args) == 0
    runs = out / "runs" / "m0+m1+m2"
    assert (runs / "ERM" / "d0" / "seed0" / "model.pt").exists()
    assert not (runs / "ERM" / "d0" / "seed1" / "model.pt").exists()  # only seed 0 diagnosed
    diag = out / "diagnostics" / "m0+m1+m2" / "d0" / "seed0"
    saved = json.loads((diag / "diagnostics.json").read_text())
    assert saved["labels"] == ["ERM", "MERDG"]
    report = (out / "report.md").read_text()
    assert "## Diagnostics" in report and "| m0+m1+m2 | MERDG |" in report
    assert "(diagnostics/m0+m1+m2/d0/seed0/report.md)" in report
    assert "(diagnostics/m0+m1+m2/d0/seed0/diversity.png)" in report
    assert report.index("## Diagnostics") < report.index("## Configuration")
    assert (out / "diagnostics_summary.png").exists()
    # the same bench without --diagnose reuses every run, those that saved weights included
    assert main(args[:-1]) == 0
    assert json.loads((out / "experiment.json").read_text())["skipped"] == 4
