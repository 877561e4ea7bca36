"""The security and integrity guards, each against the attack or accident it exists for: path
containment (a sibling folder sharing the root's prefix), the restricted unpickler (its
allow-list pinned, pickles that call eval / os.system / getattr or set a function's state),
checkpoints whose recorded (sha256, epoch) pairs were swapped, and 'finished' requiring
summary.json."""

import json
import os
import pickle

import pytest

from merdg.datasets.preprocessing import DataError
from merdg.datasets.untrusted import (
    check_flag,
    is_absolute,
    name_problem,
    one_line,
    outside_root,
    plain_name_problem,
    read_utf8,
    resolve_in_root,
)
from merdg.run.checkpoint import CheckpointDamagedError, load_checkpoint
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.training import train

# --- path containment ------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path):
    """``data/`` and its sibling ``data-evil/`` (same prefix), each with a file."""
    data, evil = tmp_path / "data", tmp_path / "data-evil"
    (data / "sub").mkdir(parents=True)
    evil.mkdir()
    (data / "sub" / "x.npy").write_bytes(b"x")
    (evil / "secret.npy").write_bytes(b"secret")
    return data, evil


def test_a_sibling_folder_sharing_the_prefix_is_outside(roots):
    data, evil = roots
    for root in (data, str(data) + os.sep):  # with or without a trailing separator
        reason = outside_root(root, data / ".." / "data-evil" / "secret.npy")
        assert reason == (f"resolves to {evil / 'secret.npy'}, outside the data root {data}")
        assert outside_root(root, evil) is not None
    path, problem = resolve_in_root(data, "../data-evil/secret.npy", allow_outside_root=False)
    assert path == data / "../data-evil/secret.npy"
    assert problem.startswith(f"resolves to {evil / 'secret.npy'}, outside the data root")
    assert problem.endswith("(dataset option allow_outside_root=true reads it anyway)")
    assert resolve_in_root(data, "../data-evil/secret.npy", allow_outside_root=True)[1] is None


def test_paths_inside_the_root_and_the_root_itself_are_inside(roots):
    data, _ = roots
    assert outside_root(data, data) is None
    assert outside_root(data, data / "sub" / "x.npy") is None
    assert outside_root(data, data / "sub" / ".." / "sub" / "missing.npy") is None
    assert resolve_in_root(data, "sub/x.npy", False) == (data / "sub/x.npy", None)


def test_a_symlink_into_the_sibling_is_outside(roots):
    data, evil = roots
    (data / "link").symlink_to(evil, target_is_directory=True)
    assert "outside the data root" in outside_root(data, data / "link" / "secret.npy")
    assert "outside the data root" in resolve_in_root(data, "link/secret.npy", False)[1]


@pytest.mark.parametrize("text", ["/etc/passwd", "C:\\data\\x.npy", "\\\\server\\share\\x"])
def test_absolute_paths_are_refused_on_every_platform(text, roots):
    data, _ = roots
    assert is_absolute(text)
    assert resolve_in_root(data, text, False)[1] == (
        "absolute path; paths are relative to the data root (dataset option "
        "allow_outside_root=true reads it anyway)")
    assert resolve_in_root(data, text, True) == (data / text, None)


def test_names_that_cannot_be_paths():
    assert not is_absolute("a/b.npy") and not is_absolute("a\\b")
    assert name_problem("") == "empty path"
    assert name_problem("a\0b") == "the path contains a NUL byte"
    assert name_problem("a\nb") == name_problem("a\rb") == "the path contains a line break"
    assert name_problem("a/b c.npy") is None
    plain = "not a plain file name (it holds a path separator or is '.' or '..')"
    for name in ("a/b", "a\\b", ".", ".."):
        assert plain_name_problem(name) == plain
    assert plain_name_problem("") == "empty path"
    assert plain_name_problem("P01_01") is None and plain_name_problem("...") is None
    # a refused text is returned on one line, whatever the opt-out
    assert resolve_in_root(__import__("pathlib").Path("r"), "a\nb", True)[1] == (
        "the path contains a line break")
    assert one_line("a\nb\0c\u200b") == "a\\nb\\x00c\\u200b"
    assert one_line(3) == "3"
    assert check_flag("allow_outside_root", True) is True
    with pytest.raises(ValueError, match=r"^dataset option x must be true or false, got 'yes'$"):
        check_flag("x", "yes")


def test_read_utf8_names_file_line_and_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n")
    assert read_utf8(path) == "a,b\n"
    path.write_bytes("a,b\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"m.csv: UTF-16/UTF-32 text \(byte-order mark ff fe\)"):
        read_utf8(path)
    path.write_bytes(b"a,b\nc,\0\n")
    with pytest.raises(DataError, match=r"m.csv line 2: NUL byte; a split file is UTF-8"):
        read_utf8(path, "split file")
    path.write_bytes(b"a,b\nc,d\nxy\xe9z\n")
    with pytest.raises(DataError, match=r"m.csv line 3: byte 0xe9 at column 3 is not UTF-8; "
                       r"save the text file as UTF-8"):
        read_utf8(path)


# --- the restricted unpickler ----------------------------------------------------------------

pd = pytest.importorskip("pandas")
from merdg.datasets.safe_pickle import (  # noqa: E402
    ALLOWED_GLOBALS,
    MAX_BYTES,
    UnsafePickleError,
    load_dataframe,
)

# The allow-list, written out: a change to it must be a deliberate change to this test too.
PINNED = {
    ("pandas", "DataFrame"): "new",
    ("pandas.core.frame", "DataFrame"): "new",
    ("pandas.core.internals.managers", "BlockManager"): "new+call",
    ("pandas.core.internals", "BlockManager"): "new+call",
    ("pandas._libs.internals", "_unpickle_block"): "call",
    ("pandas.core.internals.blocks", "new_block"): "call",
    ("pandas.core.indexes.base", "_new_Index"): "call",
    ("pandas", "Index"): "type",
    ("pandas.core.indexes.base", "Index"): "type",
    ("pandas", "RangeIndex"): "type",
    ("pandas.core.indexes.range", "RangeIndex"): "type",
    ("pandas.core.indexes.numeric", "Int64Index"): "type",
    ("pandas.core.indexes.numeric", "UInt64Index"): "type",
    ("pandas.core.indexes.numeric", "Float64Index"): "type",
    ("pandas", "StringDtype"): "call",
    ("pandas.core.arrays.string_", "StringDtype"): "call",
    ("pandas.arrays", "StringArray"): "type",
    ("pandas.core.arrays.string_", "StringArray"): "type",
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"): "call",
    ("numpy", "ndarray"): "type",
    ("numpy", "dtype"): "call",
    ("numpy.core.multiarray", "_reconstruct"): "call",
    ("numpy._core.multiarray", "_reconstruct"): "call",
    ("numpy.core.multiarray", "scalar"): "call",
    ("numpy._core.multiarray", "scalar"): "call",
    ("numpy.core.numeric", "_frombuffer"): "call",
    ("numpy._core.numeric", "_frombuffer"): "call",
    ("builtins", "slice"): "call",
    ("__builtin__", "slice"): "call",
    ("_codecs", "encode"): "call",
}


def test_the_allow_list_is_exactly_the_pinned_one():
    assert ALLOWED_GLOBALS == PINNED


def global_op(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def short_string(text):
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def call_pickle(module, name, *args):
    """Protocol 2: ``module.name(*args)`` with string arguments."""
    arguments = b"(" + b"".join(short_string(a) for a in args) + b"t"
    return b"\x80\x02" + global_op(module, name) + arguments + b"R."


def refused(tmp_path, data, message, marker=None):
    path = tmp_path / "D1_train.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as raised:
        load_dataframe(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: {message}"), text
    assert text.endswith("; nothing from the file was run (merdg reads pickles with a "
                         "restricted unpickler, see docs/reliability.md)")
    assert marker is None or not marker.exists()


@pytest.mark.parametrize("module", ["builtins", "__builtin__"])
def test_a_pickle_calling_eval_is_refused_before_it_runs(module, tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    refused(tmp_path, call_pickle(module, "eval", code),
            f"refused to load {module}.eval, which a pandas DataFrame pickle never needs",
            marker)


@pytest.mark.parametrize("module", ["os", "posix"])
def test_a_pickle_calling_os_system_is_refused_before_it_runs(module, tmp_path):
    marker = tmp_path / "ran"
    refused(tmp_path, call_pickle(module, "system", f"touch {marker}"),
            f"refused to load {module}.system,", marker)


def test_a_pickle_reaching_through_getattr_is_refused(tmp_path):
    # getattr(numpy, "load") would reach any attribute of an allowed module
    data = (b"\x80\x02" + global_op("builtins", "getattr") + b"(" + global_op("numpy", "ndarray")
            + short_string("__init__") + b"tR.")
    refused(tmp_path, data, "refused to load builtins.getattr,")


def test_real_reduce_payloads_are_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').close()",))

    refused(tmp_path, pickle.dumps(Payload(), protocol=4), "refused to load builtins.eval,",
            marker)


@pytest.mark.parametrize("module, name", [("pandas.core.indexes.base", "_new_Index"),
                                          ("numpy", "dtype"), ("builtins", "slice")])
def test_build_on_an_allowed_function_or_class_is_refused(module, name, tmp_path):
    """BUILD would set attributes of the global (e.g. its __code__ or __globals__)."""
    data = (b"\x80\x02" + global_op(module, name) + b"}" + short_string("__doc__")
            + short_string("patched") + b"sb.")
    refused(tmp_path, data, f"refused to set the state of {module}.{name}")


def test_globals_outside_their_role_are_refused(tmp_path):
    # a "type" global may not be called, a "call" global not instantiated
    refused(tmp_path, b"\x80\x02" + global_op("numpy", "ndarray") + b")R.",
            "refused to call numpy.ndarray")
    refused(tmp_path, b"\x80\x02" + global_op("numpy", "dtype") + b")\x81.",
            "refused to instantiate numpy.dtype")
    refused(tmp_path, b"\x80\x04" + global_op("numpy", "dtype") + b")}\x92.",
            "refused to instantiate numpy.dtype")
    refused(tmp_path, b"\x80\x02" + short_string("x") + b")R.",
            "refused to call a str object")


def test_opcodes_that_call_by_name_and_persistent_ids_are_refused(tmp_path):
    refused(tmp_path, b"(ipandas\nDataFrame\n.", "refused a protocol-0 INST instruction")
    refused(tmp_path, b"\x80\x02(" + global_op("pandas", "DataFrame") + b"o.",
            "refused a protocol-1 OBJ instruction")
    refused(tmp_path, b"\x80\x02" + short_string("id") + b"Q.", "refused a persistent id")


def test_what_is_not_a_small_dataframe_pickle(tmp_path):
    path = tmp_path / "D1_train.pkl"
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: no 64 MiB written
    with pytest.raises(DataError, match=rf"{MAX_BYTES + 1} bytes, more than the {MAX_BYTES} "):
        load_dataframe(path)
    path.write_bytes(pickle.dumps(pd.DataFrame({"a": [1, 2]}))[:-5])
    with pytest.raises(DataError, match=r"D1_train.pkl: not a readable pandas pickle \("):
        load_dataframe(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match=r"D1_train.pkl: holds a list, not a pandas DataFrame$"):
        load_dataframe(path)
    frame = pd.DataFrame({"video_id": ["P01_01", "P01_02"], "verb_class": [3, 4]})
    path.write_bytes(pickle.dumps(frame, protocol=4))
    assert load_dataframe(str(path)).equals(frame)


# --- checkpoints: the recorded epoch of each digest is cross-checked --------------------------

IDENTITY = {"config": {"algorithm": "ERM"}, "hparams": {"lr": 0.1}}


def checkpoint(epoch):
    return {"identity": IDENTITY, "epoch": epoch, "records": [{"epoch": e}
                                                             for e in range(1, epoch + 1)]}


def two_checkpoints(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_checkpoint(checkpoint(1))
    run.write_checkpoint(checkpoint(2))
    digests = json.loads((run.path / RunDir.CHECKPOINT_DIGESTS).read_text())["sha256"]
    assert sorted(digests.values()) == [1, 2]
    return run, digests


def test_intact_checkpoints_resume_from_the_newest(tmp_path):
    run, _ = two_checkpoints(tmp_path)
    name, payload = run.resume_checkpoint(IDENTITY)
    assert name == RunDir.CHECKPOINT and payload["epoch"] == 2
    assert run.read_checkpoint(IDENTITY, name=RunDir.PREVIOUS_CHECKPOINT)["epoch"] == 1


def test_a_swapped_digest_pair_is_refused_by_the_recorded_epoch(tmp_path):
    """Both files' sha256 are recorded, but each with the other's epoch: every file then holds
    an epoch other than the one recorded for it, and neither may be resumed from."""
    run, digests = two_checkpoints(tmp_path)
    swapped = {sha: 3 - epoch for sha, epoch in digests.items()}
    (run.path / RunDir.CHECKPOINT_DIGESTS).write_text(json.dumps({"sha256": swapped}))
    with pytest.raises(CheckpointDamagedError,
                       match=r"checkpoint.pt: holds epoch 2, but was recorded as epoch 1$"):
        run.read_checkpoint(IDENTITY)
    with pytest.raises(CheckpointDamagedError, match=r"holds epoch 1, but was recorded as "
                       r"epoch 2"):
        load_checkpoint(run.path / RunDir.PREVIOUS_CHECKPOINT, IDENTITY, digests=swapped)
    with pytest.raises(CheckpointDamagedError, match=r"holds epoch 2, but was recorded as "
                       r"epoch 1; .*holds epoch 1, but was recorded as epoch 2: start the run "
                       r"over with --restart"):
        run.resume_checkpoint(IDENTITY)


def test_swapped_checkpoint_files_resume_from_what_the_file_holds(tmp_path):
    """The files themselves swapped (each digest still recorded with its own epoch): the run
    resumes from the state checkpoint.pt really holds, with its own records."""
    run, _ = two_checkpoints(tmp_path)
    current, previous = run.path / RunDir.CHECKPOINT, run.path / RunDir.PREVIOUS_CHECKPOINT
    os.replace(current, run.path / "tmp")
    os.replace(previous, current)
    os.replace(run.path / "tmp", previous)
    name, payload = run.resume_checkpoint(IDENTITY)
    assert name == RunDir.CHECKPOINT
    assert payload["epoch"] == 1 and payload["records"] == [{"epoch": 1}]


# --- 'finished' means done and summary.json --------------------------------------------------

def test_finished_requires_the_summary(tmp_path, tiny_hparams, tiny_synthetic_options):
    tiny_hparams["epochs"] = 1
    config = RunConfig(dataset="synthetic", target="d1", algorithm="ERM", hparams=tiny_hparams,
                       dataset_options=tiny_synthetic_options, out_dir=str(tmp_path / "run"))
    train(config, progress=False)
    run = RunDir(tmp_path / "run")
    assert run.status(config) == "finished" and run.finished(config)
    (run.path / RunDir.SUMMARY).unlink()
    assert run.has_finished_run()  # the done marker is still there ...
    assert run.status(config) == "incomplete" and not run.finished(config)  # ... not enough
    run.mark_failed("boom")
    assert run.status(config) == "failed" and run.failure() == "boom"


def test_the_filesystem_root_contains_everything():
    assert outside_root("/", "/etc/passwd") is None


def test_read_utf8_positions_and_other_byte_order_marks(tmp_path):
    path = tmp_path / "m.csv"
    for bom in (b"\xfe\xff", b"\x00\x00\xfe\xff"):
        path.write_bytes(bom + b"\x00a")
        with pytest.raises(DataError, match=rf"UTF-16/UTF-32 text \(byte-order mark "
                           rf"{bom[:2].hex(' ')}\); save the text file as UTF-8$"):
            read_utf8(path)
    path.write_bytes(b"a\n\0b\nc\0\n")  # the first NUL's line
    with pytest.raises(DataError, match=r"line 2: NUL byte; a text file is UTF-8 text \(UTF-16 "
                       r"text holds NUL bytes: save it as UTF-8\)$"):
        read_utf8(path)
    path.write_bytes(b"\nxy\xe9")  # a newline at offset 0: column counted from it
    with pytest.raises(DataError, match=r"line 2: byte 0xe9 at column 3 is not UTF-8; save the "
                       r"text file as UTF-8 \(latin-1 and other encodings are not read\)$"):
        read_utf8(path)


def range_index_pickle(state):
    """``_new_Index(pandas.RangeIndex, state)`` with integer entries (protocol 2)."""
    items = b"".join(short_string(k) + b"J" + int(v).to_bytes(4, "little", signed=True)
                     for k, v in state.items())
    return (b"\x80\x02" + global_op("pandas.core.indexes.base", "_new_Index")
            + global_op("pandas", "RangeIndex") + b"}(" + items + b"u\x86R.")


@pytest.mark.parametrize("state, allowed", [
    ({"stop": 10_000_000}, True),  # exactly the limit, start 0 and step 1 by default
    ({"stop": 10_000_001}, False),
    ({"start": 5, "stop": 10_000_005}, True),
    ({"start": -10_000_000}, True),  # stop 0 by default
    ({"start": -10_000_001}, False),
    ({"stop": 20_000_000, "step": 2}, True),
    ({"stop": 20_000_001}, False),
])
def test_range_index_length_counts_start_stop_and_step(state, allowed, tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(range_index_pickle(state))
    if allowed:  # rebuilt (lazily), then refused for not being a DataFrame
        with pytest.raises(DataError, match=r"holds a RangeIndex, not a pandas DataFrame$"):
            load_dataframe(path)
    else:
        with pytest.raises(UnsafePickleError, match=r"refused a RangeIndex of \d+ entries \(more "
                           r"than 10000000\)"):
            load_dataframe(path)


def test_only_a_range_index_is_bounded(tmp_path):
    """A plain Index whose state names a huge stop is pandas' problem (an unreadable pickle),
    not a RangeIndex to refuse."""
    data = (b"\x80\x02" + global_op("pandas.core.indexes.base", "_new_Index")
            + global_op("pandas", "Index") + b"}(" + short_string("stop") + b"J\xff\xff\xff\x7f"
            + b"u\x86R.")
    path = tmp_path / "x.pkl"
    path.write_bytes(data)
    with pytest.raises(DataError) as raised:
        load_dataframe(path)
    assert not isinstance(raised.value, UnsafePickleError)
    assert "not a readable pandas pickle (TypeError: " in str(raised.value)


def test_newobj_ex_of_an_allowed_class_is_allowed(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x04" + global_op("pandas", "DataFrame") + b")}\x92.")
    assert type(load_dataframe(path)) is pd.DataFrame  # (an uninitialized one)


def test_size_limit_is_inclusive_and_errors_name_the_cause(tmp_path):
    path = tmp_path / "x.pkl"
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES)
    with pytest.raises(DataError, match=r"x.pkl: not a readable pandas pickle \(KeyError: 0\)$"):
        load_dataframe(path)
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(DataError, match=rf"x.pkl: {MAX_BYTES + 1} bytes, more than the "
                       rf"{MAX_BYTES} bytes a split file may have$"):
        load_dataframe(path)
    placeholder = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                   b"K\x03\x85U\x01b\x87R.")
    path.write_bytes(placeholder)
    with pytest.raises(UnsafePickleError, match=r"refused a numpy array placeholder of shape "
                       r"\(3,\) \(numpy writes \(0,\)\)"):
        load_dataframe(path)
