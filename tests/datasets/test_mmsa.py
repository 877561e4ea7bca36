"""The MMSA reader: thuiar/MMSA pickles read without running code, CH-SIMS labels x3, sign
classes, official splits, one line naming every differing feature size, the benchmark's
tasks."""

import os
import pickle

import numpy as np
import pytest
import torch

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.preprocessing import DataError
from merdg.datasets.safe_pickle import UnsafePickleError
from merdg.experiments.plan import ExperimentConfig, tasks
from merdg.run.config import RunConfig
from merdg.testing import make_mmsa_fixture


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_mmsa_fixture(tmp_path_factory.mktemp("mmsa"))


def test_samples_targets_sign_classes_and_official_splits(release):
    data = build_dataset("mmsa", str(release))
    assert data.TASK == "regression" and data.domains == ["mosei", "mosi", "sims"]
    assert data.class_names == ["negative", "zero", "positive"]
    assert data.modality_kind("text") == "text" and data.input_shape("audio") == (10, 6)
    data.fit_normalization(["mosi", "mosei"])
    with open(release / "sims.pkl", "rb") as f:
        raw = pickle.load(f)  # our own fixture: trusted here
    test = data.split("sims", "test", 0, 0.2)
    assert len(test) == 12 and len(data.split("mosi", "val", 0, 0.2)) == 12
    expected = torch.from_numpy(raw["test"]["regression_labels"]).float() * 3  # CH-SIMS x3
    assert torch.allclose(test.target, expected)
    assert test.y.tolist() == (torch.sign(expected) + 1).long().tolist()
    text = test.x["text"]
    assert torch.equal(text, torch.from_numpy(raw["test"]["text"]))  # used as read
    x, y, target = test[1]
    assert y == int(test.y[1]) and target == pytest.approx(float(expected[1]))


def test_standard_thuiar_sizes_stop_with_one_line_naming_each_size(tmp_path, capsys):
    root = make_mmsa_fixture(tmp_path / "std", per_dataset_sizes=True, counts=(4, 2, 2))
    with pytest.raises(DataError) as err:
        build_dataset("mmsa", str(root))
    lines = [line for line in str(err.value).splitlines() if "feature sizes" in line]
    assert len(lines) == 1
    assert "audio mosei 74, mosi 5, sims 33; vision mosei 35, mosi 20, sims 709" in lines[0]
    assert main(["train", "--dataset", "mmsa", "--data-root", str(root), "--target", "sims",
                 "--out", str(tmp_path / "run")]) == 2
    err_text = capsys.readouterr().err
    assert len(err_text.strip().splitlines()) == 1 and "mosi 5" in err_text
    assert not (tmp_path / "run").exists()
    text_only = build_dataset("mmsa", str(root), ["text"])  # text sizes agree (768)
    assert text_only.input_shape("text") == (8, 768)


def test_a_crafted_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    root = make_mmsa_fixture(tmp_path / "m", counts=(4, 2, 2))
    with open(root / "mosi.pkl", "wb") as f:
        pickle.dump({"train": {"text": Payload()}}, f)
    with pytest.raises(UnsafePickleError, match="refused to load posix.system|refused to load "
                       "nt.system"):
        build_dataset("mmsa", str(root))
    assert not marker.exists()
    with open(root / "mosi.pkl", "wb") as f:
        pickle.dump({"train": {"text": torch.zeros(2)}}, f)
    with pytest.raises(UnsafePickleError, match="return_type='np'"):
        build_dataset("mmsa", str(root))


def test_every_bad_file_split_key_and_shape_is_named(tmp_path, capsys):
    root = make_mmsa_fixture(tmp_path / "m", counts=(4, 2, 2))
    (root / "mosei.pkl").unlink()
    with open(root / "sims.pkl", "rb") as f:
        sims = pickle.load(f)
    del sims["valid"]["regression_labels"]
    sims["test"]["audio"] = sims["test"]["audio"][:, :, 0]
    del sims["train"]
    with open(root / "sims.pkl", "wb") as f:
        pickle.dump(sims, f)
    (root / "mosi.pkl").write_bytes(b"\x80\x04truncated")
    assert main(["data", "check", "--dataset", "mmsa", "--data-root", str(root)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("PROBLEM")]
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert "mosei.pkl: file missing" in text and "mosi.pkl: not a readable pickle" in text
    assert "sims.pkl: no split 'train'" in text
    assert "['valid'] has no key 'regression_labels'" in text
    assert "['test']['audio'] has shape (2, 10), expected (N, seq_len, dim)" in text


def test_nonfinite_features_stop_unless_zeroed(tmp_path):
    root = make_mmsa_fixture(tmp_path / "m", counts=(4, 2, 2))
    with open(root / "mosi.pkl", "rb") as f:
        mosi = pickle.load(f)
    mosi["train"]["audio"][0, 0, 0] = -np.inf
    with open(root / "mosi.pkl", "wb") as f:
        pickle.dump(mosi, f)
    with pytest.raises(DataError, match=r"mosi.pkl\['train'\]\['audio'\]: 1 NaN/Inf"):
        build_dataset("mmsa", str(root))
    data = build_dataset("mmsa", str(root), nonfinite="zero")
    assert torch.isfinite(data._raw["audio"]).all()


def test_the_benchmarks_seven_tasks(release):
    data = build_dataset("mmsa", str(release), ["text"])

    def pairs(setting, targets=None):
        experiment = ExperimentConfig(RunConfig(dataset="mmsa"), "x", ["ERM"], setting=setting,
                                      targets=targets)
        return {(t.sources or tuple(d for d in data.domains if d != t.target), t.target)
                for t in tasks(experiment, data.domains, [["text"]], data.OMITTED_TASKS)}

    assert pairs("multi") == {(("mosei", "mosi"), "sims"), (("mosi", "sims"), "mosei")}
    assert pairs("single") == {(("mosei",), "sims"), (("mosi",), "sims"), (("mosi",), "mosei"),
                               (("sims",), "mosi"), (("sims",), "mosei")}
    assert len(pairs("all")) == 7
    with pytest.raises(ValueError, match="has no task with target mosi"):
        pairs("multi", ["mosi"])
