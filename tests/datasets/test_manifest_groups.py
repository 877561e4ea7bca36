"""Grouped holdout (issue 15 item 1): a ``group`` column keeps the windows of one recording on one
side of the source-validation holdout, and ``data check`` reports groups or warns."""

import shutil

import pytest
import torch

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.base import holdout_indices
from merdg.datasets.groups import split_leaks, windowed_stems, windows_warning
from merdg.hparams import seed_hash
from merdg.testing import write_windowed_manifest

SMALL = {"domains": 2, "classes": 2, "recordings": 4, "recording_steps": 96, "window": 32,
         "hop": 16}  # 5 windows per recording, 40 samples per domain


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))


def _reference_holdout(n, fraction, seed, domain):
    """The holdout before groups existed: the first round(fraction * n) of a seeded permutation."""
    g = torch.Generator().manual_seed(seed_hash("holdout", seed, domain))
    perm = torch.randperm(n, generator=g).tolist()
    n_val = int(round(fraction * n))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def test_holdout_without_groups_is_unchanged():
    for n, fraction, seed, domain in [(50, 0.2, 1, "d0"), (861, 0.2, 3, "s1+s2"), (7, 0.3, 0, "x")]:
        assert holdout_indices(n, fraction, seed, domain) == _reference_holdout(
            n, fraction, seed, domain)
        singletons = [f"g{i}" for i in range(n)]  # one sample per group: the same split
        assert holdout_indices(n, fraction, seed, domain, singletons) == _reference_holdout(
            n, fraction, seed, domain)


def test_grouped_holdout_keeps_each_group_on_one_side():
    groups = [f"rec{i // 7}" for i in range(70)] + [f"big{i // 20}" for i in range(40)]  # 110
    for seed in range(5):
        train, val = holdout_indices(len(groups), 0.2, seed, "d", groups)
        assert sorted(train + val) == list(range(len(groups)))
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert 22 - 20 / 2 <= len(val) <= 22 + 20 / 2  # within half of the largest group
        assert (train, val) == holdout_indices(len(groups), 0.2, seed, "d", groups)
    assert holdout_indices(110, 0.2, 0, "d", groups) != holdout_indices(110, 0.2, 1, "d", groups)
    with pytest.raises(ValueError, match="domain 'd' has 1 group"):
        holdout_indices(10, 0.2, 0, "d", ["only"] * 10)
    with pytest.raises(ValueError, match="3 group names for 4 samples"):
        holdout_indices(4, 0.2, 0, "d", ["a", "b", "c"])


def test_windowed_ids_heuristic():
    windows = [f"p{p}_walk_{w}" for p in range(3) for w in range(5)]
    assert list(windowed_stems(windows)) == ["p0_walk_", "p1_walk_", "p2_walk_"]
    assert "15 of 15 ids" in windows_warning(windows)
    numbered = [f"clip{i:04d}" for i in range(30)]  # one running number: not windows
    assert windowed_stems(numbered) == {} and windows_warning(numbered) is None
    assert windowed_stems(["a", "b", "walk_1", "run_1"]) == {}  # no shared stem
    few = [f"r{k}_w{w}" for k in range(2) for w in range(2)] + [f"x{c}y" for c in "abcdef"]
    assert windowed_stems(few) == {}  # 4 of 10 ids: under half
    assert split_leaks(["d", "d", "d"], ["g1", "g1", "g2"], ["train", "val", "val"]) == {
        "d": ["g1"]}


def test_manifest_group_column_drives_the_holdout(tmp_path):
    grouped = build_dataset("manifest", str(write_windowed_manifest(tmp_path / "g", **SMALL)),
                            progress=False)
    plain = build_dataset("manifest", str(write_windowed_manifest(
        tmp_path / "p", group_column=False, **SMALL)), progress=False)
    assert grouped.modalities == plain.modalities == ["accel"]  # "group" is no modality
    for ds in (grouped, plain):
        ds.fit_normalization(ds.domains)

    def recordings(ds, role, seed):
        part = ds.split("d0", role, seed, 0.2)
        ids = [ds.sample_ids[i] for i in part.index.tolist()]
        return {sid.rsplit("_w", 1)[0] for sid in ids}

    for seed in range(3):
        assert not recordings(grouped, "train", seed) & recordings(grouped, "val", seed)
        assert len(grouped.split("d0", "val", seed, 0.2)) == 10  # 2 of the 8 recordings
    leaked = [recordings(plain, "train", s) & recordings(plain, "val", s) for s in range(3)]
    assert all(leaked)  # without groups, windows of one recording land on both sides
    assert grouped.domain_groups("d1")[:5] == ["d1_c0_r0"] * 5 and plain.domain_groups("d1") is None


def test_data_check_reports_groups_or_warns(tmp_path, capsys):
    def check(root, *options):
        args = ["data", "check", "--dataset", "manifest", "--data-root", str(root),
                "--dataset-option", "progress=false"]
        for option in options:
            args += ["--dataset-option", option]
        assert main(args) == 0
        return capsys.readouterr().out

    out = check(write_windowed_manifest(tmp_path / "g", **SMALL))
    assert "groups per domain (the holdout keeps each group on one side): d0: 8 (5 samples " \
           "each); d1: 8 (5 samples each)" in out
    assert "warning" not in out
    out = check(write_windowed_manifest(tmp_path / "p", group_column=False, **SMALL))
    assert "groups: no 'group' column, every sample is its own group" in out
    assert "warning: no 'group' column, and the sample ids look like windows" in out
    assert "80 of 80 ids end in a number" in out and "'d0_c0_r0_w' x 5" in out

    split_root = tmp_path / "s"
    shutil.copytree(tmp_path / "g", split_root)
    lines = (split_root / "manifest.csv").read_text().splitlines()
    header = lines[0] + ",split"
    body = [f"{line},{('train', 'train', 'train', 'val', 'test')[i % 5]}"
            for i, line in enumerate(lines[1:])]  # every recording in every split
    (split_root / "manifest.csv").write_text("\n".join([header, *body]) + "\n")
    out = check(split_root)
    assert "warning: domain 'd0': 8 group(s) have rows in more than one split" in out


def test_empty_group_cell_is_a_problem(tmp_path):
    root = write_windowed_manifest(tmp_path / "g", **SMALL)
    text = (root / "manifest.csv").read_text().replace(",d0_c1_r2\n", ",\n", 1)
    (root / "manifest.csv").write_text(text)
    with pytest.raises(ValueError, match=r"line \d+ \(sample d0_c1_r2_w000\): empty 'group'"):
        build_dataset("manifest", str(root), progress=False)
