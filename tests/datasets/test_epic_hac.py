"""EPIC-Kitchens and HAC readers on tiny trees in the exact distributed layouts."""

import os

import pandas as pd
import pytest
import torch
from media_setup import CLIP_OPTIONS

from merdg.cli import main
from merdg.datasets import DATASETS, build_dataset
from merdg.datasets.clips import SampleReadError
from merdg.datasets.epic_kitchens import parse_timestamp


def test_layouts_are_the_published_ones(epic_root, hac_root):
    frame = pd.read_pickle(epic_root / "MM-SADA_Domain_Adaptation_Splits" / "D1_train.pkl")
    assert list(frame.columns) == ["uid", "participant_id", "video_id", "narration",
                                   "start_timestamp", "stop_timestamp", "start_frame",
                                   "stop_frame", "verb", "verb_class"]
    video = frame.video_id[0]
    assert (epic_root / "rgb/train/D1" / video / "frame_0000000001.jpg").exists()
    assert (epic_root / "rgb/train/D1" / f"{video}.wav").exists()
    assert (epic_root / "flow/train/D1" / video / "u/frame_0000000001.jpg").exists()
    row = (hac_root / "HAC_Splits/HAC_train_only_human.csv").read_text().splitlines()[0]
    name, label = row.split(",")
    assert name.endswith(".mp4") and label.isdigit()
    stem = name[:-4]
    for sub in (f"videos/{name}", f"flow/{stem}_flow_x.mp4", f"flow/{stem}_flow_y.mp4",
                f"audio/{stem}.wav"):
        assert (hac_root / "human" / sub).exists(), sub
    assert parse_timestamp("00:01:02.61") == pytest.approx(62.61)


def test_epic_official_splits_and_samples(epic_root):
    ds = build_dataset("epic-kitchens", str(epic_root), None, **CLIP_OPTIONS)
    assert ds.domains == ["D1", "D2", "D3"] and ds.num_classes == 8
    assert ds.class_names[:3] == ["take", "put", "open"]
    assert ds.fusion_order() == ["video", "audio", "flow"]
    train, val, test = (ds.split("D1", role) for role in ("train", "val", "test"))
    assert [r.split for r in train.records] == ["train"] * 4
    assert [r.uid for r in val.records] == [r.uid for r in test.records]
    assert {r.split for r in test.records} == {"test"}
    x, y = val[0]
    assert {m: tuple(v.shape) for m, v in x.items()} == {
        "audio": (1, 257, 1004), "flow": (2, 8, 24, 24), "video": (3, 32, 16, 16)}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in x.values())
    x2, _ = val[0]
    assert all(torch.equal(x[m], x2[m]) for m in x)  # evaluation is deterministic
    torch.manual_seed(0)
    a, _ = train[0]
    b, _ = train[0]
    assert a["video"].shape == (3, 32, 16, 16) and a["flow"].shape == (2, 8, 16, 16)
    assert not torch.equal(a["audio"], b["audio"])  # training noise / mask
    assert ds.input_shape("flow") == (2, 8, 16, 16)


def test_hac_target_protocol_and_flow_audio_order(hac_root):
    ds = build_dataset("hac", str(hac_root), ["audio", "flow"], **CLIP_OPTIONS)
    assert ds.fusion_order() == ["flow", "audio"]  # train_mer_dg.py concatenates (f, a)
    assert len(ds.split("human", "train")) == 4 and len(ds.split("human", "val")) == 4
    assert len(ds.split("human", "test")) == 8  # target: test + train clips
    test_only = build_dataset("hac", str(hac_root), None, target_test="test", **CLIP_OPTIONS)
    assert len(test_only.split("human", "test")) == 4
    x, y = ds.split("animal", "test")[0]
    assert set(x) == {"audio", "flow"} and x["flow"].shape == (2, 8, 24, 24)
    assert 0 <= y < 7
    with pytest.raises(ValueError, match="target_test"):
        build_dataset("hac", str(hac_root), None, target_test="everything")


def test_data_check_reports_counts_and_every_problem(epic_copy, capsys):
    opts = [f"--dataset-option={k}={v}" for k, v in CLIP_OPTIONS.items()]
    assert main(["data", "check", "--dataset", "epic-kitchens", "--data-root", str(epic_copy),
                 *opts]) == 0
    out = capsys.readouterr().out
    assert "D1 train" in out and "D3 test" in out
    assert "OK: 24 readable samples in 6 domain/split parts" in out
    video = pd.read_pickle(epic_copy / "MM-SADA_Domain_Adaptation_Splits/D2_test.pkl").video_id[0]
    folder = epic_copy / "rgb/test/D2" / video
    for i in (80, 81, 82, 100):
        os.remove(folder / f"frame_{i:010d}.jpg")
    os.remove(epic_copy / "rgb/train/D3/P22_10.wav")
    assert main(["data", "check", "--dataset", "epic-kitchens", "--data-root", str(epic_copy),
                 *opts]) == 1
    out = capsys.readouterr().out
    assert "frame_0000000080.jpg .. frame_0000000082.jpg, frame_0000000100.jpg" in out
    assert "P22_10.wav" in out
    assert "FAILED" in out and "D2 test" in out


def test_hac_check_finds_unreadable_video(hac_copy):
    name = (hac_copy / "HAC_Splits/HAC_test_only_cartoon.csv").read_text().split(",")[0]
    (hac_copy / "cartoon/videos" / name).write_bytes(b"garbage" * 10)
    report = DATASETS.get("hac").check(str(hac_copy), **CLIP_OPTIONS)
    assert not report.ok
    assert any(name in p for p in report.problems)
    assert sum(report.counts["cartoon test"].values()) == 3


def test_missing_files_stop_before_training_or_are_skipped(epic_copy):
    video = pd.read_pickle(epic_copy / "MM-SADA_Domain_Adaptation_Splits/D1_train.pkl").video_id[0]
    os.remove(epic_copy / "flow/train/D1" / video / "v" / "frame_0000000010.jpg")
    ds = build_dataset("epic-kitchens", str(epic_copy), None, **CLIP_OPTIONS)
    with pytest.raises(FileNotFoundError, match="frame_0000000010.jpg"):
        ds.split("D1", "train")
    skipping = build_dataset("epic-kitchens", str(epic_copy), None, on_error="skip",
                             **CLIP_OPTIONS)
    assert len(skipping.split("D1", "train")) == 3
    issues = skipping.data_issues()
    assert issues["skipped_before_training"] == 1 and issues["skipped_while_reading"] == 0
    assert "frame_0000000010.jpg" in issues["skipped_samples"][0][1]
    # without flow, the same sample is fine
    no_flow = build_dataset("epic-kitchens", str(epic_copy), ["audio", "video"], **CLIP_OPTIONS)
    assert len(no_flow.split("D1", "train")) == 4


def test_corrupt_file_while_reading_names_it_or_is_replaced(hac_copy):
    name = (hac_copy / "HAC_Splits/HAC_train_only_human.csv").read_text().split(",")[0]
    (hac_copy / "human/videos" / name).write_bytes(b"garbage" * 10)
    ds = build_dataset("hac", str(hac_copy), ["video"], **CLIP_OPTIONS)
    part = ds.split("human", "train")
    with pytest.raises(SampleReadError, match=name):
        part[0]
    skipping = build_dataset("hac", str(hac_copy), ["video"], on_error="skip", **CLIP_OPTIONS)
    part = skipping.split("human", "train")
    x, y = part[0]  # replaced by the next sample of the part
    assert y == part.records[1].label and x["video"].shape == (3, 32, 16, 16)
    issues = skipping.data_issues()
    assert issues["skipped_while_reading"] == 1 and name in issues["skipped_reads"][0]


def test_bad_roots_and_options(tmp_path, epic_root):
    with pytest.raises(ValueError, match="--data-root"):
        build_dataset("epic-kitchens", None)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        build_dataset("hac", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="on_error"):
        build_dataset("epic-kitchens", str(epic_root), on_error="ignore")
    empty = DATASETS.get("epic-kitchens").check(str(tmp_path))
    assert len(empty.problems) == 6 and "D1_train.pkl" in empty.problems[0]


@pytest.mark.parametrize("name,domain,index", [
    ("epic-kitchens", "D2", "MM-SADA_Domain_Adaptation_Splits/D2_test.pkl"),
    ("hac", "animal", "HAC_Splits/HAC_test_only_animal.csv")])
def test_missing_split_file_is_reported_and_named(name, domain, index, epic_copy, hac_copy):
    root = epic_copy if name == "epic-kitchens" else hac_copy
    (root / index).unlink()
    report = DATASETS.get(name).check(str(root), **CLIP_OPTIONS)
    assert not report.ok and any(index in p for p in report.problems)
    dataset = build_dataset(name, str(root), validate=False, **CLIP_OPTIONS)
    with pytest.raises(FileNotFoundError, match=index):
        dataset.split(domain, "test", 0)
