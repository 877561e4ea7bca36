"""On-disk cache of preprocessed arrays: keyed by content, verified when read, written atomically.

An entry holds the arrays a dataset preprocessed from its input files with some settings. Its
key (:func:`settings_key`) hashes the settings, a format version and the *content* of the input
files (:func:`content_digest`: the sha256 of every file's path relative to the data root, size
and bytes), so changing a setting or one byte of one input selects another entry, whatever the
files' sizes and modification times say.

An entry is two files: the data (``<name>-<key>.npz`` for :class:`ArrayCache`, a plain
``<name>-<key>.npy`` for :class:`MappedArrayCache`) and, written after it, ``<name>-<key>.json``
with the settings, the metadata and the sha256 of the data file. Guarantees:

- **Verified when read.** :meth:`load` recomputes the data file's sha256 and uses the entry only
  when it is the one recorded when the entry was written; a damaged entry (a flipped byte, a
  truncated or replaced file) is reported in one warning line and rebuilt.
- **Atomic.** Each file goes to a temporary file in the same directory, is fsynced and renamed;
  the ``.json`` comes last, so an entry with a ``.json`` is complete, and a build killed midway
  leaves at most a temporary file (``.<name>-<key>.<pid>.<random>.tmp``), which is never read.
- **A full disk costs nothing but the cache.** Before writing, the free space of the directory
  (:func:`free_bytes`) is compared with what the entry needs. A directory without the space, an
  unwritable one, or a write that fails anyway (a quota, a race with another writer) gives one
  warning line naming the directory, the space needed and the space free; the temporary file is
  removed and the arrays are built in memory instead, so the run goes on without the cache.
- **No SIGBUS.** The ``.npy`` of a :class:`MappedArrayCache` is written with plain writes, row by
  row, into space reserved first (``posix_fallocate``), never through a memory map: a write
  that fails raises an error instead of killing the process. It is memory-mapped only for
  reading, once it is complete and verified; every process that maps it (DataLoader workers
  included) shares one copy in the page cache.

Trust boundary: the cache is merdg's own output, read back on later runs, so it is checked for
accidental damage (the sha256), not against someone who rewrites an entry and its ``.json``
together; nothing in it is unpickled (``allow_pickle=False``). The files of an entry that is in
use must not be modified by anything else (a file truncated while it is mapped would fault).

The cache directory is ``$MERDG_CACHE_DIR`` or ``~/.cache/merdg`` unless a dataset is given
``cache_dir``; nothing is written next to the data, which may be read-only. See
docs/reliability.md for what verification costs.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CACHE_ENV", "ArrayCache", "CacheUnavailableError", "MappedArrayCache",
           "content_digest", "default_cache_dir", "file_sha256", "free_bytes", "settings_key"]

log = logging.getLogger(__name__)

CACHE_ENV = "MERDG_CACHE_DIR"
META_MARGIN = 1 << 20  # bytes kept free for the .json and the filesystem's own needs
CHUNK = 1 << 20  # bytes read at a time when hashing
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CacheUnavailableError(OSError):
    """The cache directory cannot take an entry (full, unwritable); the message is the one
    warning line that says so."""


def default_cache_dir() -> Path:
    """``$MERDG_CACHE_DIR``, else ``~/.cache/merdg``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "merdg"


def settings_key(settings: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of JSON-serializable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hash_file(path: Path, digest: Any, buffer: bytearray) -> int:
    """Feed ``path``'s bytes to ``digest``, read into ``buffer``; returns the number of bytes."""
    size = 0
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
            size += n
    return size


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    _hash_file(Path(path), digest, bytearray(CHUNK))
    return digest.hexdigest()


def content_digest(paths: Iterable[Path], root: Path) -> str:
    """The sha256 of every file's path relative to ``root``, size and bytes, in path order: the
    key of what the files hold (a file rewritten with other bytes changes it, whatever its
    modification time says).

    Raises:
        ValueError: A path outside ``root``.
        OSError: A file that cannot be read.
    """
    digest, buffer = hashlib.sha256(), bytearray(CHUNK)
    for path in sorted(paths):
        digest.update(f"{path.relative_to(root)}\0".encode())
        size = _hash_file(path, digest, buffer)
        digest.update(f"\0{size}\n".encode())
    return digest.hexdigest()


def free_bytes(directory: Path) -> int:
    """Bytes free for this user in the filesystem of ``directory`` (which must exist)."""
    return shutil.disk_usage(directory).free


def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def _reason(err: OSError) -> str:
    if err.errno in DISK_FULL:
        return f"the disk is full ({os.strerror(err.errno)})"
    return err.strerror or str(err)


def _unavailable(directory: Path, need: int, cause: str, space: bool = True
                 ) -> CacheUnavailableError:
    """Why the cache cannot be written: short of space (``space``: what it needs, and the
    cause), or another cause (a path that is not a directory, no permission)."""
    if not space:
        return CacheUnavailableError(
            f"cannot write the preprocessing cache to {directory} ({cause}); building the "
            f"arrays in memory instead (point ${CACHE_ENV} or the dataset option cache_dir to "
            "a writable directory)")
    return CacheUnavailableError(
        f"cannot write the preprocessing cache to {directory}: it needs {_size(need)}, {cause}; "
        f"building the arrays in memory instead (free some space, or point ${CACHE_ENV} or the "
        "dataset option cache_dir to another directory)")


def _room_for(directory: Path, need: int) -> None:
    """Create ``directory`` and check it has ``need`` bytes free.

    Raises:
        CacheUnavailableError: It cannot be created, or has less free space.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        free = free_bytes(directory)
    except OSError as err:
        raise _unavailable(directory, need, _reason(err), err.errno in DISK_FULL) from err
    if free < need:
        raise _unavailable(directory, need, f"only {_size(free)} are free")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _write_text(path: Path, text: str) -> Path:
    """``text`` in a fsynced temporary file beside ``path``; returns the temporary file."""
    tmp = _temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # directories cannot be opened everywhere (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Entry:
    """What both kinds of entries share: the ``.json`` beside the data file, verification,
    and the commit of a written data file."""

    SUFFIX = ""

    def __init__(self, directory: str | os.PathLike, name: str, settings: Mapping[str, Any]):
        self.settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        stem = f"{name}-{settings_key(self.settings)}"
        self.directory = Path(directory)
        self.path = self.directory / f"{stem}{self.SUFFIX}"
        self.meta_path = self.directory / f"{stem}.json"

    def _verified_meta(self) -> dict[str, Any] | None:
        """The ``.json`` of a complete, intact entry of these settings, or None (absent, or
        unusable: one warning line)."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
                raise ValueError("no recorded sha256")
            if meta.get("settings") != self.settings:
                log.warning("preprocessing cache entry %s: its stored settings differ from the "
                            "requested ones; rebuilding it", self.path)
                return None
            found = file_sha256(self.path)
        except (OSError, ValueError) as err:
            log.warning("preprocessing cache entry %s is unreadable (%s); rebuilding it",
                        self.path, err)
            return None
        if found != meta["sha256"]:
            log.warning("preprocessing cache entry %s is damaged (its sha256 %s... is not the "
                        "%s... recorded when it was written); rebuilding it", self.path,
                        found[:12], meta["sha256"][:12])
            return None
        return meta

    def _commit(self, tmp: Path, meta: dict[str, Any]) -> None:
        """Record ``tmp``'s sha256 in the ``.json``, then rename the data file and the ``.json``
        into place (in that order: an entry with a ``.json`` is complete).

        Raises:
            OSError: A write or rename failed (``tmp`` is left to the caller).
        """
        meta = {**meta, "settings": self.settings, "sha256": file_sha256(tmp)}
        meta_tmp = _write_text(self.meta_path, json.dumps(meta))
        try:
            os.replace(tmp, self.path)
            os.replace(meta_tmp, self.meta_path)
        finally:
            meta_tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)


class ArrayCache(_Entry):
    """One cache entry of named arrays: ``directory / f"{name}-{key}.npz"`` and its ``.json``.

    Args:
        directory: Where entries live (created on first write).
        name: Readable prefix of the file name (e.g. ``"inertial"``).
        settings: Everything the arrays depend on (JSON-serializable; the content digest of
            the input files included).
    """

    SUFFIX = ".npz"

    def load(self) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None when the entry is absent or unusable (one warning line:
        damaged, unreadable)."""
        meta = self._verified_meta()
        if meta is None:
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except Exception as err:  # intact bytes numpy cannot read: say so, then rebuild
            log.warning("preprocessing cache entry %s is unreadable (%r); rebuilding it",
                        self.path, err)
            return None

    def save(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write atomically (free space checked, temporary file, fsync, digest, rename).

        Raises:
            CacheUnavailableError: No room, an unwritable directory or a failed write (the
                temporary file is removed).
        """
        need = sum(np.asarray(a).nbytes for a in arrays.values()) + META_MARGIN
        _room_for(self.directory, need)
        tmp = _temporary(self.path)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            self._commit(tmp, {"arrays": sorted(arrays)})
        except OSError as err:
            raise _unavailable(self.directory, need, _reason(err)) from err
        finally:
            tmp.unlink(missing_ok=True)

    def load_or_build(self, build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The stored arrays; on a miss, ``build()`` them and store them (when the cache cannot
        take them: one warning line, and they are returned from memory)."""
        arrays = self.load()
        if arrays is None:
            arrays = dict(build())
            try:
                self.save(arrays)
            except CacheUnavailableError as err:
                log.warning("%s", err)
        return arrays


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The header ``numpy.save`` writes before the data of a C-ordered array."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
        "shape": tuple(int(s) for s in shape)})
    return buffer.getvalue()


class _RowWriter:
    """Stands for the (n, ...) array while it is built: ``writer[i] = row`` writes row ``i``
    at its place in the file with plain writes, so a failed write (a full disk) raises
    :class:`OSError` instead of faulting as a write through a memory map would."""

    def __init__(self, handle: io.RawIOBase, offset: int, shape: tuple[int, ...],
                 dtype: np.dtype):
        self.handle, self.offset, self.shape, self.dtype = handle, offset, shape, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: int, value: Any) -> None:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < self.shape[0]:
            raise IndexError(f"a cached array is written one row at a time (index 0.."
                             f"{self.shape[0] - 1}), got {index!r}")
        row = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=self.dtype),
                                                   self.shape[1:]))
        data = memoryview(row).cast("B")
        self.handle.seek(self.offset + int(index) * self.row_bytes)
        while data:
            data = data[self.handle.write(data):]


def _reserve(handle: io.RawIOBase, size: int) -> None:
    """Allocate ``size`` bytes for the file now, so that writing them cannot run out of space
    (where the filesystem allows it; elsewhere a write that does raises)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    handle.truncate(size)


class MappedArrayCache(_Entry):
    """One memory-mapped cache entry: ``directory / f"{name}-{key}.npy"`` (the array) and
    ``.json`` (settings, shape, dtype, the ``.npy``'s sha256 and metadata such as sample ids).

    :meth:`build` writes the ``.npy`` row by row into a temporary file whose space is reserved
    first (module docstring); :meth:`load` verifies the file and maps it copy-on-write
    (``mmap_mode="c"``): the pages are shared with every process that maps the file and are
    only copied for a process that writes to them.

    Args:
        directory: Where entries live (created on first write).
        name: Readable prefix of the file names (e.g. ``"frames"``).
        settings: Everything the array depends on (JSON-serializable).
    """

    SUFFIX = ".npy"

    def load(self) -> tuple[np.ndarray, dict[str, Any]] | None:
        """(memory-mapped array, metadata), or None when absent or unusable (one warning line:
        damaged, unreadable, another shape or dtype)."""
        meta = self._verified_meta()
        if meta is None:
            return None
        try:
            array = np.load(self.path, mmap_mode="c", allow_pickle=False)
        except Exception as err:  # intact bytes numpy cannot read: say so, then rebuild
            log.warning("preprocessing cache entry %s is unreadable (%r); rebuilding it",
                        self.path, err)
            return None
        if (meta.get("shape"), meta.get("dtype")) != (list(array.shape), str(array.dtype)):
            log.warning("preprocessing cache entry %s: its shape or dtype differ from the ones "
                        "recorded; rebuilding it", self.path)
            return None
        return array, meta.get("metadata", {})

    def build(self, shape: tuple[int, ...], dtype: np.dtype | str,
              fill: Callable[[Any], Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        """Build the array (``shape``, ``dtype``): ``fill(out)`` sets every row (``out[i] =
        row``) and returns JSON-serializable metadata; store both and return them (the array
        memory-mapped from the entry).

        When the cache cannot take the entry (no room, an unwritable directory, a failed write)
        one warning line says so and the array is built in memory instead (``fill`` then gets
        a plain array).
        """
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        header = _npy_header(shape, dtype)
        size = len(header) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        try:
            _room_for(self.directory, size + META_MARGIN)
        except CacheUnavailableError as err:
            log.warning("%s", err)
            return self._in_memory(shape, dtype, fill)
        tmp = _temporary(self.path)
        metadata = None
        try:
            with open(tmp, "w+b", buffering=0) as handle:
                _reserve(handle, size)
                handle.write(header)
                metadata = dict(fill(_RowWriter(handle, len(header), shape, dtype)))
                os.fsync(handle.fileno())
            self._commit(tmp, {"shape": list(shape), "dtype": str(dtype),
                               "metadata": metadata})
        except OSError as err:
            log.warning("%s", _unavailable(self.directory, size + META_MARGIN, _reason(err)))
            if metadata is None:  # the rows were not all written: build them again
                tmp.unlink(missing_ok=True)
                return self._in_memory(shape, dtype, fill)
            written = tmp if tmp.exists() else self.path  # complete: read into memory
            return np.load(written, allow_pickle=False), metadata
        finally:
            tmp.unlink(missing_ok=True)
        return np.load(self.path, mmap_mode="c", allow_pickle=False), metadata

    @staticmethod
    def _in_memory(shape: tuple[int, ...], dtype: np.dtype,
                   fill: Callable[[Any], Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        array = np.empty(shape, dtype=dtype)
        return array, dict(fill(array))

    def load_or_build(self, shape: tuple[int, ...], dtype: np.dtype | str,
                      fill: Callable[[Any], Mapping[str, Any]]
                      ) -> tuple[np.ndarray, dict[str, Any]]:
        """The stored entry when it is intact and has ``shape``; else :meth:`build` it."""
        entry = self.load()
        if entry is not None and entry[0].shape == tuple(shape):
            return entry
        return self.build(shape, dtype, fill)
