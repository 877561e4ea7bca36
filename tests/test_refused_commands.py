"""A refused command leaves every byte as it was and says why in one line (issue 19).

Each case runs the command line in a test folder, compares the digests of everything under it
before and after (:func:`snapshots.tree_digest`: files, hidden files, temporary files and
folders), and checks the exit status and the whole message.
"""

import json
import pickle
import re

import numpy as np
import pytest
import torch

from merdg.cli import main
from snapshots import tree_digest

TINY = {"batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16, "epochs": 1}
OPTS = ["--dataset-option", "samples_per_domain=40", "--dataset-option", "n_classes=3"]
PROGRESS = re.compile(r"it/s|^epoch \d+/|: an epoch is \d+ steps of|^warning: \w+ probe on")


def refused(args, folder, capsys) -> str:
    """Run ``args``; assert exit status 2, one error line and ``folder`` untouched; return the
    line."""
    before = tree_digest(folder)
    capsys.readouterr()
    code = main([str(a) for a in args])
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and not PROGRESS.search(line)]
    assert code == 2 and len(lines) == 1, (code, lines)
    assert tree_digest(folder) == before
    return lines[0]


def train_args(out, *extra, hparams=None):
    return ["train", "--dataset", "synthetic", "--target", "d1", "--hparams",
            json.dumps({**TINY, **(hparams or {})}), "--out", out, *OPTS, *extra]


# --- --init files that are not encoder weights ----------------------------------------------

def _write_init_files(folder):
    """Every kind of bad --init file, and what the refusal says about it."""
    encoders = {"m0.net.0.weight": torch.zeros(4, 4)}
    torch.save(encoders, folder / "good.pt")
    whole = (folder / "good.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[:len(whole) // 2])
    flipped = bytearray(whole)
    start = whole.index(b"data/0") + 64  # inside the stored tensor's bytes
    flipped[start:start + 8] = bytes(b ^ 0xFF for b in flipped[start:start + 8])
    (folder / "flipped.pt").write_bytes(bytes(flipped))
    (folder / "notes.txt").write_text("encoder weights are in the other folder\n")
    (folder / "plain.pkl").write_bytes(pickle.dumps({"m0.w": [1, 2]}))
    np.save(folder / "array.npy", np.zeros(3))
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"m0.w": torch.zeros(1), "note": _NotATensor()}, folder / "objects.pt")


class _NotATensor:
    pass


INIT_CASES = {
    "notes.txt": "cannot read checkpoint notes.txt: it is a text file (it starts with 'encoder "
                 "weights are in the other'), not a file written by torch.save",
    "truncated.pt": "cannot read checkpoint truncated.pt: truncated or damaged: it starts as the "
                    "zip archive torch.save writes, but the archive's end cannot be found in "
                    "its {size} bytes; copy or save it again",
    "flipped.pt": "cannot read checkpoint flipped.pt: damaged: the checksum of its part "
                  "'good/data/0' does not match; copy or save it again",
    "plain.pkl": "cannot read checkpoint plain.pkl: it is a Python pickle, not a file written by "
                 "torch.save (merdg never unpickles arbitrary objects)",
    "array.npy": "cannot read checkpoint array.npy: it is a NumPy .npy array, not a file written "
                 "by torch.save",
    "empty.pt": "cannot read checkpoint empty.pt: the file is empty (0 bytes)",
    "objects.pt": "cannot read checkpoint objects.pt: it holds objects other than tensors and "
                  "plain containers (Unsupported global: GLOBAL test_refused_commands."
                  "_NotATensor was not an allowed global by default). merdg loads pretrained "
                  "encoder weights with weights_only=True only: save them as a plain state "
                  "dict (torch.save(model.state_dict(), path)).",
    "good.pt": "good.pt has no encoder for ['m1', 'm2']: it holds encoders ['m0'] (layout "
               "'encoders'). Load only the modalities it has with modalities=[...].",
}


@pytest.mark.parametrize("name", list(INIT_CASES))
def test_an_init_file_that_is_not_the_weights_writes_nothing(name, tmp_path, capsys,
                                                              monkeypatch):
    """Before: a text file said `error: 101`, a truncated file that it held "objects other than
    tensors", and every failed --init left config.json in --out."""
    monkeypatch.chdir(tmp_path)
    _write_init_files(tmp_path)
    message = INIT_CASES[name].format(size=(tmp_path / name).stat().st_size)
    assert refused(train_args("run", "--init", name), tmp_path, capsys) == (
        f"merdg train: error: {message}")


def test_a_failed_init_keeps_the_finished_run_it_would_overwrite(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_init_files(tmp_path)
    assert main(train_args("run")) == 0
    line = refused(train_args("run", "--init", "notes.txt", "--overwrite"), tmp_path, capsys)
    assert line.startswith("merdg train: error: cannot read checkpoint notes.txt: it is a text")


def test_a_bench_checks_its_init_file_before_the_first_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_init_files(tmp_path)
    line = refused(["bench", "--dataset", "synthetic", "--algorithms", "ERM", "--seeds", "1",
                    "--targets", "d1", "--hparams", json.dumps(TINY), "--init", "truncated.pt",
                    "--out", "B", *OPTS], tmp_path, capsys)
    assert line.startswith("merdg bench: error: cannot read checkpoint truncated.pt: truncated")


# --- merdg pretrain --out --------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [False, True])
def test_pretrain_out_naming_a_directory_is_refused_before_training(overwrite, tmp_path, capsys,
                                                                    monkeypatch):
    """Before: it trained fully, then failed with a raw `[Errno 21]` and left a `.pt.tmpNNNN`
    file beside the directory (with --overwrite); without it, it suggested --overwrite."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "encoders").mkdir()

    def no_training(*args, **kwargs):
        raise AssertionError("refused before training")

    monkeypatch.setattr("merdg.run.pretraining.UnimodalPretraining.run", no_training)
    args = ["pretrain", "--out", "encoders", "--epochs", "1", "--dataset-option",
            "n_classes=3", *(["--overwrite"] if overwrite else [])]
    assert refused(args, tmp_path, capsys) == (
        "merdg pretrain: error: --out encoders is a directory; give the path of the file to "
        "write, e.g. encoders/encoders.pt")


def test_pretrain_out_below_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("a file")
    assert refused(["pretrain", "--out", "notes/enc.pt", "--epochs", "1"], tmp_path, capsys) == (
        "merdg pretrain: error: cannot write --out notes/enc.pt: notes is a file, not a "
        "directory")


# --- settings that cannot mean anything ------------------------------------------------------

@pytest.mark.parametrize("known, message", [
    ("0", "--known-classes lists one class (0); open-set training needs at least 2 known "
          "classes (with one, the classifier has a single output and always predicts it)"),
    ("class1", None),  # by name: the same refusal
    ("0,1,2", "--known-classes lists every class; open-set evaluation needs at least one "
              "unknown class"),
])
def test_open_set_with_one_known_class_or_all_is_refused(known, message, tmp_path, capsys,
                                                        monkeypatch):
    """Before: `--open-set --known-classes 0` trained a one-output model (ce 0.0) and reported
    a target accuracy of 100 % and an h_score of 0, exit 0."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "--dataset", "synthetic", "--target", "d1", "--hparams",
            json.dumps({"batch_size": 6, "epochs": 1}), "--dataset-option", "n_classes=3",
            "--dataset-option", "samples_per_domain=40", "--open-set", "--known-classes", known,
            "--out", "run"]
    line = refused(args, tmp_path, capsys)
    if message is None:
        assert line.startswith(f"merdg train: error: --known-classes lists one class ({known})")
    else:
        assert line == f"merdg train: error: {message}"


def test_a_published_open_set_split_of_one_class_is_refused():
    from merdg.evaluation.open_set import resolve_known_classes

    class OneKnown:
        OPEN_SET_KNOWN_CLASSES = (0,)
        class_names = ["a", "b", "c"]

    with pytest.raises(ValueError, match=r"^dataset one: its published open-set split \[0\] "
                       "does not fit its 3 classes"):
        resolve_known_classes(OneKnown(), None, "one")


def _manifest(folder, edit=None, vectors=False):
    """A small windowed manifest (3 domains, 6 recordings each as groups) whose rows ``edit``
    may change; ``vectors`` adds a modality ``pos`` of fixed-size (4,) arrays."""
    import csv

    from merdg.testing import write_windowed_manifest

    root = write_windowed_manifest(folder, domains=3, classes=2, recordings=3,
                                   recording_steps=64, window=32, hop=16)
    with open(root / "manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if vectors:
        (root / "pos").mkdir()
        for i, row in enumerate(rows):
            np.save(root / "pos" / f"{row['sample_id']}.npy", np.full(4, i, np.float32))
            row["pos"] = f"pos/{row['sample_id']}.npy"
    for row in rows:
        (edit or (lambda r: None))(row)
    with open(root / "manifest.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def manifest_train(root, *extra):
    return ["train", "--dataset", "manifest", "--data-root", root, "--target", "d2",
            "--hparams", json.dumps({"epochs": 1, "batch_size": 6}), "--out", "run", *extra]


def test_a_group_spanning_domains_is_refused(tmp_path, capsys, monkeypatch):
    """Before: accepted without a word; the holdout, which splits each domain on its own, could
    put the group's rows of one domain in training and those of another in validation."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))

    def shared(row):
        if row["group"] == "d2_c0_r0":
            row["group"] = "d1_c0_r0"

    root = _manifest(tmp_path / "data", shared)
    problem = (f"{root / 'manifest.csv'}: group 'd1_c0_r0' has rows in 2 domains: 'd1' (line "
               "20), 'd2' (line 38); the holdout splits each domain on its own, so the group "
               "would straddle training and validation: give each domain's rows their own "
               "group names (e.g. '<domain>/d1_c0_r0')")
    assert refused(manifest_train(root), tmp_path, capsys) == (
        f"merdg train: error: 1 problem(s) in {root / 'manifest.csv'}: - {problem}")
    assert main(["data", "check", "--dataset", "manifest", "--data-root", str(root)]) == 1
    assert f"PROBLEM: {problem}" in capsys.readouterr().out.splitlines()


def test_a_domain_of_one_group_fails_the_data_check(tmp_path, tmp_path_factory, capsys,
                                                    monkeypatch):
    """Before: `data check` passed, and every run with the domain among its sources failed.
    (A run learns which domains are sources after the data is read: the preprocessing cache,
    kept elsewhere here, may then hold the data's entries, which later runs reuse.)"""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))

    def one_group(row):
        if row["domain"] == "d0":
            row["group"] = "only"

    root = _manifest(tmp_path / "data", one_group)
    capsys.readouterr()
    assert main(["data", "check", "--dataset", "manifest", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert ("PROBLEM: domain 'd0' has one group ('only'): as a source it cannot give both a "
            "training and a validation part (the holdout keeps each group whole), so it can only "
            "be a target; give it more groups, or add a 'split' column") in out
    assert refused(manifest_train(root), tmp_path, capsys) == (
        "merdg train: error: domain 'd0' has 1 group(s) (['only']); a holdout of 0.2 needs at "
        "least two groups, one for training and one for validation: give the domain more "
        "groups, or leave it out of the sources (--source)")


@pytest.mark.parametrize("length, message", [
    ('{"accel": 10, "gyro": 5}', "dataset option length names modalities ['gyro'] that the "
     "manifest does not have (its modalities: ['accel', 'pos'])"),
    ('{"accel": 10, "pos": 2}', "dataset option length gives 2 frames to 'pos', whose arrays "
     "have the fixed shape (4,) (no time axis); remove 'pos' from length"),
])
def test_length_for_an_unknown_or_fixed_size_modality_is_refused(length, message, tmp_path,
                                                                 capsys, monkeypatch):
    """Before: the unknown `gyro` and the length of the (4,) vectors were ignored in silence."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))
    root = _manifest(tmp_path / "data", vectors=True)
    option = ["--dataset-option", f"length={length}"]
    assert refused(manifest_train(root, *option), tmp_path, capsys) == (
        f"merdg train: error: {message}")
    assert refused(["data", "check", "--dataset", "manifest", "--data-root", root, *option],
                   tmp_path, capsys) == f"merdg data check: error: {message}"


def test_one_length_for_fixed_size_arrays_only_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))
    root = _manifest(tmp_path / "data", vectors=True)
    assert refused(manifest_train(root, "--modalities", "pos", "--dataset-option", "length=8"),
                   tmp_path, capsys) == (
        "merdg train: error: dataset option length=8: no modality is a sequence (every array "
        "has a fixed shape: pos (4,)); remove the option")
    # with a sequence modality beside it, one number is the sequences' length: accepted
    assert main([str(a) for a in manifest_train(root, "--dataset-option", "length=8")]) == 0


# --- experiment metadata ---------------------------------------------------------------------

def test_a_refused_bench_leaves_experiment_json_as_it_was(tmp_path, capsys, monkeypatch):
    """Before: a bench refused because its runs hold another config (exit 2) had already
    rewritten `experiment.json` with the refused config, so `merdg collect` then compared
    against the refused --reference instead of the one the bench's own table used."""
    monkeypatch.chdir(tmp_path)
    bench = ["bench", "--dataset", "synthetic", "--algorithms", "ERM,MERDG", "--seeds", "1",
             "--targets", "d1", "--modality-sets", "m0+m1", "--out", "B", *OPTS]
    assert main([*bench, "--hparams", json.dumps({**TINY, "epochs": 2})]) == 0
    line = refused([*bench, "--hparams", json.dumps({**TINY, "epochs": 3}), "--reference",
                    "MERDG"], tmp_path, capsys)
    assert line.startswith("merdg bench: error: 2 run directories of this experiment hold other "
                           "runs; the first: ")
    assert "hparams.epochs: 2 (saved) vs 3 (requested)" in line


# --- logging back-ends -----------------------------------------------------------------------

def test_bench_wandb_without_the_package_is_refused_before_the_first_job(tmp_path, capsys,
                                                                        monkeypatch):
    """Before: every job built its data, wrote config.json, then failed."""
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    for command in (["bench", "--seeds", "1"], ["sweep", "--trials", "0", "--seeds", "1"]):
        line = refused([*command, "--dataset", "synthetic", "--algorithms", "ERM", "--targets",
                        "d1", "--hparams", json.dumps(TINY), "--wandb", "--out", "B", *OPTS],
                       tmp_path, capsys)
        assert line.startswith(f"merdg {command[0]}: error: --wandb needs the wandb package: "
                               "pip install 'merdg[wandb]' (")
    line = refused(train_args("run", "--wandb"), tmp_path, capsys)
    assert line.startswith("merdg train: error: --wandb needs the wandb package")


def test_wandb_options_need_wandb(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused(train_args("run", "--wandb-project", "p", "--wandb-group", "g"), tmp_path,
                   capsys) == ("merdg train: error: --wandb-project, --wandb-group only apply "
                               "with --wandb (wandb is not set)")
