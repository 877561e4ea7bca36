"""Untrusted data folders (docs/reliability.md): manifests and UTD-MHAD releases crafted to
escape the data root, hide values training cannot use, or be misread; each case is named in one
line by `merdg data check` (exit 1) and stops `merdg train` before any work (exit 2)."""

import csv
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.preprocessing import DataError

DOMAINS, LABELS = ("lab", "home", "car"), ("walk", "run")
HPARAMS = ('{"epochs": 1, "batch_size": 6, "proj_hidden": 8, "fusion_hidden": 8, "encoders": '
           '{"accel": {"channels": [4, 4]}, "feat": {"hidden": 4, "out_dim": 4}}}')


def write_manifest(root: Path, encoding: str = "utf-8") -> Path:
    """3 domains x 2 labels x 3 samples; accel (T, 3) float32, feat (4,) float64."""
    rng = np.random.default_rng(0)
    (root / "accel").mkdir(parents=True)
    (root / "feat").mkdir()
    rows = []
    for d in DOMAINS:
        for label in LABELS:
            for i in range(3):
                sid = f"{d}-{label}-{i}"
                np.save(root / "accel" / f"{sid}.npy", rng.normal(0, 1, (8 + i, 3)).astype("f4"))
                np.save(root / "feat" / f"{sid}.npy", rng.normal(0, 1, 4))
                rows.append([sid, d, label, f"accel/{sid}.npy", f"feat/{sid}.npy"])
    write_rows(root, rows, encoding)
    return root


def write_rows(root: Path, rows: list[list[str]], encoding: str = "utf-8") -> None:
    with open(root / "manifest.csv", "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "domain", "label", "accel", "feat"])
        writer.writerows(rows)


def set_cell(root: Path, sample: str, column: int, value: str) -> None:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    write_rows(root, [r[:column] + [value] + r[column + 1:] if r[0] == sample else r
                      for r in rows])


@pytest.fixture
def data(tmp_path):
    return write_manifest(tmp_path / "data")


def check(root, capsys, *options):
    """(exit status, PROBLEM lines) of `merdg data check`."""
    opts = [x for o in ("progress=false", *options) for x in ("--dataset-option", o)]
    status = main(["data", "check", "--dataset", "manifest", "--data-root", str(root), *opts])
    out = capsys.readouterr().out
    return status, [line for line in out.splitlines() if line.startswith("PROBLEM")]


def train(root, capsys, tmp_path, *options):
    """(exit status, stderr) of `merdg train` on the manifest."""
    opts = [x for o in ("progress=false", *options) for x in ("--dataset-option", o)]
    status = main(["train", "--dataset", "manifest", "--data-root", str(root), "--target", "lab",
                   "--out", str(tmp_path / "run"), "--hparams", HPARAMS, *opts])
    return status, capsys.readouterr().err


# --- nothing from a data folder escapes it ----------------------------------------------------

def _outside_file(data: Path) -> Path:
    secret = data.parent / "secret.npy"
    np.save(secret, np.ones((9, 3), dtype="f4"))
    return secret


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "symlinked_folder"])
def test_paths_that_leave_the_data_root_are_refused(case, data, capsys, tmp_path):
    secret = _outside_file(data)
    if case == "absolute":
        set_cell(data, "home-walk-0", 3, str(secret))
    elif case == "dotdot":
        set_cell(data, "home-walk-0", 3, "accel/../../secret.npy")
    elif case == "symlink":
        os.symlink(secret, data / "accel" / "link.npy")
        set_cell(data, "home-walk-0", 3, "accel/link.npy")
    else:
        os.symlink(secret.parent, data / "elsewhere")
        set_cell(data, "home-walk-0", 3, "elsewhere/secret.npy")
    status, problems = check(data, capsys)
    assert status == 1 and len(problems) == 1
    assert problems[0].startswith("PROBLEM: sample home-walk-0 (accel): ")
    assert ("absolute path" if case == "absolute" else "outside the data root") in problems[0]
    assert "allow_outside_root=true" in problems[0]
    status, err = train(data, capsys, tmp_path)
    assert status == 2 and "sample home-walk-0 (accel)" in err and not (tmp_path / "run").exists()
    # the user may opt out explicitly
    assert check(data, capsys, "allow_outside_root=true") == (0, [])
    ds = build_dataset("manifest", str(data), progress=False, allow_outside_root=True)
    assert "home-walk-0" in ds.sample_ids
    with pytest.raises(ValueError, match="allow_outside_root must be true or false"):
        build_dataset("manifest", str(data), progress=False, allow_outside_root="yes")


@pytest.mark.parametrize("case", ["dotdot", "symlink"])
def test_a_cache_entry_built_with_the_opt_out_never_lets_a_refused_path_through(
        case, data, capsys, tmp_path, monkeypatch):
    """The verified cache is keyed by content: an entry built with allow_outside_root=true
    holds the outside file's bytes, and a later run without the opt-out must still refuse."""
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))
    secret = _outside_file(data)
    if case == "dotdot":
        set_cell(data, "home-walk-0", 3, "accel/../../secret.npy")
    else:
        os.symlink(secret, data / "accel" / "link.npy")
        set_cell(data, "home-walk-0", 3, "accel/link.npy")
    ds = build_dataset("manifest", str(data), progress=False, allow_outside_root=True)
    assert "home-walk-0" in ds.sample_ids and any((tmp_path / "cache").rglob("*.json"))
    with pytest.raises(DataError, match="sample home-walk-0 \\(accel\\): .*outside the data root"):
        build_dataset("manifest", str(data), progress=False)
    status, problems = check(data, capsys)
    assert status == 1 and len(problems) == 1 and "outside the data root" in problems[0]


def test_names_with_line_breaks_or_nul_stay_on_one_line(data, capsys, tmp_path):
    set_cell(data, "home-walk-0", 3, "accel/x\ny.npy")
    set_cell(data, "home-walk-1", 0, "home\nwalk\r1")
    set_cell(data, "car-run-0", 1, "car\nlab")  # a domain name with a line break
    opts = ["--dataset-option", "progress=false"]
    assert main(["data", "check", "--dataset", "manifest", "--data-root", str(data), *opts]) == 1
    lines = capsys.readouterr().out.splitlines()
    problems = [line for line in lines if line.startswith("PROBLEM")]
    assert len(problems) == 1  # the sample id itself is fine: only its path
    assert problems[0].endswith("accel/x\\ny.npy: the path contains a line break")
    assert any(line.startswith("car\\nlab ") for line in lines)  # its row of the table
    write_rows(data, [["a\0b", "lab", "walk", "accel/lab-walk-0.npy", "feat/lab-walk-0.npy"]])
    with pytest.raises(DataError, match=r"manifest.csv line 2: NUL byte"):
        build_dataset("manifest", str(data), progress=False)


# --- what training will see ---------------------------------------------------------------

@pytest.mark.parametrize("sample", ["home-walk-0", "lab-walk-0"])  # a source, the target
def test_values_beyond_float32_are_found_before_training(sample, data, capsys, tmp_path):
    np.save(data / "accel" / f"{sample}.npy", np.full((8, 3), 1e300))  # finite in float64
    status, problems = check(data, capsys)
    assert status == 1 and problems == [
        f"PROBLEM: sample {sample} (accel): {data / 'accel' / sample}.npy: 24 values beyond the "
        "float32 range (|x| > 3.4e+38); training reads float32, where they become inf"]
    status, err = train(data, capsys, tmp_path)
    assert status == 2 and f"sample {sample} (accel)" in err and "float32" in err
    assert not (tmp_path / "run").exists()


def test_values_that_overflow_once_standardized(data, capsys, tmp_path):
    for path in (data / "accel").iterdir():  # sources of spread ~0.1 ...
        np.save(path, np.load(path) * 0.1)
    np.save(data / "accel" / "lab-walk-0.npy", np.full((8, 3), 3e38, dtype="f4"))  # ... x 1e1
    status, problems = check(data, capsys)
    assert status == 1 and any("sample lab-walk-0 (accel): its values overflow float32 once "
                               "standardized" in p for p in problems)
    status, err = train(data, capsys, tmp_path)
    assert status == 2 and "overflow float32 once standardized" in err
    assert "sample lab-walk-0" in err


@pytest.mark.parametrize("array,message", [
    (np.ones((8, 3)) * (1 + 2j), "complex values (dtype complex128)"),
    (np.zeros((0, 3)), "empty array (shape (0, 3))"),
    (np.zeros((8, 0)), "empty array (shape (8, 0))"),
    (np.float32(3), "a 0-d array"),
    (np.array([{"a": 1}, None], dtype=object), "holds Python objects (dtype object)"),
    (np.array(["a", "b"]), "non-numeric dtype <U1"),
    (np.ones(3), "shape (3,) does not stack"),  # a vector among (T, 3) sequences
    (np.ones((8, 3, 1)), "shape (8, 3, 1) does not stack"),
])
def test_arrays_training_cannot_use(array, message, data, capsys, tmp_path):
    np.save(data / "accel" / "home-walk-0.npy", array, allow_pickle=True)
    status, problems = check(data, capsys)
    assert status == 1 and len(problems) == 1
    assert problems[0].startswith("PROBLEM: sample home-walk-0 (accel)") and message in problems[0]
    status, err = train(data, capsys, tmp_path)
    assert status == 2 and message in err and not (tmp_path / "run").exists()


def _rewrite_header(path: Path, old: bytes, new: bytes, pad: int = 0) -> None:
    data = path.read_bytes()
    length = int.from_bytes(data[8:10], "little")
    header = data[10:10 + length].replace(old, new).rstrip(b"\n") + b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header
                     + data[10 + length:])


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(pickle.dumps(np.ones((8, 3)))), "it looks like a pickle"),
    (lambda p: np.savez(open(p, "wb"), a=np.ones((8, 3))), "zip archive"),
    (lambda p: _rewrite_header(p, b"", b"", pad=70000), "header is 70"),
    (lambda p: _rewrite_header(p, b"(8, 3)", b"(8000000000, 3)"),
     "header declares shape (8000000000, 3) of float32 (96000000000 bytes)"),
    (lambda p: p.write_bytes(p.read_bytes()[:-20]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:60]), "truncated: the .npy header needs"),
])
def test_files_that_are_not_plain_npy_arrays(damage, message, data, capsys):
    damage(data / "accel" / "home-walk-0.npy")
    status, problems = check(data, capsys)
    assert status == 1 and len(problems) == 1
    assert problems[0].startswith("PROBLEM: sample home-walk-0 (accel)") and message in problems[0]


def test_a_cell_naming_a_directory(data, capsys):
    set_cell(data, "home-walk-0", 3, "accel")
    assert check(data, capsys)[1] == [
        f"PROBLEM: sample home-walk-0 (accel): {data / 'accel'}: is a directory, not a .npy file"]


# --- the manifest file itself -------------------------------------------------------------

def test_header_only_manifest_fails_the_check(data, capsys, tmp_path):
    write_rows(data, [])
    assert check(data, capsys) == (
        1, [f"PROBLEM: {data / 'manifest.csv'}: no sample rows (only a header)"])
    status, err = train(data, capsys, tmp_path)
    assert status == 2 and "no sample rows" in err


def test_utf8_with_byte_order_mark_is_read(tmp_path, capsys):
    root = write_manifest(tmp_path / "bom", encoding="utf-8-sig")
    assert (root / "manifest.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    assert check(root, capsys) == (0, [])


@pytest.mark.parametrize("encoding,message", [
    ("utf-16", "manifest.csv: UTF-16/UTF-32 text (byte-order mark ff fe); save the manifest as "
               "UTF-8"),
    ("latin-1", "manifest.csv line 5: byte 0xe9 at column 16 is not UTF-8; save the manifest as "
                "UTF-8"),
])
def test_other_encodings_are_named_with_file_and_line(encoding, message, data, capsys,
                                                      tmp_path):
    text = (data / "manifest.csv").read_text().replace("lab,run", "lab,ré", 1)
    (data / "manifest.csv").write_bytes(text.encode(encoding))
    for command in (["data", "check"], ["train", "--target", "lab", "--out", str(tmp_path / "r")]):
        assert main([*command, "--dataset", "manifest", "--data-root", str(data)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("header,message", [
    (b"sample_id,domain,label,accel,accel", "column(s) ['accel'] appear more than once"),
    (b"sample_id,domain,label,accel,,feat", "column(s) [5] have no name"),
])
def test_ambiguous_headers(header, message, data, capsys):
    lines = (data / "manifest.csv").read_bytes().split(b"\r\n")
    (data / "manifest.csv").write_bytes(b"\r\n".join([header, *lines[1:]]))
    assert main(["data", "check", "--dataset", "manifest", "--data-root", str(data)]) == 2
    assert message in capsys.readouterr().err


def test_a_field_over_the_csv_limit_names_the_line(data, capsys):
    set_cell(data, "home-walk-0", 2, "x" * 200_000)
    assert main(["data", "check", "--dataset", "manifest", "--data-root", str(data)]) == 2
    err = capsys.readouterr().err
    assert "manifest.csv line 8: not readable as CSV" in err and err.count("\n") == 1


def test_labels_that_look_numeric_but_are_not(data):
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    write_rows(data, [r[:2] + [{"walk": "²", "run": "--3"}[r[2]]] + r[3:] for r in rows])
    ds = build_dataset("manifest", str(data), progress=False)  # int("²") would fail
    assert ds.class_names == ["--3", "²"]


# --- UTD-MHAD ---------------------------------------------------------------------------

savemat = pytest.importorskip("scipy.io").savemat
SMALL = {"inertial_length": 8, "skeleton_length": 4, "depth_frames": 2, "depth_height": 6,
         "depth_width": 8}


def write_release(root: Path) -> Path:
    """Two subjects x actions 1, 2 x trial 1, inertial and skeleton only."""
    rng = np.random.default_rng(0)
    for d in ("Inertial", "Skeleton"):
        (root / d).mkdir(parents=True)
    for s in (1, 2):
        for a in (1, 2):
            savemat(root / "Inertial" / f"a{a}_s{s}_t1_inertial.mat",
                    {"d_iner": rng.normal(size=(20, 6))})
            savemat(root / "Skeleton" / f"a{a}_s{s}_t1_skeleton.mat",
                    {"d_skel": rng.normal(size=(20, 3, 6))})
    return root


def utd(root, tmp_path, **options):
    return build_dataset("utd-mhad", str(root), ["inertial", "skeleton"], progress=False,
                         cache_dir=str(tmp_path / "cache"), domains="subject",
                         **{**SMALL, **options})


def utd_check(root, capsys, *options):
    opts = [x for o in ("progress=false", "domains=subject", *options)
            for x in ("--dataset-option", o)]
    status = main(["data", "check", "--dataset", "utd-mhad", "--data-root", str(root),
                   "--modalities", "inertial,skeleton", *opts])
    out = capsys.readouterr().out
    return status, [line for line in out.splitlines() if line.startswith("PROBLEM")]


def test_utd_training_names_every_bad_file_in_one_pass(tmp_path):
    root = write_release(tmp_path / "utd")
    (root / "Inertial" / "a1_s1_t1_inertial.mat").unlink()  # missing
    truncated = root / "Inertial" / "a2_s2_t1_inertial.mat"
    truncated.write_bytes(truncated.read_bytes()[:150])
    (root / "Skeleton" / "a2_s1_t1_skeleton.mat").write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        utd(root, tmp_path, partial_release=True)
    message = str(err.value)
    for culprit in ("sample a1_s1_t1 (inertial)", "a1_s1_t1_inertial.mat: file missing",
                    "sample a2_s2_t1 (inertial)", "sample a2_s1_t1 (skeleton)"):
        assert culprit in message, culprit
    assert not list((tmp_path / "cache").rglob("inertial-*"))  # nothing cached from it


def test_utd_samples_absent_from_every_folder_are_problems(tmp_path, capsys):
    root = write_release(tmp_path / "utd")
    status, problems = utd_check(root, capsys)
    assert status == 1 and len(problems) == 861 - 4
    assert problems[0] == ("PROBLEM: sample a1_s1_t2: absent from every modality folder (the "
                           "official release has it; --dataset-option partial_release=true "
                           "accepts a partial release)")
    with pytest.raises(DataError, match="857 samples of the official release are absent"):
        utd(root, tmp_path)
    assert utd_check(root, capsys, "partial_release=true") == (0, [])
    assert len(utd(root, tmp_path, partial_release=True).samples) == 4


@pytest.mark.parametrize("value,message", [
    (np.full((20, 6), 1e300), "120 values beyond the float32 range"),
    (np.ones((20, 6)) * (1 + 1j), "complex values (dtype complex128)"),
])
def test_utd_values_training_cannot_use(value, message, tmp_path, capsys):
    root = write_release(tmp_path / "utd")
    savemat(root / "Inertial" / "a1_s2_t1_inertial.mat", {"d_iner": value})
    status, problems = utd_check(root, capsys, "partial_release=true")
    assert status == 1 and len(problems) == 1
    assert problems[0].startswith("PROBLEM: sample a1_s2_t1 (inertial)") and message in problems[0]
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        utd(root, tmp_path, partial_release=True)


def test_utd_symlink_leaving_the_root_is_refused(tmp_path, capsys):
    root = write_release(tmp_path / "utd")
    outside = tmp_path / "elsewhere.mat"
    shutil.move(root / "Skeleton" / "a1_s1_t1_skeleton.mat", outside)
    os.symlink(outside, root / "Skeleton" / "a1_s1_t1_skeleton.mat")
    status, problems = utd_check(root, capsys, "partial_release=true")
    assert status == 1 and len(problems) == 1 and "outside the data root" in problems[0]
    with pytest.raises(DataError, match="a1_s1_t1_skeleton.mat: resolves to"):
        utd(root, tmp_path, partial_release=True)
    assert len(utd(root, tmp_path, partial_release=True, allow_outside_root=True).samples) == 4
