"""The bring-your-own-data manifest dataset (manifest.csv + .npy files)."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.preprocessing import DataError
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.training import train

DOMAINS, LABELS = ("lab", "home", "car"), ("walk", "run")


def write_manifest(root: Path, split: bool = False, per_cell: int = 4) -> Path:
    """3 string domains x 2 string labels; accel (T, 3) with varying T, feat (8,) vectors."""
    rng = np.random.default_rng(0)
    (root / "accel").mkdir(parents=True)
    (root / "feat").mkdir()
    rows = []
    for d in DOMAINS:
        for k, label in enumerate(LABELS):
            for i in range(per_cell):
                sid = f"{d}-{label}-{i}"
                t = 10 + i  # 10 .. 13 frames
                np.save(root / "accel" / f"{sid}.npy", rng.normal(k, 1, (t, 3)).astype(np.float32))
                np.save(root / "feat" / f"{sid}.npy", rng.normal(k, 1, 8))
                row = {"sample_id": sid, "domain": d, "label": label,
                       "accel": f"accel/{sid}.npy", "feat": f"feat/{sid}.npy"}
                if split:
                    row["split"] = ("train", "train", "val", "test")[i % 4]
                rows.append(row)
    columns = ["sample_id", "domain", "label", *(["split"] if split else []), "accel", "feat"]
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """The manifest's preprocessing cache goes to the test's folder, never to the home."""
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def manifest_dir(tmp_path):
    return write_manifest(tmp_path / "data")


def load(root, **options):
    return build_dataset("manifest", str(root), progress=False, **options)


def test_reads_strings_sequences_and_vectors(manifest_dir):
    ds = load(manifest_dir)
    assert ds.domains == ["car", "home", "lab"] and ds.class_names == ["run", "walk"]
    assert ds.modalities == ["accel", "feat"]
    assert ds.input_shape("accel") == (13, 3) and ds.input_shape("feat") == (8,)
    assert ds.encoder_spec("accel")["name"] == "tcn" and ds.encoder_spec("feat")["name"] == "mlp"
    assert ds.labels("lab") == [1] * 4 + [0] * 4  # "walk" is class 1
    longest = np.load(manifest_dir / "accel" / "lab-walk-3.npy")
    assert torch.allclose(ds._raw["accel"][ds.sample_ids.index("lab-walk-3")],
                          torch.from_numpy(longest))  # the longest sequence is unchanged
    short = np.load(manifest_dir / "accel" / "lab-walk-0.npy")
    padded = load(manifest_dir, length_policy="pad", length=12)._raw["accel"][0]
    assert torch.allclose(padded[:10], torch.from_numpy(short)) and not padded[10:].any()
    resampled = load(manifest_dir, length=5)._raw["accel"][0]
    assert torch.allclose(resampled[[0, -1]], torch.from_numpy(short[[0, -1]]))
    assert load(manifest_dir, modalities=["feat"]).modalities == ["feat"]
    integers = {"walk": "3", "run": "10"}
    text = (manifest_dir / "manifest.csv").read_text()
    for old, new in integers.items():
        text = text.replace(f",{old},", f",{new},")
    (manifest_dir / "manifest.csv").write_text(text)
    assert load(manifest_dir).class_names == ["3", "10"]  # integer labels sort numerically


def test_normalization_is_fitted_on_the_sources(manifest_dir):
    ds = load(manifest_dir)
    ds.fit_normalization(["car", "home"])
    feat = torch.cat([ds.domain_samples(d).x["feat"] for d in ("car", "home")])
    assert torch.allclose(feat.mean(0), torch.zeros(8), atol=1e-5)
    accel = torch.cat([ds._raw["accel"][ds.domain_indices(d)] for d in ("car", "home")])
    assert torch.allclose(ds.statistics["accel"].mean.flatten(), accel.mean(dim=(0, 1)),
                          atol=1e-5)
    raw = load(manifest_dir, normalize=False)
    assert torch.equal(raw.domain_samples("lab").x["feat"], raw._raw["feat"][raw.domain_indices(
        "lab")])


def test_split_column(tmp_path):
    ds = load(write_manifest(tmp_path / "s", split=True))
    assert ds.HAS_OFFICIAL_SPLITS
    ds.fit_normalization(ds.domains)
    assert len(ds.split("lab", "train", 0, 0.2)) == 4 and len(ds.split("lab", "test", 0, 0.2)) == 2
    text = (tmp_path / "s" / "manifest.csv").read_text().replace(",val,", ",train,")
    (tmp_path / "s" / "manifest.csv").write_text(text)
    ds = load(tmp_path / "s")
    ds.fit_normalization(ds.domains)
    with pytest.raises(ValueError, match="no rows with split='val'"):
        ds.split("lab", "val", 0, 0.2)


def _damage(root: Path) -> None:
    (root / "accel" / "lab-run-1.npy").unlink()  # missing
    path = root / "feat" / "home-walk-2.npy"
    path.write_bytes(path.read_bytes()[:90])  # truncated
    (root / "feat" / "car-run-0.npy").write_bytes(b"not an array at all")  # corrupt
    np.save(root / "feat" / "car-walk-3.npy", np.array([1.0, np.nan, 3, 4, 5, 6, 7, 8]))
    np.save(root / "accel" / "car-walk-1.npy", np.zeros((11, 4)))  # wrong channel count


def test_every_bad_file_is_named_with_its_sample(manifest_dir):
    _damage(manifest_dir)
    with pytest.raises(DataError) as err:
        load(manifest_dir)
    message = str(err.value)
    for culprit in ("sample lab-run-1 (accel)", "accel/lab-run-1.npy: file missing",
                    "sample home-walk-2 (feat)", "home-walk-2.npy: truncated",
                    "sample car-run-0 (feat)", "car-run-0.npy: not a .npy array file",
                    "sample car-walk-3 (feat)", "1 NaN/Inf values",
                    "sample car-walk-1 (accel): shape (11, 4) does not stack"):
        assert culprit in message, culprit


def test_bad_rows_and_columns(manifest_dir):
    path = manifest_dir / "manifest.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[1]  # duplicate sample_id
    lines[3] = lines[3].replace("lab,", ",", 1)  # empty domain
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3 .*duplicate sample_id"):
        load(manifest_dir)
    path.write_text("id,domain,label,accel\n")
    with pytest.raises(DataError, match=r"lack \['sample_id'\]"):
        load(manifest_dir)
    with pytest.raises(FileNotFoundError, match="no manifest.csv"):
        load(manifest_dir / "accel")


def test_data_check(manifest_dir, capsys):
    args = ["data", "check", "--dataset", "manifest", "--data-root", str(manifest_dir),
            "--dataset-option", "progress=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "accel: raw (T 10-13, 3) -> sample shape (13, 3) (length_policy=resample" in out
    assert "OK: 24 readable samples in 3 domains" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["domain"] == ["run", "walk", "total"] and rows["lab"] == ["4", "4", "8"]
    assert rows["total"] == ["12", "12", "24"]
    for i in range(4):  # the car domain loses every "run" sample
        (manifest_dir / "accel" / f"car-run-{i}.npy").unlink()
    _damage(manifest_dir)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "warning: domain 'car' has no samples of classes ['run']" in out
    assert "PROBLEM: sample lab-run-1 (accel)" in out and "FAILED: 9 problem(s)" in out


def test_training_runs_on_a_manifest(tmp_path):
    root = write_manifest(tmp_path / "t", split=True)
    hp = {"epochs": 1, "batch_size": 6, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": {"accel": {"channels": [8, 8]}, "feat": {"hidden": 8, "out_dim": 8}}}
    summary = train(RunConfig(dataset="manifest", target="lab", algorithm="MERDG",
                              data_root=str(root), hparams=hp,
                              dataset_options={"progress": False}), progress=False)
    row = summary["selection"]["source_val"]
    assert {k for k in row if k.startswith("target_probe_acc/")} == {
        "target_probe_acc/accel", "target_probe_acc/feat"}


def test_training_evaluates_corruptions_of_sequences_and_vectors(tmp_path):
    root = write_manifest(tmp_path / "t", split=True)
    hp = {"epochs": 1, "batch_size": 6, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": {"accel": {"channels": [8, 8]}, "feat": {"hidden": 8, "out_dim": 8}}}
    train(RunConfig(dataset="manifest", target="lab", data_root=str(root), hparams=hp,
                    dataset_options={"progress": False},
                    evaluations={"corruptions": {"corruptions": ["gaussian_noise", "spikes"],
                                                 "severities": [1, 5]}},
                    out_dir=str(tmp_path / "run")), progress=False)
    (evaluation,) = [e for e in RunDir(tmp_path / "run").read_evaluations()
                     if e["evaluator"] == "corruptions"]
    details = evaluation["details"]
    for m in ("accel", "feat"):  # a (T, 3) sequence (timeseries kind), a vector (array kind)
        assert {n: sorted(v) for n, v in details["corruptions"][m].items()} == {
            "gaussian_noise": ["1", "5"], "spikes": ["1", "5"]}
    assert details["robustness"]["per_modality"].keys() == {"accel", "feat"}
    assert details["robustness"]["per_severity"].keys() == {"1", "5"}


def test_copied_directory_keeps_working(manifest_dir, tmp_path):
    copy = Path(shutil.copytree(manifest_dir, tmp_path / "copy"))  # paths are relative
    assert len(load(copy).labels("car")) == 8


def test_open_set_on_a_manifest_with_one_known_class_is_refused(tmp_path, capsys):
    """Known class "walk" only would train a one-output model whose every prediction is right
    (known accuracy 1, h_score 0): refused before any run, nothing written (issue 19)."""
    import json

    root = write_manifest(tmp_path / "t", per_cell=8)
    hp = {"epochs": 1, "batch_size": 4, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": {"accel": {"channels": [8, 8]}, "feat": {"hidden": 8, "out_dim": 8}}}
    out = tmp_path / "bench"
    assert main(["bench", "--dataset", "manifest", "--data-root", str(root), "--algorithms",
                 "ERM", "--targets", "lab", "--setting", "all", "--seeds", "1", "--open-set",
                 "--known-classes", "walk", "--hparams", json.dumps(hp),
                 "--dataset-option", "progress=false", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "merdg bench: error: --known-classes lists one class (walk); open-set training needs "
        "at least 2 known classes (with one, the classifier has a single output and always "
        "predicts it)")
    assert not out.exists()
