"""Corrupted views of evaluation splits on every kind of dataset, through DataLoaders."""

import csv

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from merdg.datasets import build_dataset
from merdg.datasets.audio import corrupt_waveform, log_spectrogram, read_wav_window
from merdg.datasets.base import DomainConcat, TensorSamples, ValueConvention, collate
from merdg.evaluation import (
    CorruptionSpec,
    corruption_plan,
    get_corruption,
    parse_corruptions,
    parse_severities,
    summarize_robustness,
    zero_filled,
)
from merdg.evaluators import CorruptedSamples, corrupted_view
from merdg.evaluators.clean import evaluate
from merdg.run.config import RunConfig
from merdg.run.training import build_algorithm, run_hparams

TINY = {"samples_per_domain": 30, "n_classes": 3}
# small clips and crops: the paper's clip lengths, 16-pixel crops (as tests/datasets)
CLIP_OPTIONS = {"short_side": 24, "crop_size": 16, "rgb_eval_crop": 16, "flow_eval_crop": 24}


def synthetic():
    ds = build_dataset("synthetic", None, None, **TINY)
    ds.fit_normalization(["d1", "d2", "d3"])
    return ds


def batches(data, num_workers=0, batch_size=8):
    loader = DataLoader(DomainConcat([data]), batch_size=batch_size, collate_fn=collate,
                        num_workers=num_workers)
    return list(loader)


# --- the plan and the command-line values -------------------------------------------------------
def test_plan_expands_all_and_name_lists_per_modality_kind():
    kinds = {"inertial": "timeseries", "depth": "array", "m": "array"}
    plan = corruption_plan(kinds, "all", [1, 3])
    assert plan[0] == CorruptionSpec("depth", "dropout", 1)
    assert CorruptionSpec("inertial", "missing", None) in plan  # ungraded: planned once
    assert len([s for s in plan if s.modality == "inertial"]) == 6 * 2 + 1
    noise = corruption_plan(kinds, ["gaussian_noise", "time_warp"], [2])
    assert [str(s) for s in noise] == ["depth:gaussian_noise:2", "inertial:gaussian_noise:2",
                                       "inertial:time_warp:2", "m:gaussian_noise:2"]
    with pytest.raises(ValueError, match=r"unknown corruption\(s\) \['jpeg_compression'\].*"
                                         r"inertial \(timeseries\): bias_drift, gaussian_noise"):
        corruption_plan(kinds, ["gaussian_noise", "jpeg_compression"])
    with pytest.raises(ValueError, match="severity must be an integer in 1..5, got 7"):
        corruption_plan(kinds, "all", [1, 7])
    with pytest.raises(ValueError, match="no severities"):
        corruption_plan(kinds, "all", [])
    with pytest.raises(ValueError, match="parse_corruptions"):
        corruption_plan(kinds, "gaussian_noise")


def test_command_line_values_are_parsed_and_checked():
    assert parse_corruptions("all") == "all"
    assert parse_corruptions("gaussian_noise, missing,gaussian_noise") == ["gaussian_noise",
                                                                         "missing"]
    with pytest.raises(ValueError, match="--corruptions: expected 'all' or NAME"):
        parse_corruptions("gaussian_noise,,missing")
    assert parse_severities("5,1,3") == [1, 3, 5]
    with pytest.raises(ValueError, match="--severities: '6' is not a severity"):
        parse_severities("1,6")
    with pytest.raises(ValueError, match="--severities: 'x' is not a severity"):
        parse_severities("x")


def test_robustness_summary_by_hand():
    accs = {CorruptionSpec("a", "gaussian_noise", 1): 0.8, CorruptionSpec("a", "gaussian_noise",
                                                                          3): 0.6,
            CorruptionSpec("b", "missing", None): 0.4}
    summary = summarize_robustness(0.9, accs)
    assert summary["mean_corruption_acc"] == pytest.approx(0.6)
    assert summary["relative"] == pytest.approx(0.6 / 0.9)
    assert summary["per_corruption"] == pytest.approx({"a:gaussian_noise": 0.7, "b:missing": 0.4})
    assert summary["per_severity"] == pytest.approx({"1": 0.8, "3": 0.6})
    assert summary["per_modality"] == pytest.approx({"a": 0.7, "b": 0.4})
    with pytest.raises(ValueError, match="no corruption accuracies"):
        summarize_robustness(0.9, {})


# --- the built-in benchmark (in-memory TensorSamples) ---------------------------------------
def test_synthetic_view_corrupts_per_sample_and_leaves_the_data_alone():
    ds = synthetic()
    clean = ds.split("d0", "test", 0, 0.2)
    assert isinstance(clean, TensorSamples)
    before = clean.x["m1"].clone()
    spec = CorruptionSpec("m1", "gaussian_noise", 3)  # 10 dB: std spread / sqrt(10)
    view = corrupted_view(ds, ds.split("d0", "test", 0, 0.2), spec, seed=4)
    assert len(view) == len(clean)
    got = batches(view)
    x = torch.cat([b.x["m1"] for b in got])
    assert torch.equal(torch.cat([b.x["m0"] for b in got]), clean.x["m0"])  # others untouched
    noise = (x - clean.x["m1"]) / ds.spread["m1"]
    assert float(noise.std()) == pytest.approx(10 ** -0.5, rel=0.1)  # 960 draws
    assert not torch.allclose(noise[0], noise[1])  # each sample its own noise
    assert torch.equal(clean.x["m1"], before)  # the dataset's tensors are not modified
    again = corrupted_view(ds, ds.split("d0", "test", 0, 0.2), spec, seed=4)
    assert torch.equal(again[5][0]["m1"], view[5][0]["m1"])  # same seed, index: same sample
    other = corrupted_view(ds, ds.split("d0", "test", 0, 0.2), spec, seed=5)
    assert not torch.equal(other[5][0]["m1"], view[5][0]["m1"])
    severe = corrupted_view(ds, ds.split("d0", "test", 0, 0.2),
                            CorruptionSpec("m1", "gaussian_noise", 5), seed=4)
    ratio = (severe[5][0]["m1"] - clean.x["m1"][5]) / (view[5][0]["m1"] - clean.x["m1"][5])
    assert torch.allclose(ratio, torch.full_like(ratio, 10 ** 0.5), rtol=1e-3)  # same draws


def test_views_work_in_dataloader_workers():
    ds = synthetic()
    specs = [CorruptionSpec("m0", "dropout", 2), CorruptionSpec("m2", "spikes", 4)]
    view = corrupted_view(ds, ds.split("d0", "test", 0, 0.2), specs, seed=1)
    inline, workers = batches(view), batches(view, num_workers=1)
    for a, b in zip(inline, workers):
        assert all(torch.equal(a.x[m], b.x[m]) for m in a.x)
        assert torch.equal(a.y, b.y)


def test_missing_gives_the_missing_modality_accuracy():
    ds = synthetic()
    config = RunConfig(dataset="synthetic", target="d0", hparams={
        "proj_hidden": 16, "fusion_hidden": 8, "encoders": {
            m: {"hidden": 8, "out_dim": 4} for m in ds.modalities}})
    torch.manual_seed(0)
    algorithm = build_algorithm(ds, "ERM", 3, run_hparams(config, ds))
    clean = ds.split("d0", "test", 0, 0.2)
    spec = CorruptionSpec("m1", "missing", None)
    view = corrupted_view(ds, clean, spec)
    assert torch.equal(view[3][0]["m1"], torch.zeros(ds.dim))
    assert zero_filled([spec, CorruptionSpec("m0", "dropout", 1)]) == ["m1"]
    device = torch.device("cpu")
    missing = evaluate(algorithm, view, device, zero=zero_filled(spec))
    reference = evaluate(algorithm, clean, device, zero=["m1"])
    assert missing["acc"] == reference["acc"]  # the fused prediction ignores the input
    assert missing["probe_acc"]["m0"] == reference["probe_acc"]["m0"]


def test_view_errors_name_the_problem():
    ds = synthetic()
    clean = ds.split("d0", "test", 0, 0.2)
    with pytest.raises(ValueError, match=r"cannot corrupt modalities \['audio'\]"):
        corrupted_view(ds, clean, CorruptionSpec("audio", "gain", 1))
    with pytest.raises(ValueError, match="unknown array corruption 'time_warp'; array "
                                         "corruptions: dropout"):
        corrupted_view(ds, clean, CorruptionSpec("m0", "time_warp", 1))
    with pytest.raises(ValueError, match="got None"):
        corrupted_view(ds, clean, CorruptionSpec("m0", "dropout", None))
    with pytest.raises(ValueError, match=r"at most one corruption per modality; \['m0'\]"):
        corrupted_view(ds, clean, [CorruptionSpec("m0", "dropout", 1),
                                   CorruptionSpec("m0", "spikes", 1)])
    with pytest.raises(TypeError, match="TensorSamples cannot apply corruptions while reading"):
        CorruptedSamples(clean, [CorruptionSpec("m0", "gain", 1)],
                         {"m0": ValueConvention("audio", in_pipeline=True)})
    with pytest.raises(RuntimeError, match="call fit_normalization"):
        build_dataset("synthetic", None, None, **TINY).value_convention("m0")
    with pytest.raises(ValueError, match="modality kind must be one of"):
        ValueConvention("image")
    with pytest.raises(ValueError, match="only exists inside the dataset's pipeline"):
        ValueConvention("audio").to_values(torch.zeros(3))


# --- UTD-MHAD (a small release in the authors' layout) and manifests ------------------------
def write_utd_release(root):
    """2 subjects x 2 actions x 2 trials of inertial (T, 6) and skeleton (20, 3, T) .mat files."""
    savemat = pytest.importorskip("scipy.io").savemat
    rng = np.random.default_rng(0)
    for folder in ("Inertial", "Skeleton"):
        (root / folder).mkdir(parents=True)
    for s in (1, 2, 3):
        for a in (1, 2):
            for t in (1, 2):
                name = f"a{a}_s{s}_t{t}"
                inertial = rng.normal(size=(int(rng.integers(20, 30)), 6)) + a
                savemat(root / "Inertial" / f"{name}_inertial.mat", {"d_iner": inertial})
                skeleton = rng.normal(size=(20, 3, int(rng.integers(6, 9)))) + s
                savemat(root / "Skeleton" / f"{name}_skeleton.mat", {"d_skel": skeleton})
    return root


def test_utd_mhad_sequences_are_corrupted_in_their_own_units(tmp_path):
    root = write_utd_release(tmp_path / "utd-mhad")
    ds = build_dataset("utd-mhad", str(root), ["inertial", "skeleton"], domains="subject",
                       cache_dir=str(tmp_path / "cache"), progress=False, inertial_length=16,
                       skeleton_length=8, partial_release=True)
    ds.fit_normalization(["s1", "s2"])
    assert {m: ds.modality_kind(m) for m in ds.modalities} == {"inertial": "timeseries",
                                                               "skeleton": "timeseries"}
    convention = ds.value_convention("inertial")
    clean = ds.split("s3", "test", 0, 0.2)
    raw = ds._raw["inertial"][ds.domain_indices("s3")]
    assert torch.allclose(convention.to_values(clean.x["inertial"]), raw, atol=1e-5)
    assert convention.spread.shape == (1, 6)  # per channel, from s1 + s2
    spec = CorruptionSpec("inertial", "sample_dropout", 3)  # 30 % of 15 steps held
    view = corrupted_view(ds, clean, spec, seed=2)
    for i in range(len(view)):
        values = convention.to_values(view[i][0]["inertial"])
        repeated = (values[1:] - values[:-1]).abs().amax(dim=1) < 1e-5
        assert int(repeated.sum()) == round(0.3 * 15)
        assert torch.allclose(values[0], raw[i][0], atol=1e-5)
    warped = corrupted_view(ds, clean, CorruptionSpec("skeleton", "time_warp", 5))
    values = ds.value_convention("skeleton").to_values(warped[0][0]["skeleton"])
    skeleton = ds._raw["skeleton"][ds.domain_indices("s3")][0]
    assert torch.allclose(values[[0, -1]], skeleton[[0, -1]], atol=1e-4)  # endpoints kept
    assert len(batches(warped)) == 1


def write_manifest(root):
    """3 domains x 8 samples: a (T, 2) sequence and a (5,) feature vector each."""
    rng = np.random.default_rng(1)
    root.mkdir()
    rows = []
    for d in ("a", "b", "c"):
        for k in range(8):
            sid = f"{d}{k}"
            np.save(root / f"{sid}_seq.npy", rng.normal(size=(12, 2)) * [1.0, 20.0] + [0, 100])
            np.save(root / f"{sid}_vec.npy", rng.normal(size=5).astype(np.float32))
            rows.append([sid, d, k % 2, f"{sid}_seq.npy", f"{sid}_vec.npy"])
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["sample_id", "domain", "label", "seq", "vec"], *rows])
    return root


def test_manifest_bias_drift_in_raw_units_relative_to_source_spread(tmp_path):
    ds = build_dataset("manifest", str(write_manifest(tmp_path / "m")), None, progress=False)
    ds.fit_normalization(["a", "b"])
    assert ds.modality_kind("seq") == "timeseries" and ds.modality_kind("vec") == "array"
    spread = ds.value_convention("seq").spread  # (1, 2): about 1 and 20
    assert 10 < float(spread[0, 1] / spread[0, 0]) < 40
    clean = ds.split("c", "test", 0, 0.2)
    convention = ds.value_convention("seq")
    view = corrupted_view(ds, clean, CorruptionSpec("seq", "bias_drift", 4))  # 1 spread at end
    for i in range(len(view)):
        drift = convention.to_values(view[i][0]["seq"]) - convention.to_values(clean.x["seq"][i])
        assert torch.allclose(drift[0], torch.zeros(2), atol=1e-4)
        assert torch.allclose(drift[-1].abs(), spread[0], rtol=1e-4)
    assert len(batches(corrupted_view(ds, clean, CorruptionSpec("vec", "missing", None)))) == 1


# --- EPIC-Kitchens and HAC: corrupted inside the reading pipeline ----------------------------
def test_epic_video_and_flow_are_corrupted_after_the_crop(epic_root):
    ds = build_dataset("epic-kitchens", str(epic_root), ["flow", "video"], **CLIP_OPTIONS)
    clean = ds.split("D3", "test")
    for modality, name, severity in (("video", "brightness", 2), ("video", "jpeg_compression", 5),
                                     ("flow", "magnitude_scaling", 3)):
        convention = ds.value_convention(modality)
        assert convention.in_pipeline
        view = corrupted_view(ds, clean, CorruptionSpec(modality, name, severity))
        x, y = view[1]
        x_clean, y_clean = clean[1]
        assert y == y_clean and torch.equal(x["video" if modality == "flow" else "flow"],
                                            x_clean["video" if modality == "flow" else "flow"])
        values = convention.to_values(x_clean[modality])  # the clean crop, in the kind's values
        expected = get_corruption(modality, name)(values, severity, torch.Generator())
        assert torch.allclose(convention.to_values(x[modality]), expected, atol=1e-5)
        assert x[modality].dtype == torch.float32 and x[modality].shape == x_clean[modality].shape
    pixels = ds.value_convention("video").to_values(clean[0][0]["video"]) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)  # the crop's uint8 values


def test_epic_audio_is_corrupted_on_the_waveform_before_the_spectrogram(epic_root):
    ds = build_dataset("epic-kitchens", str(epic_root), ["audio"], **CLIP_OPTIONS)
    clean = ds.split("D1", "test")
    spec = CorruptionSpec("audio", "gaussian_noise", 5)  # 0 dB
    view = corrupted_view(ds, clean, spec, seed=3)
    record = clean.records[0]
    samples, rate = read_wav_window(ds._dir("rgb", record) + ".wav", record.info["start_s"],
                                    record.info["stop_s"])
    expected = log_spectrogram(corrupt_waveform(samples, rate, view.bound[0].function(0)), rate)
    got = view[0][0]["audio"]
    assert torch.equal(got, expected)
    assert not torch.allclose(got, clean[0][0]["audio"], atol=0.1)
    quiet = corrupted_view(ds, clean, CorruptionSpec("audio", "gain", 3))[0][0]["audio"]
    assert not torch.allclose(quiet, clean[0][0]["audio"], atol=0.1)  # sinks into the floor


def test_hac_through_dataloader_workers(hac_root):
    ds = build_dataset("hac", str(hac_root), ["audio", "video"], **CLIP_OPTIONS)
    clean = ds.split("cartoon", "test")
    specs = [CorruptionSpec("video", "motion_blur", 2), CorruptionSpec("audio", "time_mask", 4)]
    view = corrupted_view(ds, clean, specs, seed=7)
    inline, workers = batches(view, batch_size=2), batches(view, num_workers=1, batch_size=2)
    assert len(inline) == 2
    for a, b in zip(inline, workers):
        assert torch.equal(a.x["video"], b.x["video"]) and torch.equal(a.x["audio"], b.x["audio"])
    first = inline[0].x["video"][0]
    assert not torch.allclose(first, clean[0][0]["video"])
    flow = build_dataset("hac", str(hac_root), ["flow"], **CLIP_OPTIONS)
    dropped = corrupted_view(flow, flow.split("human", "test"), CorruptionSpec("flow", "dropout",
                                                                               5))
    values = flow.value_convention("flow").to_values(dropped[0][0]["flow"])
    assert float((values.abs() < 1e-6).all(dim=0).float().mean()) >= 0.45  # >= half dropped
