"""The UTD-MHAD reader on a small release written in the authors' layout (MATLAB v5 files)."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import run_outputs
from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets import utd_mhad as utd
from merdg.datasets import utd_mhad_release as release_layout
from merdg.datasets.preprocessing import DataError
from merdg.experiments.plan import ExperimentConfig, first_phase
from merdg.experiments.runner import experiment_tasks
from merdg.run.config import RunConfig
from merdg.run.records import read_jsonl
from merdg.run.training import train

savemat = pytest.importorskip("scipy.io").savemat
loadmat = pytest.importorskip("scipy.io").loadmat

SUBJECTS, ACTIONS, TRIALS = (1, 2, 3), (1, 2, 24), (1, 2)


def _inertial(rng, a, s):
    t = int(rng.integers(20, 40))
    return np.linspace(0, 1, t)[:, None] * np.arange(1, 7) + a + 0.1 * s  # (T_i, 6)


def _skeleton(rng, a, s, frames):
    joints = rng.normal(size=(20, 3, 1)) + np.linspace(0, a, frames)  # (20, 3, T_k)
    return joints + s


def _depth(a, frames):
    clip = np.zeros((240, 320, frames), dtype=np.uint16)
    clip[80:160, 120:200, :] = 1000 + 100 * a  # a block at 1.1 .. 3.4 m
    return clip


def write_release(root: Path, seed: int = 0) -> Path:
    """SUBJECTS x ACTIONS x TRIALS samples, each modality in its folder, real variable names."""
    rng = np.random.default_rng(seed)
    for d in ("Inertial", "Skeleton", "Depth"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "Skeleton" / "Skeleton_joint_order.txt").write_text("1. head;\n")
    for s in SUBJECTS:
        for a in ACTIONS:
            for t in TRIALS:
                name, frames = f"a{a}_s{s}_t{t}", int(rng.integers(5, 9))
                savemat(root / "Inertial" / f"{name}_inertial.mat",
                        {"d_iner": _inertial(rng, a, s)})
                savemat(root / "Skeleton" / f"{name}_skeleton.mat",
                        {"d_skel": _skeleton(rng, a, s, frames)})
                savemat(root / "Depth" / f"{name}_depth.mat", {"d_depth": _depth(a, frames)},
                        do_compression=True)
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("utd") / "utd-mhad")


@pytest.fixture
def damaged(tmp_path, release):
    """A copy of the release with one missing, one truncated and one garbage file."""
    root = Path(shutil.copytree(release, tmp_path / "damaged"))
    (root / "Depth" / "a2_s1_t2_depth.mat").unlink()
    truncated = root / "Skeleton" / "a24_s2_t1_skeleton.mat"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "Inertial" / "a1_s3_t2_inertial.mat").write_bytes(b"MATLAB 5.0 garbage" * 10)
    return root


# small sizes for speed; the fixture holds 18 of the release's 861 samples
SMALL = {"inertial_length": 16, "skeleton_length": 8, "depth_frames": 4, "depth_height": 12,
         "depth_width": 16, "partial_release": True}


def load(root, tmp_path, modalities=None, **options):
    options = {**SMALL, "domains": "subject", **options}
    return build_dataset("utd-mhad", str(root), modalities, cache_dir=str(tmp_path / "cache"),
                         progress=False, **options)


def test_reads_the_layout_and_preprocesses(release, tmp_path):
    ds = load(release.parent, tmp_path)  # the parent directory also works (root/utd-mhad)
    assert ds.domains == ["s1", "s2", "s3"] and ds.num_classes == 27
    assert ds.class_names[23] == "sit to stand"
    assert {m: ds.input_shape(m) for m in ds.modalities} == {
        "depth": (4, 12, 16), "inertial": (16, 6), "skeleton": (8, 60)}
    assert [s.id for s in ds.samples[:3]] == ["a1_s1_t1", "a1_s1_t2", "a2_s1_t1"]
    assert ds.labels("s2") == [0, 0, 1, 1, 23, 23]
    raw = ds._raw
    # inertial: a linear ramp stays a linear ramp with the same endpoints
    first = raw["inertial"][0]
    assert torch.allclose(first[0], torch.full((6,), 1.1), atol=1e-5)
    assert torch.allclose(first[-1], torch.arange(1, 7) + 1.1, atol=1e-5)
    # skeleton: joints are relative to the first frame's hip centre
    hip = raw["skeleton"][0, 0].reshape(20, 3)[release_layout.HIP_CENTER]
    assert torch.allclose(hip, torch.zeros(3), atol=1e-5)
    # depth: metres, area-averaged; the 80..160 x 120..200 block covers cells 4..7 x 6..9
    depth = raw["depth"][ds.samples.index(release_layout.UTDSample(1, 24, 1))]
    assert depth[0, 5, 7].item() == pytest.approx(3.4, abs=1e-4) and depth[0, 0, 0].item() == 0.0


def test_root_from_the_environment(release, tmp_path, monkeypatch):
    monkeypatch.setenv(release_layout.ROOT_ENV, str(release))
    assert release_layout.find_root(None) == release
    assert release_layout.find_root(str(release.parent)) == release  # an explicit root wins
    monkeypatch.delenv(release_layout.ROOT_ENV)
    with pytest.raises(FileNotFoundError, match="MERDG_UTD_MHAD_ROOT"):
        release_layout.find_root(None)
    with pytest.raises(FileNotFoundError, match="tried"):
        release_layout.find_root(str(tmp_path))


def test_domain_groupings(release, tmp_path):
    assert load(release, tmp_path, ["inertial"], domains="1+3,2").domains == ["s1+s3", "s2"]
    default = build_dataset("utd-mhad", str(release), ["inertial"], progress=False,
                            cache_dir=str(tmp_path / "cache"), **SMALL)
    assert default.domains == ["s1+s2", "s3+s4"]  # the default grouping: pairs
    with pytest.raises(ValueError, match="exactly one group"):
        load(release, tmp_path, ["inertial"], domains="1+2")
    with pytest.raises(ValueError, match="skeleton_origin"):
        load(release, tmp_path, skeleton_origin="feet")


def test_every_damaged_file_is_named_with_its_sample(damaged, tmp_path):
    with pytest.raises(DataError) as err:
        load(damaged, tmp_path, ["depth"])
    assert "a2_s1_t2" in str(err.value) and "a2_s1_t2_depth.mat: file missing" in str(err.value)
    with pytest.raises(DataError) as err:
        load(damaged, tmp_path, ["inertial", "skeleton"])
    message = str(err.value)
    assert "1 problem(s) in UTD-MHAD inertial" in message
    assert "1 problem(s) in UTD-MHAD skeleton" in message
    assert "sample a24_s2_t1 (skeleton)" in message and "a24_s2_t1_skeleton.mat" in message
    assert "sample a1_s3_t2 (inertial)" in message and "truncated or corrupt" in message
    assert not list((tmp_path / "cache" / "utd-mhad").glob("skeleton-*"))  # nothing cached


def test_wrong_variable_shape_and_nan_are_rejected(tmp_path, release):
    root = Path(shutil.copytree(release, tmp_path / "bad"))
    savemat(root / "Inertial" / "a1_s1_t1_inertial.mat", {"inertial": np.zeros((30, 6))})
    savemat(root / "Inertial" / "a1_s1_t2_inertial.mat", {"d_iner": np.zeros((30, 5))})
    savemat(root / "Inertial" / "a2_s1_t1_inertial.mat", {"d_iner": np.full((30, 6), np.nan)})
    with pytest.raises(DataError) as err:
        load(root, tmp_path, ["inertial"])
    message = str(err.value)
    assert "a1_s1_t1" in message and "no variable 'd_iner' (found ['inertial'])" in message
    assert "expected shape (T >= 2, 6), got (30, 5)" in message
    assert "sample a2_s1_t1 (inertial)" in message and "180 NaN/Inf" in message


def test_data_check_counts_and_problems(release, damaged, capsys):
    partial = ["--dataset-option", "partial_release=true"]
    assert main(["data", "check", "--dataset", "utd-mhad", "--data-root", str(release),
                 "--dataset-option", "progress=false", *partial]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.strip().startswith("class"))
    assert header.split() == ["class", "s1+s2", "s3+s4", "total"]  # default grouping: pairs
    assert next(line for line in lines if "sit to stand" in line).split()[-3:] == ["4", "2", "6"]
    assert next(line for line in lines if line.startswith("total ")).split() == [
        "total", "12", "6", "18"]
    assert "  subject (in use): 3 values: s1 6, s2 6, s3 6" in out
    assert "  trial: 2 values: t1 9, t2 9" in out
    assert "OK: 18 readable samples in 2 domains" in out
    assert main(["data", "check", "--dataset", "utd-mhad", "--data-root", str(damaged),
                 "--dataset-option", "progress=false", "--dataset-option", "domains=subject",
                 *partial]) == 1
    out = capsys.readouterr().out
    assert out.count("PROBLEM:") == 3 and "FAILED: 3 problem(s)" in out
    assert "a2_s1_t2_depth.mat: file missing" in out and "sample a24_s2_t1 (skeleton)" in out
    assert out.splitlines()[-1] == "FAILED: 3 problem(s): 15 readable samples in 3 domains"


class _Boom(RuntimeError):
    pass


def test_cache_is_keyed_reused_and_never_half_written(release, tmp_path, monkeypatch):
    load(release, tmp_path, ["inertial"])
    entries = list((tmp_path / "cache" / "utd-mhad").glob("inertial-*.npz"))
    assert len(entries) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(utd, "load_modality", fail)
    again = load(release, tmp_path, ["inertial"])  # same settings: read from the cache
    assert again.input_shape("inertial") == (16, 6)
    monkeypatch.undo()

    real_savez = np.savez

    def interrupted(file, **arrays):  # write half of the file, then die
        real_savez(file, **arrays)
        file.truncate(100)
        raise _Boom("killed while writing")

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(_Boom):
        load(release, tmp_path, ["inertial"], inertial_length=20)  # new key: builds
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "cache" / "utd-mhad").iterdir())
    # no half-written entry, no temporary file left
    assert names == sorted([entries[0].name, entries[0].with_suffix(".json").name])
    assert load(release, tmp_path, ["inertial"], inertial_length=20).input_shape("inertial") == (
        20, 6)
    assert len(list((tmp_path / "cache" / "utd-mhad").glob("inertial-*.npz"))) == 2


def test_unreadable_cache_entry_is_rebuilt_with_a_warning(release, tmp_path, caplog):
    load(release, tmp_path, ["skeleton"])
    entry = next((tmp_path / "cache" / "utd-mhad").glob("skeleton-*.npz"))
    entry.write_bytes(entry.read_bytes()[:50])
    with caplog.at_level(logging.WARNING, "merdg"):
        ds = load(release, tmp_path, ["skeleton"])
    assert f"preprocessing cache entry {entry} is damaged" in caplog.text
    assert ds.input_shape("skeleton") == (8, 60)


def test_changed_input_file_changes_the_cache_key(release, tmp_path):
    root = Path(shutil.copytree(release, tmp_path / "copy"))
    load(root, tmp_path, ["inertial"])
    path = root / "Inertial" / "a1_s1_t1_inertial.mat"
    savemat(path, {"d_iner": np.ones((25, 6))})
    os.utime(path, ns=(1, 1))
    ds = load(root, tmp_path, ["inertial"])
    assert torch.equal(ds._raw["inertial"][0], torch.ones(16, 6))
    assert len(list((tmp_path / "cache" / "utd-mhad").glob("inertial-*.npz"))) == 2


def test_a_rewritten_file_with_its_old_mtime_changes_the_cache_key(release, tmp_path):
    """The key is the files' content (issue 19: a file rewritten with other values of the same
    shape and its modification time set back got the old content's entry)."""
    root = Path(shutil.copytree(release, tmp_path / "copy"))
    load(root, tmp_path, ["inertial"])
    path = root / "Inertial" / "a1_s1_t1_inertial.mat"
    stat = path.stat()
    savemat(path, {"d_iner": -loadmat(path)["d_iner"]})
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    rebuilt = load(root, tmp_path, ["inertial"])._raw["inertial"][0]
    fresh = load(root, tmp_path / "fresh", ["inertial"])._raw["inertial"][0]
    assert torch.equal(rebuilt, fresh) and rebuilt[0, 0].item() < 0


def test_flipped_bytes_in_an_entry_are_found_and_rebuilt(release, tmp_path, caplog):
    load(release, tmp_path, ["inertial"])
    [entry] = (tmp_path / "cache" / "utd-mhad").glob("inertial-*.npz")
    data = bytearray(entry.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    entry.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "merdg"):
        again = load(release, tmp_path, ["inertial"])._raw["inertial"]
    assert [r.getMessage().split(" (its sha256")[0] for r in caplog.records] == [
        f"preprocessing cache entry {entry} is damaged"]
    assert torch.equal(again, load(release, tmp_path / "fresh", ["inertial"])._raw["inertial"])


def test_a_full_cache_disk_keeps_the_arrays_in_memory(release, tmp_path, caplog, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(800 * 1024, 0, 800 * 1024))
    with caplog.at_level(logging.WARNING, "merdg"):
        ds = load(release, tmp_path, ["skeleton"])
    directory = tmp_path / "cache" / "utd-mhad"
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot write the preprocessing cache to {directory}: it needs 1.0 MiB, only 0.8 MiB "
        "are free; building the arrays in memory instead (free some space, or point "
        "$MERDG_CACHE_DIR or the dataset option cache_dir to another directory)"]
    assert list(directory.iterdir()) == [] and ds.input_shape("skeleton") == (8, 60)


def test_normalization_uses_the_source_domains_only(release, tmp_path):
    ds = load(release, tmp_path, ["inertial", "depth"])
    with pytest.raises(RuntimeError, match="fit_normalization"):
        ds.domain_samples("s1")[0]  # splits exist before the fit; samples are read after it
    ds.fit_normalization(["s1", "s2"])
    sources = torch.cat([ds.domain_samples(d).x["inertial"] for d in ("s1", "s2")])
    assert torch.allclose(sources.mean(dim=(0, 1)), torch.zeros(6), atol=1e-4)
    assert torch.allclose(sources.std(dim=(0, 1), unbiased=False), torch.ones(6), atol=1e-4)
    assert ds.statistics["depth"].mean.numel() == 1  # one scalar for depth clips
    stats = ds.statistics["inertial"].mean.clone()
    target = ds.domain_indices("s3")
    ds._raw["inertial"][target] *= 100.0  # a wildly different target changes nothing
    ds.fit_normalization(["s1", "s2"])
    assert torch.equal(ds.statistics["inertial"].mean, stats)
    assert not torch.allclose(ds.domain_samples("s3").x["inertial"].mean(dim=(0, 1)),
                              torch.zeros(6), atol=1.0)


def test_training_runs_on_the_release(release, tmp_path):
    hp = {"epochs": 1, "batch_size": 6, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": {"depth": {"channels": [4, 8]}, "inertial": {"channels": [8, 8]},
                       "skeleton": {"channels": [8, 8]}}}
    summary = train(RunConfig(dataset="utd-mhad", target="s3", algorithm="MERDG",
                              data_root=str(release), hparams=hp,
                              dataset_options={**SMALL, "cache_dir": str(tmp_path / "c"),
                                               "progress": False, "domains": "subject"}),
                    progress=False)
    chosen = summary["selection"]["source_val"]
    assert {k.split("/")[1] for k in chosen if k.startswith("target_probe_acc/")} == {
        "depth", "inertial", "skeleton"}
    assert 0.0 <= chosen["target_acc"] <= 1.0


def test_train_evaluates_the_corruption_suite(release, tmp_path, capsys):
    hp = {"epochs": 1, "batch_size": 6, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": {"inertial": {"channels": [8, 8]}, "skeleton": {"channels": [8, 8]}}}
    options = [f"--dataset-option={k}={json.dumps(v)}" for k, v in {
        **SMALL, "domains": "subject", "cache_dir": str(tmp_path / "c")}.items()]
    out = tmp_path / "run"
    assert main(["train", "--dataset", "utd-mhad", "--data-root", str(release), "--modalities",
                 "inertial,skeleton", "--target", "s3", "--hparams", json.dumps(hp), *options,
                 "--corruptions", "all", "--severities", "3", "--out", str(out), "--json"]) == 0
    selection = json.loads(capsys.readouterr().out)["selection"]
    nested = run_outputs.evaluation(out, "corruptions")["details"]["corruptions"]
    names = ["bias_drift", "gaussian_noise", "magnitude_warp", "missing", "sample_dropout",
             "spikes", "time_warp"]  # every time-series corruption, for both modalities
    for m in ("inertial", "skeleton"):
        assert sorted(nested[m]) == names
        assert nested[m]["time_warp"].keys() == {"3"}
    accuracies = [a for per in nested.values() for s in per.values() for a in s.values()]
    assert len(accuracies) == 14
    assert selection["source_val"]["target_corruption_acc"] == pytest.approx(
        sum(accuracies) / 14)


def test_bench_compares_the_declared_modality_sets(release, tmp_path):
    base = RunConfig(dataset="utd-mhad", data_root=str(release),
                     dataset_options={**SMALL, "cache_dir": str(tmp_path / "c"),
                                      "progress": False})
    bench = ExperimentConfig(base=base, algorithms=["ERM", "MERDG"], out_dir=str(tmp_path),
                             seeds=3)
    configs = [job.config for job in first_phase(bench, experiment_tasks(bench))]
    assert len(configs) == 2 * 2 * 2 * 3  # modality sets x algorithms x targets x seeds
    assert {"+".join(c.modalities) for c in configs} == {"inertial+skeleton",
                                                          "depth+inertial+skeleton"}
    assert {c.target for c in configs} == {"s1+s2", "s3+s4"}


def _real_release() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for c in (os.environ.get(release_layout.ROOT_ENV),
              here.parent / "shared" / "data" / "utd-mhad"):
        if c and (Path(c) / "Inertial").is_dir():
            return Path(c)
    return None


@pytest.mark.skipif(_real_release() is None, reason="the shared UTD-MHAD release is absent")
def test_real_release_file_list():
    root = _real_release()
    samples, ignored = release_layout.discover_samples(root)
    assert len(samples) == 861 and not ignored
    assert not {s.id for s in samples} & set(release_layout.RELEASE_MISSING)
    per_subject = [sum(s.subject == k for s in samples) for k in release_layout.SUBJECTS]
    assert per_subject == [107, 108, 108, 108, 108, 107, 108, 107]
    for m in ("depth", "inertial", "skeleton"):
        assert all(s.path(root, m).is_file() for s in samples)


def test_subject_action_groups_keep_trials_together(release, tmp_path):
    ds = load(release, tmp_path, ["inertial"], domains="1+2,3+4", groups="subject_action")
    ds.fit_normalization(ds.domains)
    groups = ds.domain_groups("s1+s2")
    assert groups[:2] == ["s1_a1", "s1_a1"]  # trials 1 and 2 of subject 1, action 1
    positions = ds.domain_indices("s1+s2")
    for seed in range(4):
        val = ds.split("s1+s2", "val", seed, 0.3)
        train_part = ds.split("s1+s2", "train", seed, 0.3)
        val_groups = {groups[k] for k, p in enumerate(positions.tolist()) if p in
                      val.index.tolist()}
        train_groups = {groups[k] for k, p in enumerate(positions.tolist()) if p in
                        train_part.index.tolist()}
        assert val_groups and not val_groups & train_groups
    recording = load(release, tmp_path, ["inertial"], domains="1+2,3+4")
    assert recording.domain_groups("s1+s2") is None  # default: the published holdout
    with pytest.raises(ValueError, match=r"groups must be one of \['recording', "
                                         r"'subject_action'\], got 'trial'"):
        load(release, tmp_path, ["inertial"], groups="trial")


def test_single_source_open_set_bench_on_the_release(release, tmp_path):
    """Every source->target pair into s3, open set with actions 1 and 2 known (the release's
    third action, 24, is unknown), and the paired table against ERM."""
    import json

    hp = {"epochs": 1, "batch_size": 2, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": {"inertial": {"channels": [8, 8]}, "skeleton": {"channels": [8, 8]}}}
    out = tmp_path / "bench"
    options = {**SMALL, "cache_dir": str(tmp_path / "c"), "progress": False,
               "domains": "subject"}
    assert main(["bench", "--dataset", "utd-mhad", "--data-root", str(release),
                 "--modality-sets", "inertial+skeleton", "--algorithms", "ERM", "MERDG",
                 "--targets", "s3", "--setting", "single", "--seeds", "1", "--open-set",
                 "--known-classes", "0,1", "--hparams", json.dumps(hp),
                 *[f"--dataset-option={k}={json.dumps(v)}" for k, v in options.items()],
                 "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "utd-mhad (single-source, source->target, open-set, known classes 0,1)" in table
    assert "| s1->s3 | s2->s3 | avg |" in table
    assert "| inertial+skeleton | MERDG | ERM | 2 |" in table  # 2 pairs x 1 seed
    record = json.loads((out / "runs/inertial+skeleton/ERM/s1-to-s3/seed0/records.jsonl")
                        .read_text().splitlines()[0])
    assert record["target"]["n"] == 4 and record["target"]["n_unknown"] == 2  # 2 trials each
    assert record["run"]["sources"] == ["s1"]


# --- candidate domain columns (subject, trial) and the where filter --------------------------

def test_domain_column_and_where_choose_domains_and_recordings(release, tmp_path):
    by_trial = load(release, tmp_path, ["inertial"], domain_column="trial", domains=None)
    assert by_trial.domains == ["t1", "t2"] and by_trial.labels("t2") == [0, 1, 23] * 3
    others = load(release, tmp_path, ["inertial"], domains="each", where="subject:s2,s3")
    assert others.domains == ["s2", "s3"]
    assert {s.subject for s in others.samples} == {2, 3} and len(others.samples) == 12
    legacy = load(release, tmp_path, ["inertial"], where="subject:s2,s3")  # domains=subject
    assert legacy.domains == others.domains and torch.equal(legacy._raw["inertial"],
                                                            others._raw["inertial"])
    paired = load(release, tmp_path, ["inertial"], domains="pairs",
                  where={"subject": ["s1", "s2", "s3"], "trial": "t2"})
    assert paired.domains == ["s1+s2", "s3+s4"] and len(paired.samples) == 9
    assert {s.trial for s in paired.samples} == {2}
    grouped = load(release, tmp_path, ["inertial"], domain_column="trial", domains="2+1")
    assert grouped.domains == ["t2+t1"] and len(grouped.samples) == 18


def test_where_reads_only_the_selected_files_and_caches_each_selection(damaged, release,
                                                                        tmp_path):
    full = load(release, tmp_path, ["inertial"])
    first = load(release, tmp_path, ["inertial"], domains="each", where="subject:s1,s2")
    second = load(release, tmp_path, ["inertial"], domains="each", where="subject:s2,s3")
    for ds in (first, second):  # each selection's arrays are its own recordings'
        rows = [full.samples.index(s) for s in ds.samples]
        assert torch.equal(ds._raw["inertial"], full._raw["inertial"][rows])
    assert len(list((tmp_path / "cache" / "utd-mhad").glob("inertial-*.npz"))) == 3
    # s1's depth file is missing in the damaged copy: a selection without s1 never reads it
    assert load(damaged, tmp_path, ["depth"], domains="each",
                where="subject:s2,s3").domains == ["s2", "s3"]
    with pytest.raises(DataError, match="a2_s1_t2_depth.mat: file missing"):
        load(damaged, tmp_path, ["depth"], domains="each", where="subject:s1,s2")


def test_absent_release_samples_are_those_of_the_selection(release, tmp_path):
    with pytest.raises(DataError) as err:
        load(release, tmp_path, ["inertial"], domain_column="trial", domains=None,
             where="subject:s1", partial_release=False)
    message = str(err.value)
    assert "a1_s1_t3" in message and "_s2_" not in message and "_s4_" not in message
    assert "101 samples of the official release are absent" in message  # 107 in s1, 6 here


def test_data_check_lists_the_subject_and_trial_columns(release, capsys):
    assert main(["data", "check", "--dataset", "utd-mhad", "--data-root", str(release),
                 *[x for o in ("progress=false", "partial_release=true", "domain_column=trial",
                               "where=subject:s2,s3") for x in ("--dataset-option", o)]]) == 0
    out = capsys.readouterr().out
    assert "  subject: 2 values: s2 6, s3 6\n" in out
    assert "  trial (in use): 2 values: t1 6, t2 6\n" in out
    assert "where=subject:s2,s3: 12 of 18 rows selected" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("class"))
    assert header.split() == ["class", "t1", "t2", "total"]
    assert out.splitlines()[-1] == "OK: 12 readable samples in 2 domains"


@pytest.mark.parametrize("options, message", [
    (["where=subject:s9"], "value s9 of column 'subject' matches no sample; its values are s1, "
                           "s2, s3"),
    (["where=subject:1,2"], "values 1, 2 of column 'subject' match no sample"),
    (["where=action:a1"], "no column 'action' to select samples by; the columns are subject, "
                          "trial"),
    (["where=subject:s1", "domains=each"], "leaves 1 domain (s1) in the domain column 'subject'"),
    (["where=subject:s1,s2"], "leaves 1 domain (s1+s2) in the domain column 'subject'"),
    (["where=subject:s3;trial:t3"], "value t3 of column 'trial' matches no sample"),
    (["where=subject:s1", "where=trial:t1"], "where is given twice"),
    (["domain_column=action"], "domain_column must be one of ['subject', 'trial']"),
    (["domain_column=trial", "domains=subject"], "domains=subject makes each subject a domain, "
                                                 "but domain_column is 'trial': use domains=each"),
    (["domain_column=trial", "domains=1+2,2"], "every trial must be in exactly one group"),
])
def test_bad_domain_options_are_one_line_before_any_file_is_read(release, tmp_path, capsys,
                                                                 monkeypatch, options, message):
    def never(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(utd, "read_raw", never)
    monkeypatch.setattr(utd, "load_modality", never)
    opts = [x for o in ("progress=false", "partial_release=true", *options)
            for x in ("--dataset-option", o)]
    for command in (["data", "check"], ["train", "--target", "s2", "--out", str(tmp_path)]):
        assert main([*command, "--dataset", "utd-mhad", "--data-root", str(release), *opts]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_pretrain_on_some_subjects_then_bench_the_others(release, tmp_path):
    """The two-command workflow of docs/utd-mhad.md: encoders pretrained on subject 1 (its
    trials as the holdout's domains), then leave-one-subject-out over subjects 2 and 3 from
    those encoders."""
    import hashlib

    encoders = {"inertial": {"channels": [8, 8]}, "skeleton": {"channels": [8, 8]}}
    small = [f"--dataset-option={k}={json.dumps(v)}" for k, v in {
        **SMALL, "cache_dir": str(tmp_path / "c"), "progress": False}.items()]
    out = tmp_path / "encoders.pt"
    assert main(["pretrain", "--dataset", "utd-mhad", "--data-root", str(release),
                 "--modalities", "inertial", "skeleton", *small,
                 "--dataset-option", "where=subject:s1", "--dataset-option", "domain_column=trial",
                 "--epochs", "2", "--batch-size", "2", "--encoders", json.dumps(encoders),
                 "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["pretraining"]["domains"] == ["t1", "t2"]
    assert saved["pretraining"]["dataset_options"]["where"] == "subject:s1"
    hp = {"epochs": 1, "batch_size": 4, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": encoders}
    bench = tmp_path / "bench"
    assert main(["bench", "--dataset", "utd-mhad", "--data-root", str(release), *small,
                 "--dataset-option", "where=subject:s2,s3", "--dataset-option", "domains=each",
                 "--modality-sets", "inertial+skeleton", "--init", str(out),
                 "--algorithms", "ERM", "MERDG", "--seeds", "1", "--hparams", json.dumps(hp),
                 "--out", str(bench)]) == 0
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    for algorithm in ("ERM", "MERDG"):
        for target, source in (("s2", "s3"), ("s3", "s2")):
            records = list(read_jsonl(
                bench / f"runs/inertial+skeleton/{algorithm}/{target}/seed0/records.jsonl"))
            run = records[0]["run"]
            assert run["sources"] == [source] and records[-1]["target"]["n"] == 6
            assert run["init"]["kind"] == "file" and run["init"]["sha256"] == digest
