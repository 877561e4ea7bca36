"""Memory (issue 15 item 4): the manifest's stacked float32 arrays are cached once, memory-mapped
by every run and DataLoader worker, and splits hold indices, not copies."""

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from merdg.datasets import build_dataset, collate
from merdg.datasets import manifest as manifest_module
from merdg.datasets.base import DomainConcat, IndexedSamples
from merdg.datasets.cache import MappedArrayCache
from merdg.testing import write_windowed_manifest

SMALL = {"domains": 2, "classes": 2, "recordings": 3, "recording_steps": 64, "window": 32,
         "hop": 16}  # 3 windows per recording, 18 samples per domain


def load(root, cache_dir, **options):
    return build_dataset("manifest", str(root), progress=False, cache_dir=str(cache_dir),
                         **options)


def _count_loads(monkeypatch):
    calls = []
    original = manifest_module.load_array

    def counting(root, row, modality, *args):
        calls.append(row.sample_id)
        return original(root, row, modality, *args)

    monkeypatch.setattr(manifest_module, "load_array", counting)
    return calls


def test_cache_is_built_once_then_memory_mapped(tmp_path, monkeypatch):
    root = write_windowed_manifest(tmp_path / "data", **SMALL)
    first_file = root / "accel" / "d0_c0_r0_w000.npy"
    np.save(first_file, np.load(first_file).astype(np.float64))  # float64 on disk
    calls = _count_loads(monkeypatch)
    first = load(root, tmp_path / "cache")
    assert len(calls) == 2 * 36  # validated, then written into the cache
    entries = sorted((tmp_path / "cache" / "manifest").iterdir())
    assert [p.suffix for p in entries] == [".json", ".npy"]
    assert isinstance(first.stacked["accel"], np.memmap)
    assert first.stacked["accel"].dtype == np.float32 and first._raw["accel"].dtype == torch.float32
    calls.clear()
    again = load(root, tmp_path / "cache")
    assert calls == []  # nothing read but the manifest and the cache
    assert torch.equal(first._raw["accel"], again._raw["accel"])
    in_memory = load(root, tmp_path / "unused", cache=False)
    assert not (tmp_path / "unused").exists() and not isinstance(in_memory.stacked["accel"],
                                                                 np.memmap)
    assert torch.equal(in_memory._raw["accel"], again._raw["accel"])
    calls.clear()
    load(root, tmp_path / "cache", length_policy="crop", length=20)  # other settings
    assert len(calls) == 2 * 36 and len(list((tmp_path / "cache" / "manifest").iterdir())) == 4
    calls.clear()
    np.save(first_file, np.load(first_file)[::-1].copy())  # an input changes: rebuilt
    os.utime(first_file, ns=(1, 1))
    rebuilt = load(root, tmp_path / "cache")
    assert len(calls) == 2 * 36
    assert torch.equal(rebuilt._raw["accel"][0], torch.from_numpy(np.load(first_file)).float())


def test_broken_or_interrupted_entries_are_never_used(tmp_path, caplog):
    entry = MappedArrayCache(tmp_path, "m", {"a": 1})
    leftover = tmp_path / f".{entry.path.name}.123.abc.tmp"
    leftover.write_bytes(b"half written")  # an interrupted build leaves at most this
    assert entry.load() is None

    def fill(out):
        for i, row in enumerate(np.arange(6).reshape(2, 3)):
            out[i] = row
        return {"ids": ["x", "y"]}

    array, meta = entry.load_or_build((2, 3), np.float32, fill)
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]] and meta == {"ids": ["x", "y"]}
    array, meta = entry.load_or_build((2, 3), np.float32, lambda out: pytest.fail("rebuilt"))
    assert meta == {"ids": ["x", "y"]}
    entry.path.write_bytes(entry.path.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, "merdg"):
        assert entry.load() is None
    assert f"preprocessing cache entry {entry.path} is damaged" in caplog.text
    entry.meta_path.unlink()  # a build that stopped before its .json: absent
    assert entry.load() is None


def test_splits_share_the_arrays_and_standardize_per_batch(tmp_path):
    root = write_windowed_manifest(tmp_path / "data", **SMALL)
    ds = load(root, tmp_path / "cache")
    with pytest.raises(RuntimeError, match="call fit_normalization"):
        ds.domain_samples("d0")[0]  # splits exist before the fit; samples are read after it
    ds.fit_normalization(["d0"])
    stats = ds.statistics["accel"]
    parts = [ds.split("d0", "train", 0, 0.2), ds.domain_samples("d1")]
    assert all(isinstance(p, IndexedSamples) for p in parts)
    data = DomainConcat(parts)
    assert data.indexed is not None and data.tensors is None  # indices, no stacked copy
    expected = torch.cat([stats.apply(ds._raw["accel"])[p.index] for p in parts])
    idx = [0, 5, len(data) - 1, 3]
    fast = collate(data.__getitems__(idx))
    slow = collate([data[i] for i in idx])
    assert torch.equal(fast.x["accel"], expected[idx]) and torch.equal(slow.x["accel"],
                                                                       expected[idx])
    assert torch.equal(fast.domain, slow.domain) and torch.equal(fast.y, slow.y)
    loader = DataLoader(data, batch_size=8, shuffle=False, collate_fn=collate, num_workers=2)
    assert torch.equal(torch.cat([b.x["accel"] for b in loader]), expected)


def test_pickled_dataset_maps_the_cache_again(tmp_path):
    root = write_windowed_manifest(tmp_path / "data", **SMALL)
    ds = load(root, tmp_path / "cache")
    ds.fit_normalization(["d0"])
    blob = pickle.dumps(ds)  # what spawn/forkserver DataLoader workers receive
    assert len(blob) < ds.stacked["accel"].nbytes  # the arrays are not in it
    clone = pickle.loads(blob)
    assert isinstance(clone.stacked["accel"], np.memmap)
    assert torch.equal(clone.domain_samples("d1").x["accel"], ds.domain_samples("d1").x["accel"])
    in_memory = load(root, tmp_path / "cache", cache=False)
    assert torch.equal(pickle.loads(pickle.dumps(in_memory))._raw["accel"], in_memory._raw["accel"])
