"""A run on the tiny EPIC-Kitchens / HAC trees evaluates its target under video, flow and audio
corruptions (applied inside the clip pipeline, docs/robustness.md)."""

import json

import pytest
from media_setup import CLIP_OPTIONS, TINY_ENCODERS

import run_outputs
from merdg.cli import main
from merdg.run.records import read_jsonl

TINY_HPARAMS = {"epochs": 1, "batch_size": 4, "proj_hidden": 16, "fusion_hidden": 16,
                "encoders": TINY_ENCODERS}
OPTIONS = [f"--dataset-option={k}={v}" for k, v in CLIP_OPTIONS.items()]
# one corruption per kind besides gaussian_noise (which every kind has) and missing
NAMES = "gaussian_noise,motion_blur,dropout,band_limit,missing"


@pytest.mark.parametrize("dataset,sources,target,n", [
    ("epic-kitchens", ["D1", "D2"], "D3", 4), ("hac", ["human", "animal"], "cartoon", 8)])
def test_train_evaluates_video_flow_and_audio_corruptions(dataset, sources, target, n,
                                                          request, tmp_path):
    root = request.getfixturevalue("epic_root" if dataset == "epic-kitchens" else "hac_root")
    out = tmp_path / "run"
    assert main(["train", "--dataset", dataset, "--data-root", str(root), "--checkpoint-dir",
                 "none", "--source", *sources, "--target", target, "--out", str(out),
                 "--hparams", json.dumps(TINY_HPARAMS), *OPTIONS, "--corruptions", NAMES,
                 "--severities", "2", "--corruption-seed", "1"]) == 0
    record = list(read_jsonl(out / "records.jsonl"))[-1]
    assert record["target"]["n"] == n
    details = run_outputs.evaluation(out, "corruptions")["details"]
    found = {m: {name: sorted(per) for name, per in v.items()}
             for m, v in details["corruptions"].items()}
    assert found == {
        "video": {"gaussian_noise": ["2"], "motion_blur": ["2"], "missing": ["-"]},
        "flow": {"gaussian_noise": ["2"], "dropout": ["2"], "missing": ["-"]},
        "audio": {"gaussian_noise": ["2"], "band_limit": ["2"], "missing": ["-"]}}
    accuracies = [a for v in details["corruptions"].values() for per in v.values()
                  for a in per.values()]
    assert all(k / n == pytest.approx(a) for a in accuracies for k in [round(a * n)])
    robustness = details["robustness"]
    assert robustness["mean_corruption_acc"] == pytest.approx(sum(accuracies) / 9)
    assert robustness["per_severity"].keys() == {"2"}
    assert details["plan"][0] == "audio:gaussian_noise:2"
