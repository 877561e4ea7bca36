"""Length policy (issue 15 item 2): resample, pad (masked) or crop variable-length sequences; data
check prints each modality's raw length range and what training does with it."""

import csv
import warnings

import numpy as np
import pytest
import torch

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.preprocessing import DataError, crop_time, resample_time
from merdg.models import build_encoder
from merdg.run.config import RunConfig
from merdg.run.training import train

LENGTHS = {"a": 6, "b": 9, "c": 12, "d": 7}  # accel frames per sample id stem


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def root(tmp_path):
    """2 domains x 2 classes x 4 samples; accel (T, 2) with T 6..12 (values never 0), clip
    (T, 4, 5) frames with T 3..5, feat (3,)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for sub in ("accel", "clip", "feat"):
        (root / sub).mkdir(parents=True)
    rows = []
    for d in ("dom1", "dom2"):
        for label in ("x", "y"):
            for k, (stem, t) in enumerate(LENGTHS.items()):
                sid = f"{d}-{label}-{stem}"
                accel = rng.uniform(1, 2, (t, 2)) * (1 if label == "x" else -1)
                np.save(root / "accel" / f"{sid}.npy", accel)  # float64 on disk
                np.save(root / "clip" / f"{sid}.npy", rng.uniform(1, 2, (3 + k % 3, 4, 5)))
                np.save(root / "feat" / f"{sid}.npy", rng.normal(0, 1, 3).astype(np.float32))
                rows.append({"sample_id": sid, "domain": d, "label": label,
                             "accel": f"accel/{sid}.npy", "clip": f"clip/{sid}.npy",
                             "feat": f"feat/{sid}.npy"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def load(root, **options):
    return build_dataset("manifest", str(root), progress=False, **options)


def raw(root, sid):
    return np.load(root / "accel" / f"{sid}.npy").astype(np.float32)


def test_policies_shape_the_sequences(root):
    sid = "dom1-x-a"  # 6 frames
    resampled = load(root)
    i = resampled.sample_ids.index(sid)
    assert resampled.input_shape("accel") == (12, 2)
    assert resampled._raw["accel"].dtype == torch.float32
    expected = torch.from_numpy(resample_time(raw(root, sid), 12))
    assert torch.allclose(resampled._raw["accel"][i], expected)
    padded = load(root, length_policy="pad")
    assert padded.input_shape("accel") == (12, 2)
    assert torch.equal(padded._raw["accel"][i][:6], torch.from_numpy(raw(root, sid)))
    assert not padded._raw["accel"][i][6:].any()
    cropped = load(root, length_policy="crop")
    assert cropped.input_shape("accel") == (6, 2) and cropped.input_shape("clip") == (3, 4, 5)
    longest = cropped.sample_ids.index("dom1-x-c")  # 12 frames -> the middle 6
    assert torch.equal(cropped._raw["accel"][longest], torch.from_numpy(raw(root, "dom1-x-c")[3:9]))
    assert load(root, length_policy="pad", length=8).input_shape("accel") == (8, 2)
    assert load(root, length={"accel": 5}).input_shape("accel") == (5, 2)
    assert crop_time(np.arange(7), 4).tolist() == [1, 2, 3, 4]
    with pytest.raises(DataError, match=r"sample dom1-x-a \(accel\): 6 frames, fewer than the 8 "
                                        "that length_policy=crop keeps"):
        load(root, length_policy="crop", length=8)
    with pytest.raises(ValueError, match=r"length_policy must be one of \['resample', 'pad', "
                                         r"'crop'\], got 'stretch'"):
        load(root, length_policy="stretch")
    with pytest.raises(ValueError, match="length for 'accel' must be a positive integer"):
        load(root, length=0)
    with pytest.warns(FutureWarning, match="now called length_policy"):
        assert load(root, sequence_mode="pad").plans["accel"].policy == "pad"


def test_pad_fits_normalization_on_valid_steps_and_masks_padding(root):
    ds = load(root, length_policy="pad")
    assert ds.encoder_spec("accel") == {"name": "tcn", "channels": [32, 64, 64],
                                        "kernel_size": 5, "mask_padding": True}
    assert ds.encoder_spec("clip")["name"] == "cnn3d" and ds.encoder_spec("clip")["mask_padding"]
    assert "mask_padding" not in ds.encoder_spec("feat")
    assert "mask_padding" not in load(root).encoder_spec("accel")  # resampled: nothing padded
    ds.fit_normalization(["dom1"])
    valid = np.concatenate([raw(root, f"dom1-{c}-{s}") for c in "xy" for s in LENGTHS])
    assert torch.allclose(ds.statistics["accel"].mean.flatten(),
                          torch.from_numpy(valid.mean(0)), atol=1e-5)
    assert torch.allclose(ds.statistics["accel"].std.flatten(),
                          torch.from_numpy(valid.std(0)), atol=1e-5)
    x = ds.domain_samples("dom2").x["accel"]  # standardized, (8, 12, 2)
    ids = [ds.sample_ids[i] for i in ds.domain_indices("dom2").tolist()]
    for row, sid in zip(x, ids):
        t = LENGTHS[sid[-1]]
        assert (row[:t] != 0).all() and not row[t:].any()  # padded steps stay exactly 0


@pytest.mark.parametrize("name,shape", [("tcn", (10, 3)), ("cnn3d", (5, 6, 8))])
def test_masked_encoders_ignore_the_padding(name, shape):
    torch.manual_seed(0)
    encoder = build_encoder({"name": name, "mask_padding": True}, shape)
    encoder.train()
    for _ in range(3):  # move the batch-norm running statistics away from their init
        encoder(torch.randn(8, *shape))
    encoder.eval()
    seq = torch.randn(2, *shape)

    def padded(extra):
        pad = torch.zeros(2, extra, *shape[1:])
        return torch.cat([seq, pad], dim=1)

    with torch.no_grad():
        short, longer = encoder(padded(2)), encoder(padded(9))
        unmasked = build_encoder({"name": name}, shape)
        unmasked.load_state_dict(encoder.state_dict())
        unmasked.eval()
    assert torch.allclose(short, longer, atol=1e-5)
    assert not torch.allclose(unmasked(padded(2)), unmasked(padded(9)), atol=1e-3)
    with pytest.raises(ValueError, match="encoder 'mlp' has no option 'mask_padding'"):
        build_encoder({"name": "mlp", "mask_padding": True}, shape)


def test_data_check_prints_raw_ranges_and_the_policy(root, capsys):
    args = ["data", "check", "--dataset", "manifest", "--data-root", str(root),
            "--dataset-option", "progress=false"]
    assert main(args + ["--dataset-option", "length_policy=pad"]) == 0
    out = capsys.readouterr().out
    assert ("accel: raw (T 6-12, 2) -> sample shape (12, 2) (length_policy=pad: zero-padded at "
            "the end to 12 frames; the padded steps are masked (tcn/cnn3d encoders))") in out
    assert "clip: raw (T 3-5, 4, 5) -> sample shape (5, 4, 5)" in out
    assert "feat: sample shape (3,)" in out
    assert main(args) == 0
    assert ("accel: raw (T 6-12, 2) -> sample shape (12, 2) (length_policy=resample: linear "
            "interpolation to 12 frames)") in capsys.readouterr().out
    assert main(args + ["--dataset-option", "length_policy=crop"]) == 0
    assert "accel: raw (T 6-12, 2) -> sample shape (6, 2) (length_policy=crop: the middle 6 " \
           "frames)" in capsys.readouterr().out
    assert main(args + ["--dataset-option", "lenght=5"]) != 0
    assert "dataset 'manifest' has no option 'lenght'" in capsys.readouterr().err


def test_a_padded_run_trains_and_records_the_policy(root, tmp_path):
    config = RunConfig(dataset="manifest", algorithm="ERM", target="dom2", data_root=str(root),
                       dataset_options={"length_policy": "pad", "progress": False},
                       hparams={"epochs": 1, "batch_size": 4, "proj_hidden": 8,
                                "fusion_hidden": 8,
                                "encoders": {"accel": {"channels": [4, 4]},
                                             "clip": {"channels": [2, 2]},
                                             "feat": {"hidden": 4, "out_dim": 4}}},
                       out_dir=str(tmp_path / "run"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-batch warnings of the tiny run
        summary = train(config)
    assert summary["epochs"] == 1
    assert summary["run"]["config"]["dataset_options"]["length_policy"] == "pad"
    ds = load(root, length_policy="pad")
    record = ds.preprocessing()
    assert record["accel"] == {"modality": "accel", "policy": "pad", "raw_shape": [[6, 12], 2],
                               "sample_shape": [12, 2], "padded": True}
    assert record["feat"]["policy"] == "none"
