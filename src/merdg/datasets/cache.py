"""On-disk cache of preprocessed arrays, keyed by the preprocessing settings.

A cache entry is one ``.npz`` file named ``<name>-<key>.npz`` where ``key`` hashes the settings
(preprocessing options, a format version, and a fingerprint of the input files' names, sizes and
modification times), so changing any setting or any input file selects a different entry.

Writes are atomic: the arrays go to a temporary file in the same directory, are flushed to disk,
and only then renamed to the final name. A run interrupted while writing leaves at most a
``.tmp`` file, which is never read, so a cache from an interrupted run is never used. An entry
that cannot be read back (or whose stored settings differ) is reported with a warning and rebuilt.

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

__all__ = ["CACHE_ENV", "ArrayCache", "default_cache_dir", "file_fingerprint", "settings_key"]

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
