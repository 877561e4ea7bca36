"""On-disk cache of preprocessed arrays, keyed by the preprocessing settings.

A cache entry is one ``.npz`` file named ``<name>-<key>.npz`` where ``key`` hashes the settings
(preprocessing options, a format version, and a fingerprint of the input files' names, sizes and
modification times), so changing any setting or any input file selects a different entry.

Writes are atomic: the arrays go to a temporary file in the same directory, are flushed to disk,
and only then renamed to the final name. A run interrupted while writing leaves at most a
``.tmp`` file, which is never read, so a cache from an interrupted run is never used. An entry
that cannot be read back (or whose stored settings differ) is reported with a warning and rebuilt.

:class:`MappedArrayCache` stores one large array as a plain ``.npy`` file (written in place
through a memory map, so building it never holds a second copy) beside a ``.json`` file with the
settings and small metadata, written last; loading memory-maps the ``.npy``, so every process
that reads the entry (DataLoader workers included) shares one copy in the page cache.

The cache directory is ``$MERDG_CACHE_DIR`` or ``~/.cache/merdg`` unless a dataset is given
``cache_dir``; nothing is written next to the data, which may be read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CACHE_ENV", "ArrayCache", "MappedArrayCache", "default_cache_dir", "file_fingerprint",
           "settings_key"]

CACHE_ENV = "MERDG_CACHE_DIR"
_SETTINGS = "__settings__"


def default_cache_dir() -> Path:
    """``$MERDG_CACHE_DIR``, else ``~/.cache/merdg``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "merdg"


def settings_key(settings: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of JSON-serializable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(paths: Iterable[Path], root: Path) -> str:
    """Hash of every file's path relative to ``root``, size and modification time."""
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class ArrayCache:
    """One cache entry: ``directory / f"{name}-{settings_key(settings)}.npz"``.

    Args:
        directory: Where entries live (created on first write).
        name: Readable prefix of the file name (e.g. ``"utd-mhad-depth"``).
        settings: Everything the arrays depend on (JSON-serializable).
    """

    def __init__(self, directory: str | os.PathLike, name: str, settings: Mapping[str, Any]):
        self.settings = dict(settings)
        self.path = Path(directory) / f"{name}-{settings_key(self.settings)}.npz"

    def _settings_text(self) -> str:
        return json.dumps(self.settings, sort_keys=True, default=str)

    def load(self) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None when the entry is absent or unusable (with a warning)."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception as err:  # any unreadable file: say so, then rebuild
            warnings.warn(f"ignoring unreadable cache file {self.path} ({err!r}); rebuilding it",
                          stacklevel=2)
            return None
        stored = str(arrays.pop(_SETTINGS, ""))
        if stored != self._settings_text():
            warnings.warn(f"ignoring cache file {self.path}: its stored settings differ from "
                          "the requested ones; rebuilding it", stacklevel=2)
            return None
        return arrays

    def save(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        if _SETTINGS in arrays:
            raise ValueError(f"{_SETTINGS!r} is a reserved array name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **{_SETTINGS: np.array(self._settings_text())})
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_or_build(self, build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The stored arrays; on a miss, ``build()`` them, store them and return them."""
        arrays = self.load()
        if arrays is None:
            arrays = dict(build())
            self.save(arrays)
        return arrays


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class MappedArrayCache:
    """One memory-mapped cache entry: ``directory / f"{name}-{key}.npy"`` (the array) and
    ``.json`` (settings, shape, dtype and metadata such as sample ids), keyed by
    ``settings_key(settings)``.

    The ``.npy`` is written through :func:`numpy.lib.format.open_memmap` into a temporary file,
    flushed and renamed; the ``.json`` is written the same way afterwards, so an entry whose
    ``.json`` exists is complete. :meth:`load` maps the array copy-on-write (``mmap_mode="c"``):
    the pages are shared with every process that maps the file and are only copied for a
    process that writes to them.

    Args:
        directory: Where entries live (created on first write).
        name: Readable prefix of the file names (e.g. ``"frames"``).
        settings: Everything the array depends on (JSON-serializable).
    """

    def __init__(self, directory: str | os.PathLike, name: str, settings: Mapping[str, Any]):
        self.settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        stem = f"{name}-{settings_key(self.settings)}"
        self.path = Path(directory) / f"{stem}.npy"
        self.meta_path = Path(directory) / f"{stem}.json"

    def load(self) -> tuple[np.ndarray, dict[str, Any]] | None:
        """(memory-mapped array, metadata), or None when absent or unusable (with a warning)."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            array = np.load(self.path, mmap_mode="c", allow_pickle=False)
        except Exception as err:  # any unreadable entry: say so, then rebuild
            warnings.warn(f"ignoring unreadable cache entry {self.path} ({err!r}); rebuilding it",
                          stacklevel=2)
            return None
        expected = (meta.get("settings"), meta.get("shape"), meta.get("dtype"))
        if expected != (self.settings, list(array.shape), str(array.dtype)):
            warnings.warn(f"ignoring cache entry {self.path}: its stored settings, shape or dtype "
                          "differ from the requested ones; rebuilding it", stacklevel=2)
            return None
        return array, meta.get("metadata", {})

    def build(self, shape: tuple[int, ...], dtype: np.dtype | str,
              fill: Callable[[np.ndarray], Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        """Create the array (``shape``, ``dtype``) on disk, let ``fill(array)`` write it and
        return JSON-serializable metadata, store both, and return them (the array mapped)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
            metadata = dict(fill(out))
            out.flush()
            del out
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        meta = {"settings": self.settings, "shape": list(shape), "dtype": str(np.dtype(dtype)),
                "metadata": metadata}
        _atomic_write_text(self.meta_path, json.dumps(meta))
        return np.load(self.path, mmap_mode="c", allow_pickle=False), metadata

    def load_or_build(self, shape: tuple[int, ...], dtype: np.dtype | str,
                      fill: Callable[[np.ndarray], Mapping[str, Any]]
                      ) -> tuple[np.ndarray, dict[str, Any]]:
        """The stored entry when it is usable and has ``shape``; else :meth:`build` it."""
        entry = self.load()
        if entry is not None and entry[0].shape == tuple(shape):
            return entry
        return self.build(shape, dtype, fill)
