"""The preprocessing cache is a cache (issue 19): keyed by the inputs' content, verified when
read, and a full or unwritable cache directory costs the cache, never the run.

A full disk is simulated: the free-space query (``shutil.disk_usage``) answers what an 800 KiB
tmpfs would, or the reservation of the file's space, or a write, fails with ENOSPC (as the
full-disk tests of the run directory do, tests/test_resume.py).
"""

import errno
import json
import logging
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets import cache as cache_module
from merdg.datasets.cache import MappedArrayCache
from merdg.run.records import read_jsonl
from merdg.testing import write_windowed_manifest

HPARAMS = {"epochs": 2, "batch_size": 6, "proj_hidden": 16, "fusion_hidden": 16}
NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
Usage = namedtuple("Usage", "total used free")


def tmpfs_of_800_kib(path):
    """What ``shutil.disk_usage`` says of a full 800 KiB tmpfs."""
    return Usage(800 * 1024, 0, 800 * 1024)


class DiskFull:
    """A file whose writes fail with ENOSPC once ``limit`` bytes were written."""

    def __init__(self, file, limit):
        self.file, self.left = file, limit

    def write(self, data):
        size = len(data) if isinstance(data, str) else len(memoryview(data).cast("B"))
        if size > self.left:
            raise NO_SPACE
        self.left -= size
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture
def data(tmp_path):
    """A small windowed manifest: 3 domains, 54 windows (32, 3) of sensor recordings."""
    return write_windowed_manifest(tmp_path / "data", domains=3, classes=2, recordings=3,
                                   recording_steps=64, window=32, hop=16)


def train(out, data, *options):
    """`merdg train` on the manifest; returns the numbers of its records (no timings)."""
    args = ["train", "--dataset", "manifest", "--data-root", str(data), "--target", "d2",
            "--hparams", json.dumps(HPARAMS), "--out", str(out), "--dataset-option",
            "progress=false", *options]
    assert main(args) == 0
    return [(r["train"], r["val"], r["target"]) for r in read_jsonl(out / "records.jsonl")]


def warnings_in(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines()
            if line.startswith("warning:") and " on source validation: " not in line]


def cache_files(directory):
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() \
        else []


def test_full_cache_disk_builds_in_memory_with_one_line(data, tmp_path, capsys, monkeypatch):
    """Before: `merdg train` with the cache on an 800 KiB tmpfs died of SIGBUS (exit 135, no
    merdg line) and left a `.tmp` file the size of the stacked array."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MERDG_CACHE_DIR", str(cache))
    monkeypatch.setattr(shutil, "disk_usage", tmpfs_of_800_kib)
    capsys.readouterr()
    records = train(tmp_path / "run", data)
    assert warnings_in(capsys) == [
        f"warning: cannot write the preprocessing cache to {cache / 'manifest'}: it needs 1.0 "
        "MiB, only 0.8 MiB are free; building the arrays in memory instead (free some space, "
        "or point $MERDG_CACHE_DIR or the dataset option cache_dir to another directory)"]
    assert cache_files(cache) == []  # no entry, no temporary file
    assert records == train(tmp_path / "plain", data, "--dataset-option", "cache=false")


@pytest.mark.parametrize("failure", ["reservation", "rows", "digest file"])
def test_a_write_that_fails_anyway_leaves_no_temporary_file(failure, data, tmp_path, caplog,
                                                            monkeypatch):
    """The free space looked sufficient but the disk fills up meanwhile (a quota, another
    writer): the reservation of the file's space, the rows' writes (after five rows) or the
    .json's write fails."""
    cache = tmp_path / "cache"
    if failure == "reservation":
        def no_room(fd, offset, length):
            raise NO_SPACE

        monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)
    else:
        target, limit = (".npy.", 128 + 5 * 32 * 3 * 4) if failure == "rows" else (".json.", 0)

        def full_open(path, mode="r", *args, **kwargs):
            file = open(path, mode, *args, **kwargs)
            if "w" in mode and target in Path(path).name:
                return DiskFull(file, limit)
            return file

        monkeypatch.setattr(cache_module, "open", full_open, raising=False)
    with caplog.at_level(logging.WARNING, "merdg"):
        built = build_dataset("manifest", str(data), progress=False, cache_dir=str(cache))
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert messages == [
        f"cannot write the preprocessing cache to {cache / 'manifest'}: it needs 1.0 MiB, the "
        "disk is full (No space left on device); building the arrays in memory instead (free "
        "some space, or point $MERDG_CACHE_DIR or the dataset option cache_dir to another "
        "directory)"]
    assert cache_files(cache) == []
    assert not isinstance(built.stacked["accel"], np.memmap)  # in memory, picklable
    plain = build_dataset("manifest", str(data), progress=False, cache=False)
    assert np.array_equal(built.stacked["accel"], plain.stacked["accel"])


def test_an_unwritable_cache_directory_builds_in_memory(data, tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    with caplog.at_level(logging.WARNING, "merdg"):
        built = build_dataset("manifest", str(data), progress=False, cache_dir=str(blocked))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"cannot write the preprocessing cache to {blocked / 'manifest'} (Not a directory); "
        "building the arrays in memory instead (point $MERDG_CACHE_DIR or the dataset option "
        "cache_dir to a writable directory)"]
    assert built.stacked["accel"].shape == (54, 32, 3)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that apply (not root)")
def test_a_read_only_cache_directory_builds_in_memory(data, tmp_path, caplog):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with caplog.at_level(logging.WARNING, "merdg"):
            build_dataset("manifest", str(data), progress=False, cache_dir=str(locked))
    finally:
        locked.chmod(0o700)
    assert "(Permission denied); building the arrays in memory instead" in caplog.text


def test_a_damaged_entry_is_rebuilt_with_one_line(data, tmp_path, capsys, monkeypatch):
    """Before: 64 bytes flipped in a cached .npy trained the next run on the damaged data
    without a word (its records differed from a cache=false run), and the damage stayed."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MERDG_CACHE_DIR", str(cache))
    train(tmp_path / "first", data)
    [entry] = (cache / "manifest").glob("accel-*.npy")
    damaged = bytearray(entry.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(b ^ 0xFF for b in damaged[middle:middle + 64])
    entry.write_bytes(bytes(damaged))
    capsys.readouterr()
    records = train(tmp_path / "second", data)
    [line] = warnings_in(capsys)
    assert line.startswith(f"warning: preprocessing cache entry {entry} is damaged (its sha256 ")
    assert line.endswith(" recorded when it was written); rebuilding it")
    assert records == train(tmp_path / "plain", data, "--dataset-option", "cache=false")
    capsys.readouterr()
    train(tmp_path / "third", data)  # the damage is gone
    assert warnings_in(capsys) == []


def test_an_input_rewritten_with_its_old_mtime_is_not_served_stale(data, tmp_path, monkeypatch):
    """Before: an array file rewritten with new values of the same shape, its modification
    time set back (`touch -r`), got the old content's cache entry."""
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))
    old = train(tmp_path / "old", data)
    changed = data / "accel" / "d0_c0_r0_w000.npy"
    stat = changed.stat()
    np.save(changed, -np.load(changed))  # same shape and size, other values
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed.stat().st_size == stat.st_size
    new = train(tmp_path / "new", data)
    assert new == train(tmp_path / "plain", data, "--dataset-option", "cache=false")
    assert new != old


def test_the_mapped_entry_is_never_written_through_a_memory_map(tmp_path, monkeypatch):
    """A write through a memory map into a file that the disk cannot back is a SIGBUS; the
    entry is written with plain writes and only mapped for reading."""
    real_memmap, real_open_memmap = np.memmap, np.lib.format.open_memmap

    def read_only(opener, default_mode):
        def open_for_reading(*args, mode=default_mode, **kwargs):
            assert mode in ("r", "c"), f"a memory map opened for writing ({mode!r})"
            return opener(*args, mode=mode, **kwargs)
        return open_for_reading

    monkeypatch.setattr(np, "memmap", read_only(real_memmap, "r+"))
    monkeypatch.setattr(np.lib.format, "open_memmap", read_only(real_open_memmap, "r+"))
    entry = MappedArrayCache(tmp_path, "m", {"a": 1})

    def fill(out):
        for i in range(3):
            out[i] = np.full((2, 2), i)
        return {"n": 3}

    array, meta = entry.load_or_build((3, 2, 2), np.float32, fill)
    assert isinstance(array, real_memmap) and array[2].tolist() == [[2, 2], [2, 2]]
    assert meta == {"n": 3}
