"""The HUST reader: the benchmark's windows from the 24 text files, the .mat files, the
per-class validation split, the disjoint alternative and every bad file named."""

from pathlib import Path

import numpy as np
import pytest
import torch

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.hust import CONDITIONS, DOMAINS, STATES, HUSTWindows, read_txt_release
from merdg.datasets.preprocessing import DataError
from merdg.testing import make_hust_fixture

SMALL = {"window": 16, "train_windows": 6, "test_windows": 4}
HEADER = "Title:\tx\nParameters:\ty\nFrequency:\t1\nTime\tA\tB\tC\tD\n"


def write_index_release(root: Path, rows: int, junk: bool = False) -> Path:
    """24 text files whose rows encode (file, row): vibration axes (r, 0, 0), so its norm is
    r, and sound 1000 * file + r."""
    root.mkdir(parents=True, exist_ok=True)
    for c, condition in enumerate(CONDITIONS):
        for s, state in enumerate(STATES):
            k = 6 * c + s
            lines = [f"{r / 100:.2f}\t{r}\t0\t0\t{1000 * k + r}" for r in range(rows)]
            if junk:
                lines.insert(3, "a stray line")
            (root / f"{state}_{condition}.txt").write_text(HEADER + "\n".join(lines) + "\n")
    return root


def test_text_windows_are_cut_as_the_benchmarks_preprocessing(tmp_path):
    rows = 40
    root = write_index_release(tmp_path / "r", rows, junk=True)
    recordings, problems, notes = read_txt_release(root, HUSTWindows(**SMALL))
    assert not problems and len(notes) == 24 and "1 line(s)" in notes[0]
    # the spec: one default_rng(42) over conditions then states; choice without
    # replacement of train + test starts, then shuffle; the first `train` are training windows
    rng = np.random.default_rng(42)
    for c in range(len(CONDITIONS)):
        for s, state in enumerate(STATES):
            starts = rng.choice(rows - 16 + 1, size=10, replace=False)
            rng.shuffle(starts)
            vib_train, vib_test = recordings[(DOMAINS[c], state)]["vibration"]
            aud_train, _ = recordings[(DOMAINS[c], state)]["acoustic"]
            assert np.array_equal(vib_train[:, 0], starts[:6])  # norm of (r, 0, 0) is r
            assert np.array_equal(vib_test[:, 0], starts[6:])
            assert np.array_equal(vib_train[0], np.arange(starts[0], starts[0] + 16))
            assert aud_train[0, 0] == 1000 * (6 * c + s) + starts[0]


def test_disjoint_windows_share_no_sample(tmp_path):
    root = write_index_release(tmp_path / "r", 10 * 16)
    recordings, problems, _ = read_txt_release(root, HUSTWindows(**SMALL, windows="disjoint"))
    assert not problems
    train, test = recordings[("D2", "BOW")]["vibration"]
    starts = np.concatenate([train[:, 0], test[:, 0]])
    assert sorted(starts.tolist()) == list(range(0, 160, 16))  # consecutive, no overlap


def test_dataset_split_windows_scaling_and_the_per_class_validation(tmp_path):
    root = make_hust_fixture(tmp_path / "h", window=64, train_windows=20, test_windows=10)
    data = build_dataset("hust", str(root), None, **{"window": 64, "train_windows": 20,
                                                     "test_windows": 10, "val_per_class": 4})
    assert data.domains == list(DOMAINS) and data.class_names == list(STATES)
    assert data.input_shape("vibration") == (64, 1) and data.source == "txt"
    data.fit_normalization(["D2", "D3", "D4"])
    test = data.split("D1", "test", 0, 0.2)
    train, val = data.split("D2", "train", 0, 0.2), data.split("D2", "val", 0, 0.2)
    assert len(test) == 60 and len(train) == 6 * 16 and len(val) == 6 * 4
    assert not set(train.index.tolist()) & set(val.index.tolist())
    x = test.x["acoustic"]
    assert torch.allclose(x.amin(dim=1), torch.zeros(60, 1), atol=1e-6)  # each window in [0, 1]
    assert torch.allclose(x.amax(dim=1), torch.ones(60, 1), atol=1e-6)
    # the benchmark's split: RandomState(split_seed) shuffles each class's windows in turn
    positions = data._positions("D2", "train")
    labels = data._y[torch.from_numpy(positions)].numpy()
    rng, expected = np.random.RandomState(8), []
    for c in range(6):
        idx = positions[labels == c].copy()
        rng.shuffle(idx)
        expected += idx[:4].tolist()
    assert sorted(expected) == val.index.tolist()


def test_mat_files_are_read_class_major_and_bad_keys_are_named(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "m"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {f"load{d}_{s}": rng.standard_normal((32, 6 * n)) for d in range(1, 5)
              for s, n in (("train", 3), ("test", 2))}
    savemat(root / "Motor_Vib.mat", arrays)
    savemat(root / "Motor_Aud.mat", {k: v + 1 for k, v in arrays.items()})
    data = build_dataset("hust", str(root), ["vibration"])
    data.fit_normalization(["D1"])
    test = data.split("D3", "test", 0, 0.2)
    window = arrays["load3_test"][:, 2 * 2]  # class 2, its first test window
    scaled = (window - window.min()) / (window.max() - window.min() + 1e-8)
    assert int(test.y[4]) == 2
    assert torch.allclose(test.x["vibration"][4, :, 0], torch.from_numpy(scaled).float())
    del arrays["load2_test"]
    arrays["load4_train"] = arrays["load4_train"][:, :7]
    savemat(root / "Motor_Vib.mat", arrays)
    with pytest.raises(DataError) as err:
        build_dataset("hust", str(root))
    text = str(err.value)
    assert "Motor_Vib.mat: no key 'load2_test'" in text
    assert "load4_train has shape (32, 7)" in text


def test_bad_text_files_each_get_one_line(tmp_path, capsys):
    root = write_index_release(tmp_path / "r", 40)
    (root / "BF_10HZ.txt").unlink()
    text = (root / "H_20HZ.txt").read_text().replace("\t5\t0\t0\t", "\tnan\t0\t0\t", 1)
    (root / "H_20HZ.txt").write_text(text)
    (root / "UNBAL_30HZ.txt").write_text(HEADER + "1\t2\t3\t4\t5\n")
    options = [f"--dataset-option={k}={v}" for k, v in SMALL.items()]
    assert main(["data", "check", "--dataset", "hust", "--data-root", str(root), *options]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("PROBLEM")]
    assert len(problems) == 3
    assert "BF_10HZ.txt: file missing" in problems[0]
    assert "H_20HZ.txt line 10: non-finite" in problems[1]
    assert "UNBAL_30HZ.txt: 1 data rows, fewer than the 25" in problems[2]
    assert main(["data", "check", "--dataset", "hust", "--data-root", str(root),
                 "--dataset-option", "windows=overlapping"]) == 2
    assert "windows must be one of" in capsys.readouterr().err


def test_window_options_need_the_text_files(tmp_path):
    root = make_hust_fixture(tmp_path / "m", form="mat", window=48, train_windows=4,
                             test_windows=2)
    assert build_dataset("hust", str(root)).source == "mat"
    with pytest.raises(ValueError, match="need the text files"):
        build_dataset("hust", str(root), source="mat", windows="disjoint")
