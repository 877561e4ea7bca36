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

    monkeypatch.setattr("merdg.pretraining.UnimodalPretraining.run", no_training)
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
