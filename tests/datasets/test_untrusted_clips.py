"""Untrusted EPIC-Kitchens and HAC folders (docs/reliability.md): split files that would run
code, rows that cannot be used, names and symlinks that leave the data root. `merdg data check`
names each in one PROBLEM line (exit 1); training stops before any work (exit 2), naming every
problem in one pass."""

import copyreg
import io
import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from media_setup import CLIP_OPTIONS

from merdg.cli import main
from merdg.datasets import DATASETS, build_dataset
from merdg.datasets.preprocessing import DataError
from merdg.datasets.safe_pickle import UnsafePickleError, load_dataframe

SPLITS = "MM-SADA_Domain_Adaptation_Splits"
OPTIONS = [f"--dataset-option={k}={v}" for k, v in CLIP_OPTIONS.items()]


def epic_rows(n: int = 3, **changes) -> dict[str, list]:
    """The 10 MM-SADA columns for ``n`` segments; ``changes`` replaces whole columns."""
    columns = {"uid": list(range(n)), "participant_id": ["P08"] * n,
               "video_id": ["P08_10"] * n, "narration": ["take x"] * n,
               "start_timestamp": ["00:00:01.00"] * n, "stop_timestamp": ["00:00:02.00"] * n,
               "start_frame": [60 + 100 * k for k in range(n)],
               "stop_frame": [120 + 100 * k for k in range(n)], "verb": ["take"] * n,
               "verb_class": [k % 8 for k in range(n)]}
    return {**columns, **changes}


def object_frame(columns: dict[str, list]) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    frame = frame.astype({c: object for c in frame.columns
                          if not pd.api.types.is_numeric_dtype(frame[c])})
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    return frame


class CreateFile:
    """A pickle payload: unpickling it creates ``path`` (what an attacker's code could do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def epic_check(root, capsys):
    status = main(["data", "check", "--dataset", "epic-kitchens", "--data-root", str(root),
                   *OPTIONS])
    out = capsys.readouterr().out
    return status, [line for line in out.splitlines() if line.startswith("PROBLEM")]


def epic_train(root, capsys, tmp_path, *extra):
    status = main(["train", "--dataset", "epic-kitchens", "--data-root", str(root), "--target",
                   "D3", "--out", str(tmp_path / "run"), *OPTIONS, *extra])
    return status, capsys.readouterr().err


# --- split pickles ----------------------------------------------------------------------

def test_a_pickle_payload_never_runs(tmp_path, capsys):
    root = tmp_path / "epic"
    (root / SPLITS).mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    payloads = {"D1_train": CreateFile(marker),  # the whole file
                "D2_train": object_frame(epic_rows(video_id=["P01_01", CreateFile(marker),
                                                             "P01_01"]))}  # one cell
    for name, payload in payloads.items():
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
            (root / SPLITS / f"{name}.pkl").write_bytes(pickle.dumps(payload, protocol=protocol))
            status, problems = epic_check(root, capsys)
            assert status == 1 and not marker.exists()
            ours = [p for p in problems if f"{name}.pkl" in p]
            # the first global the pickle asks for (protocol 0 builds a DataFrame by copy_reg)
            nested_v0 = (protocol, name) == (0, "D2_train")
            refused = "copy_reg._reconstructor" if nested_v0 else "io.open"
            assert len(ours) == 1 and f"refused to load {refused}," in ours[0]
            assert "nothing from the file was run" in ours[0]
    status, err = epic_train(root, capsys, tmp_path)
    assert status == 2 and not marker.exists() and not (tmp_path / "run").exists()
    assert "D1_train.pkl: refused to load io.open" in err and "D2_train.pkl" in err
    pickle.loads((root / SPLITS / "D1_train.pkl").read_bytes())  # pandas.read_pickle would...
    assert marker.exists()  # ... run it


@pytest.mark.parametrize("payload,message", [
    ([1, 2, 3], "holds a list, not a pandas DataFrame"),
    ({"video_id": "P01_01"}, "holds a dict, not a pandas DataFrame"),
    (pd.Series([1, 2]), "refused to load pandas.Series"),
    (b"not a pickle", "not a readable pandas pickle"),
])
def test_a_split_file_that_is_not_a_dataframe(payload, message, tmp_path, capsys):
    root = tmp_path / "epic"
    (root / SPLITS).mkdir(parents=True)
    data = payload if isinstance(payload, bytes) else pickle.dumps(payload)
    (root / SPLITS / "D1_test.pkl").write_bytes(data)
    status, problems = epic_check(root, capsys)
    assert status == 1 and any("D1_test.pkl" in p and message in p for p in problems)
    status, err = epic_train(root, capsys, tmp_path)
    assert status == 2 and message in err and "Traceback" not in err


def test_the_restricted_unpickler_reads_what_pandas_writes(tmp_path):
    frame = object_frame(epic_rows())
    variants = {"object": frame, "numeric index": frame.set_index("uid"),
                "subset": frame.iloc[[2, 0]], "pandas strings": pd.DataFrame(epic_rows())}
    for name, variant in variants.items():
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
            path = tmp_path / f"{protocol}.pkl"
            path.write_bytes(pickle.dumps(variant, protocol=protocol))
            assert load_dataframe(path).equals(variant), (name, protocol)


def test_the_restricted_unpickler_reads_pandas_1_pickles(tmp_path):
    """The MM-SADA files were written by pandas 1.x and numpy 1.x: ``pandas.core.frame``,
    ``Int64Index``, ``numpy.core`` and the "0.14.1" block-manager state."""
    path = tmp_path / "D1_train.pkl"
    path.write_bytes(legacy_pickle(epic_rows()))
    frame = load_dataframe(path)
    assert list(frame.columns) == list(epic_rows()) and list(frame.index) == [10, 11, 12]
    assert frame.verb_class.tolist() == [0, 1, 2] and frame.video_id[10] == "P08_10"


def test_pickles_cannot_patch_classes_or_allocate_from_nothing(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x02cpandas\nDataFrame\n}(U\x07__len__cbuiltins\nslice\nub.")
    with pytest.raises(UnsafePickleError, match="refused to set the state of pandas.DataFrame"):
        load_dataframe(path)
    placeholder = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                   b"J\x00\xe1\xf5\x05\x85U\x01b\x87R.")  # shape (100000000,)
    path.write_bytes(placeholder)
    with pytest.raises(UnsafePickleError, match=r"placeholder of shape \(100000000,\)"):
        load_dataframe(path)
    huge_range = (b"\x80\x02cpandas.core.indexes.base\n_new_Index\ncpandas\nRangeIndex\n}(U\x05"
                  b"startK\x00U\x04stopJ\x00\xe4\x0bTU\x04stepK\x01u\x86R.")  # 1410065408 rows
    path.write_bytes(huge_range)
    with pytest.raises(UnsafePickleError, match="RangeIndex of 1410065408 entries"):
        load_dataframe(path)


def test_unusable_rows_are_each_named(tmp_path, capsys):
    root = tmp_path / "epic"
    (root / SPLITS).mkdir(parents=True)
    rows = epic_rows(7, video_id=["P08_10", "../../etc", "P08_10", "P08_10", "P08_10",
                                  "P08_10", "P08_10"],
                     verb_class=[0, 1, "x", 9, 1, 2, 3],
                     start_timestamp=["00:00:01.00"] * 4 + ["bad", "00:00:01.00", "00:00:01.00"],
                     stop_frame=[120, 220, 320, 420, 520, 500, 720])
    object_frame(rows).to_pickle(root / SPLITS / "D1_train.pkl")
    status, problems = epic_check(root, capsys)
    path = root / SPLITS / "D1_train.pkl"
    assert status == 1
    for row, why in [(1, "video_id '../../etc': not a plain file name"),
                     (2, "verb_class 'x' is not an integer"), (3, "verb_class 9 outside 0..7"),
                     (4, "timestamp 'bad' is not HH:MM:SS.ff"),
                     (5, "frames 560..500: need 0 <= start_frame < stop_frame")]:
        assert any(p.startswith(f"PROBLEM: {path} row {row}: {why}") for p in problems), why
    assert sum(str(path) in p for p in problems) == 5
    status, err = epic_train(root, capsys, tmp_path)
    assert status == 2 and "5 problem(s) in the split files" in err and "row 5" in err
    skipping = build_dataset("epic-kitchens", str(root), validate=False, on_error="skip")
    assert len(skipping.records["D1", "train"]) == 2
    assert f"{path} row 2" in dict(skipping.data_issues()["skipped_samples"])


# --- HAC split csvs -----------------------------------------------------------------------

def _hac_root(tmp_path, text: bytes):
    root = tmp_path / "hac"
    (root / "HAC_Splits").mkdir(parents=True)
    (root / "HAC_Splits" / "HAC_train_only_human.csv").write_bytes(text)
    return root


@pytest.mark.parametrize("text,message", [
    ("a.mp4,1\nb.mp4,2\n".encode("utf-16"), "UTF-16/UTF-32 text (byte-order mark ff fe)"),
    ("a.mp4,1\nbé.mp4,2\n".encode("latin-1"), "HAC_train_only_human.csv line 2: byte 0xe9 at "
                                              "column 2 is not UTF-8"),
    (b"a.mp4,1\nb\x00.mp4,2\n", "HAC_train_only_human.csv line 2: NUL byte"),
])
def test_hac_csvs_in_other_encodings(text, message, tmp_path, capsys):
    root = _hac_root(tmp_path, text)
    status = main(["data", "check", "--dataset", "hac", "--data-root", str(root)])
    out = capsys.readouterr().out
    assert status == 1 and any(message in line for line in out.splitlines()
                               if line.startswith("PROBLEM"))
    with pytest.raises(DataError, match="1 problem"):
        build_dataset("hac", str(root))


def test_hac_rows_are_each_named(tmp_path, capsys):
    text = "\ufeffok.mp4,1\n../../x.mp4,1\nclip.avi,2\nb.mp4,x\nc.mp4,9\nlonely\n"
    root = _hac_root(tmp_path, text.encode())
    report = DATASETS.get("hac").check(str(root))
    path = root / "HAC_Splits" / "HAC_train_only_human.csv"
    assert [p for p in report.problems if str(path) in p] == [
        f"{path} line 2: file '../../x.mp4': not a plain file name (it holds a path separator or "
        "is '.' or '..')",
        f"{path} line 3: file 'clip.avi': not an .mp4 file name",
        f"{path} line 4: label 'x' is not an integer",
        f"{path} line 5: label 9 outside 0..6",
        f"{path} line 6: expected '<file>.mp4,<label>', got ['lonely']"]
    assert sum(report.counts["human train"].values()) == 0  # ok.mp4 is listed but missing
    with pytest.raises(DataError, match="5 problem"):
        build_dataset("hac", str(root))


# --- files a record needs -----------------------------------------------------------------

def test_symlinks_leaving_the_root_are_refused(epic_copy, tmp_path, capsys):
    video = load_dataframe(epic_copy / SPLITS / "D2_test.pkl").video_id[0]
    folder = epic_copy / "rgb/test/D2" / video
    shutil.move(folder, tmp_path / "frames")
    os.symlink(tmp_path / "frames", folder)  # the whole folder
    wav = epic_copy / "rgb/train/D1" / "P08_10.wav"
    shutil.move(wav, tmp_path / "audio.wav")
    os.symlink(tmp_path / "audio.wav", wav)  # one file
    status, problems = epic_check(epic_copy, capsys)
    assert status == 1
    assert sum("outside the data root" in p and "rgb/test/D2" in p for p in problems) == 4
    assert sum("outside the data root" in p and "P08_10.wav" in p for p in problems) == 4
    ds = build_dataset("epic-kitchens", str(epic_copy), **CLIP_OPTIONS)
    with pytest.raises(FileNotFoundError, match="8 samples have missing or refused files"):
        ds.fit_normalization(["D1", "D2"])
    opted_out = build_dataset("epic-kitchens", str(epic_copy), allow_outside_root=True,
                              **CLIP_OPTIONS)
    opted_out.fit_normalization(["D1", "D2"])
    assert len(opted_out.split("D2", "val")) == 4


def test_training_names_every_missing_file_of_every_part_at_once(epic_copy, tmp_path, capsys):
    for split, domain, video in (("train", "D1", "P08_10"), ("test", "D3", "P22_11")):
        os.remove(epic_copy / "flow" / split / domain / video / "u" / "frame_0000000010.jpg")
    status, err = epic_train(epic_copy, capsys, tmp_path)
    assert status == 2 and not (tmp_path / "run").exists()
    assert "2 samples have missing or refused files" in err
    assert "flow/train/D1/P08_10/u: frame_0000000010.jpg" in err
    assert "flow/test/D3/P22_11/u: frame_0000000010.jpg" in err


# --- a pickle as pandas 1.x wrote it ------------------------------------------------------

def legacy_pickle(columns: dict[str, list]) -> bytes:
    """A DataFrame pickle with the globals and state layout of pandas 1.x / numpy 1.x."""
    new_index = _legacy_class("pandas.core.indexes.base", "_new_Index")
    index = _legacy_class("pandas.core.indexes.base", "Index")
    int64_index = _legacy_class("pandas.core.indexes.numeric", "Int64Index")
    manager = _legacy_class("pandas.core.internals.managers", "BlockManager")
    frame = _legacy_class("pandas.core.frame", "DataFrame")
    names, n = list(columns), len(next(iter(columns.values())))
    ints = [c for c in names if isinstance(columns[c][0], int)]
    texts = [c for c in names if c not in ints]
    blocks = [{"values": np.array([columns[c] for c in group], dtype=dtype),
               "mgr_locs": np.array([names.index(c) for c in group])}
              for group, dtype in ((ints, np.int64), (texts, object))]
    axes = [_Call(new_index, (index, {"data": np.array(names, dtype=object), "name": None})),
            _Call(new_index, (int64_index, {"data": np.arange(10, 10 + n), "name": None}))]
    state = (axes, [b["values"] for b in blocks], [], {"0.14.1": {"axes": axes,
                                                                  "blocks": blocks}})
    df = _legacy_object(frame, {"_data": _legacy_object(manager, state), "_typ": "dataframe",
                                "_metadata": []})
    buffer = io.BytesIO()
    _LegacyPickler(buffer, protocol=4).dump(df)
    return buffer.getvalue()


def _legacy_class(module, name):
    def reduce_ex(self, protocol):
        return (copyreg.__newobj__, (type(self),), self.state)
    return type(name, (), {"legacy": (module, name), "__reduce_ex__": reduce_ex})


def _legacy_object(cls, state):
    obj = cls.__new__(cls)
    obj.state = state
    return obj


class _Call:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class _LegacyPickler(pickle._Pickler):
    """Writes every global under its pandas 1.x / numpy 1.x name."""

    NUMPY = {np.dtype: ("numpy", "dtype"), np.ndarray: ("numpy", "ndarray")}

    def save_global(self, obj, name=None):
        module, qualname = getattr(obj, "legacy", None) or self.NUMPY.get(obj) or (
            "numpy.core.multiarray", obj.__name__)  # numpy's _reconstruct
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)
