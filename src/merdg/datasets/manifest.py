"""Bring your own data: a directory with ``manifest.csv`` and one ``.npy`` file per sample and
modality is a dataset (``--dataset manifest --data-root DIR``).

``manifest.csv`` columns:

- ``sample_id``: unique name of the sample (used in error messages);
- ``domain``: the sample's domain (any string; leave-one-domain-out runs over them);
- ``label``: the class (any string; class indices follow the sorted labels, numerically when
  every label is an integer);
- ``split`` (optional): ``train``, ``val`` or ``test``. With it, a run trains on the sources'
  ``train`` rows, selects on their ``val`` rows and tests on the target's ``test`` rows; without
  it, a seeded share of each source domain is held out and the whole target is tested;
- every other column is a modality; its value is the path, relative to DIR, of a ``.npy`` array
  (a path that leaves DIR, through ``..``, an absolute path or a symlink, is refused unless the
  dataset option ``allow_outside_root`` is true).

The arrays of one modality share a shape, or share every axis but the first (time): such
sequences, e.g. (T, C) with varying T, are brought to ``length`` frames (default: the longest)
by ``sequence_mode`` "resample" (linear) or "pad" (zero-pad or crop at the end). Every array is
loaded into memory. See ``docs/manifest.md``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from merdg.datasets.arrays import ArrayDomainDataset
from merdg.datasets.base import DATASETS, ROLES, CheckReport
from merdg.datasets.preprocessing import (
    NORMALIZATION_MODES,
    DataError,
    fit_standardization,
    fit_time_axis,
    raise_problems,
)
from merdg.datasets.untrusted import check_flag, one_line, read_utf8, resolve_in_root
from merdg.hparams import HParam

__all__ = ["MANIFEST_NAME", "ManifestDataset", "ManifestRow", "read_manifest"]

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("sample_id", "domain", "label")
SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class ManifestRow:
    """One line of ``manifest.csv`` (``line`` counts the header as line 1)."""

    line: int
    sample_id: str
    domain: str
    label: str
    split: str | None
    files: dict[str, str]


def _natural_sorted(values: set[str]) -> list[str]:
    """Sorted numerically when every value is an integer, else as strings."""
    if all(re.fullmatch(r"-?[0-9]+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _manifest_path(root: str | Path | None) -> Path:
    if not root:
        raise FileNotFoundError("the manifest dataset needs --data-root DIR (or $MERDG_DATA_ROOT)"
                                f", where DIR holds {MANIFEST_NAME}")
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {root}")
    return path


def _parse_row(line: int, row: dict[str, str], modalities: Sequence[str], has_split: bool,
               seen: set[str]) -> tuple[ManifestRow | None, list[str]]:
    """The row, or None with the reasons it is unusable."""
    cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
    name = one_line(cells.get("sample_id") or f"<line {line}>")
    where = f"{MANIFEST_NAME} line {line} (sample {name})"
    problems = [f"{where}: empty {c!r}" for c in (*REQUIRED_COLUMNS, *modalities) if not cells[c]]
    if None in row:
        problems.append(f"{where}: more cells than columns")
    split = cells.get(SPLIT_COLUMN) if has_split else None
    if has_split and split not in ROLES:
        problems.append(f"{where}: split must be one of {list(ROLES)}, got {split!r}")
    if cells["sample_id"] in seen:
        problems.append(f"{where}: duplicate sample_id")
    seen.add(cells["sample_id"])
    if problems:
        return None, problems
    files = {m: cells[m] for m in modalities}
    return ManifestRow(line, cells["sample_id"], cells["domain"], cells["label"], split,
                       files), []


def read_manifest(root: str | Path | None) -> tuple[list[ManifestRow], list[str], list[str]]:
    """Parse ``DIR/manifest.csv`` (UTF-8, with or without a byte-order mark).

    Returns:
        (usable rows, modality names in column order, one problem per unusable row; a manifest
        without rows is one problem).

    Raises:
        FileNotFoundError: No manifest.
        DataError: Not UTF-8 text, not parseable as CSV, or a bad header (required columns
            missing, no modality column, a column without a name or named twice); the message
            names the file and the line.
    """
    path = _manifest_path(root)
    reader = csv.DictReader(io.StringIO(read_utf8(path, "manifest"), newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        _check_columns(path, columns)
        modalities = [c for c in columns if c not in (*REQUIRED_COLUMNS, SPLIT_COLUMN)]
        rows, problems, seen = [], [], set()
        for raw in reader:
            row, row_problems = _parse_row(reader.line_num, raw, modalities,
                                           SPLIT_COLUMN in columns, seen)
            problems += row_problems
            if row is not None:
                rows.append(row)
    except csv.Error as err:  # e.g. a field over csv's size limit
        line = reader.reader.line_num  # DictReader.line_num lags when a row fails
        raise DataError(f"{path} line {line}: not readable as CSV ({err})") from None
    if not rows and not problems:
        problems.append(f"{MANIFEST_NAME}: no sample rows (only a header)")
    return rows, modalities, problems


def _check_columns(path: Path, columns: Sequence[str]) -> None:
    """Raise a DataError naming what is wrong with the header, if anything."""
    shown = [one_line(c) for c in columns]
    unnamed = [i + 1 for i, c in enumerate(columns) if not c]
    repeated = sorted(one_line(c) for c, n in Counter(columns).items() if c and n > 1)
    if unnamed or repeated:
        raise DataError(f"{path}: header {shown}: "
                        + (f"column(s) {unnamed} have no name" if unnamed else "")
                        + ("; " if unnamed and repeated else "")
                        + (f"column(s) {repeated} appear more than once" if repeated else ""))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or len(columns) == len(REQUIRED_COLUMNS) + (SPLIT_COLUMN in columns):
        raise DataError(f"{path}: columns {shown} lack {missing or 'a modality column'}; "
                        f"need {list(REQUIRED_COLUMNS)}, optional {SPLIT_COLUMN!r}, then one "
                        "column per modality")


NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 10_000  # bytes; numpy's own limit for headers it parses safely
FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_array(root: Path, row: ManifestRow, modality: str,
               allow_outside_root: bool = False) -> np.ndarray:
    """One sample's ``.npy`` array as float32, as training will read it.

    Raises:
        DataError: A path that leaves the data root (unless ``allow_outside_root``), a directory,
            a missing file, or an array that :func:`read_npy` or :func:`as_float32` refuses; the
            message names the sample, the modality and the file, on one line.
    """
    path, refused = resolve_in_root(root, row.files[modality], allow_outside_root)
    where = f"sample {one_line(row.sample_id)} ({modality}): {one_line(path)}"
    if refused:
        raise DataError(f"{where}: {refused}")
    if path.is_dir():
        raise DataError(f"{where}: is a directory, not a .npy file")
    if not path.is_file():
        raise DataError(f"{where}: file missing")
    try:
        return as_float32(read_npy(path))
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, checked before its data is read.

    Raises:
        DataError: Not a ``.npy`` file (a pickle, an ``.npz`` archive, ...), a header over
            :data:`MAX_NPY_HEADER` bytes, Python objects (they need pickle, never loaded), a
            complex, non-numeric, 0-d or empty array, or fewer data bytes than the header
            declares (truncated); the message says which, without the path.
    """
    with open(path, "rb") as f:
        magic = f.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            f.seek(0)
            raise DataError(f"not a .npy array file ({_file_kind(f.read(4))}); merdg reads "
                            "arrays written by numpy.save and never unpickles files")
        shape, fortran, dtype = _npy_header(f)
        _check_npy_array(shape, dtype)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        available = path.stat().st_size - f.tell()
        if available < expected:
            raise DataError(f"truncated: the header declares shape {shape} of {dtype} "
                            f"({expected} bytes) but {available} bytes follow")
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except Exception as err:  # numpy raises several types on damaged data
            raise DataError(f"unreadable, truncated or corrupt ({err!r})") from err


def _file_kind(start: bytes) -> str:
    if start[:1] == b"\x80" or start[:1] in (b"(", b"c", b"}", b"]"):
        return "it looks like a pickle"
    if start[:2] == b"PK":
        return "it is a zip archive, e.g. an .npz"
    return f"it starts with {start!r}"


def _npy_header(f: io.BufferedReader) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the ``.npy`` header at ``f`` (after the magic)."""
    version = (f.read(1) + f.read(1))
    readers = {b"\x01\x00": (2, np.lib.format.read_array_header_1_0),
               b"\x02\x00": (4, np.lib.format.read_array_header_2_0)}
    if version not in readers:
        raise DataError(f"unsupported .npy format version {tuple(version)} (numpy.save writes "
                        "1.0 or 2.0 for numeric arrays)")
    size_bytes, read_header = readers[version]
    start = f.tell()
    length = int.from_bytes(f.read(size_bytes), "little")
    if length > MAX_NPY_HEADER:
        raise DataError(f"the .npy header is {length} bytes, more than the {MAX_NPY_HEADER} "
                        "bytes numpy parses safely")
    available = os.fstat(f.fileno()).st_size - f.tell()
    if available < length:
        raise DataError(f"truncated: the .npy header needs {length} bytes but {available} follow")
    f.seek(start)
    try:
        return read_header(f)
    except Exception as err:  # a malformed header: numpy raises ValueError or SyntaxError
        raise DataError(f"unreadable .npy header ({err!r})") from err


def _check_npy_array(shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise DataError(f"holds Python objects (dtype {dtype}); they would need pickle, which "
                        "merdg never loads: save a numeric array")
    if np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"complex values (dtype {dtype}); training reads real numbers: save the "
                        "real and imaginary parts as separate channels")
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)) or dtype.fields:
        raise DataError(f"non-numeric dtype {dtype}; expected numbers or booleans")
    if not shape:
        raise DataError("a 0-d array (one number); expected an array with >= 1 axis")
    if 0 in shape:
        raise DataError(f"empty array (shape {shape})")


def as_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as float32, refusing NaN/Inf and values that float32 cannot hold."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{int((~np.isfinite(array)).sum())} NaN/Inf values")
    with np.errstate(over="ignore"):  # reported below, with the file
        out = array.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{int((~np.isfinite(out)).sum())} values beyond the float32 range "
                        f"(|x| > {FLOAT32_MAX:.3g}); training reads float32, where they "
                        "become inf")
    return out


def _stack_key(shape: tuple[int, ...]) -> tuple[int, ...]:
    """What must agree between samples: the rank, and every axis but the first (time) of a
    sequence (a vector's whole shape)."""
    return (len(shape), *(shape[1:] if len(shape) >= 2 else shape))


def stack_modality(arrays: Sequence[np.ndarray], ids: Sequence[str], modality: str,
                   length: int | None, mode: str) -> tuple[np.ndarray | None, list[str]]:
    """Stack one modality's arrays to (n, ...), fitting sequences' first axis to ``length``.

    Returns:
        (stacked array, []) or (None, one problem per sample whose shape does not fit).
    """
    if not arrays:
        return None, []
    keys = Counter(_stack_key(a.shape) for a in arrays)
    if len(keys) > 1 or (arrays[0].ndim < 2 and len({a.shape for a in arrays}) > 1):
        common = keys.most_common(1)[0][0]
        example = next(a.shape for a in arrays if _stack_key(a.shape) == common)
        return None, [f"sample {one_line(i)} ({modality}): shape {a.shape} does not stack with "
                      f"the modality's other arrays (most have shape {example}); arrays must "
                      "share a shape, or every axis but the first"
                      for a, i in zip(arrays, ids) if _stack_key(a.shape) != common]
    if arrays[0].ndim < 2 or (length is None and len({a.shape[0] for a in arrays}) == 1):
        return np.stack(arrays), []
    target = length or max(a.shape[0] for a in arrays)
    return np.stack([fit_time_axis(a, target, mode) for a in arrays]).astype(np.float32), []


def _length_for(length: int | Mapping[str, int] | None, modality: str) -> int | None:
    return length.get(modality) if isinstance(length, Mapping) else length


def load_samples(root: Path, rows: Sequence[ManifestRow], modalities: Sequence[str],
                 length: int | Mapping[str, int] | None, sequence_mode: str,
                 progress: bool = True, allow_outside_root: bool = False
                 ) -> tuple[dict[str, np.ndarray], list[ManifestRow], list[str]]:
    """Stacked arrays of the rows whose every file loads, those rows, and every problem."""
    arrays: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    good, problems = [], []
    for row in tqdm(rows, desc="manifest: loading", disable=not progress):
        loaded = {}
        for m in modalities:
            try:
                loaded[m] = load_array(root, row, m, allow_outside_root)
            except DataError as err:
                problems.append(str(err))
        if len(loaded) == len(modalities):
            good.append(row)
            for m in modalities:
                arrays[m].append(loaded[m])
    stacked = {}
    for m in modalities:
        stacked[m], shape_problems = stack_modality(
            arrays[m], [r.sample_id for r in good], m, _length_for(length, m), sequence_mode)
        problems += shape_problems
    return stacked, good, problems


def default_encoder(input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Encoder spec by the sample's rank: (D,) mlp, (T, C) tcn, (T, H, W) / (C, T, H, W) cnn3d."""
    specs = {1: {"name": "mlp", "hidden": 128, "out_dim": 64, "layers": 2},
             2: {"name": "tcn", "channels": [32, 64, 64], "kernel_size": 5},
             3: {"name": "cnn3d", "channels": [8, 16, 32]},
             4: {"name": "cnn3d", "channels": [8, 16, 32]}}
    if len(input_shape) not in specs:
        raise KeyError(f"no default encoder for samples of shape {input_shape}; give one with "
                       '--hparams \'{"encoders": {"<modality>": {"name": ...}}}\'')
    return dict(specs[len(input_shape)])


@DATASETS.register("manifest")
class ManifestDataset(ArrayDomainDataset):
    """Your own data: ``manifest.csv`` + one ``.npy`` per sample and modality (docs/manifest.md).

    Args:
        root: Directory holding ``manifest.csv``; the arrays' paths are relative to it.
        modalities: Subset of the manifest's modality columns (default: all).
        length: Frames that sequences of varying length are brought to (an int for every
            modality or ``{modality: int}``; default: the longest sequence of the modality).
        sequence_mode: ``"resample"`` (linear interpolation) or ``"pad"`` (zero-pad or crop).
        normalization: ``"channel"``, ``"global"`` or ``"none"`` for every modality, or a dict
            per modality (default: ``"channel"`` for (D,) and (T, C) samples, else ``"global"``);
            statistics come from the source domains only.
        normalize: Standardize at all (``fit_normalization``); False hands out raw arrays.
        progress: Show a progress bar while loading.
        allow_outside_root: Read array paths that leave ``root`` (absolute paths, ``..``,
            symlinks pointing elsewhere); refused by default (docs/reliability.md).

    Raises:
        FileNotFoundError: No ``manifest.csv`` under ``root``.
        DataError: Listing every bad row, missing/corrupt file, NaN array and shape mismatch.
    """

    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": HParam(1e-3, "Adam learning rate for small from-scratch encoders"),
        "weight_decay": HParam(1e-4, "Adam weight decay"),
        "batch_size": HParam(32, "global batch, split evenly over the source domains"),
        "epochs": HParam(20, "training epochs"),
        "proj_hidden": HParam(256, "projection head hidden width (scaled down from 2048)"),
        "fusion_hidden": HParam(128, "fusion classifier hidden width (scaled down from 512)"),
    }

    def __init__(self, root: str | None = None, modalities: Sequence[str] | None = None,
                 length: int | Mapping[str, int] | None = None, sequence_mode: str = "resample",
                 normalization: str | Mapping[str, str] | None = None, normalize: bool = True,
                 progress: bool = True, allow_outside_root: bool = False) -> None:
        self.root = _manifest_path(root).parent
        allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        rows, all_modalities, problems = read_manifest(self.root)
        self.ALL_MODALITIES = tuple(all_modalities)
        self.modalities = self.select_modalities(modalities)
        raise_problems(problems, str(self.root / MANIFEST_NAME))
        stacked, rows, problems = load_samples(self.root, rows, self.modalities, length,
                                               sequence_mode, progress, allow_outside_root)
        raise_problems(problems, f"the manifest dataset {self.root}")
        if not rows:
            raise DataError(f"{self.root / MANIFEST_NAME} has no samples")
        self.normalize = normalize
        self.normalization = _normalization_modes(normalization, stacked)
        self.sample_ids = [r.sample_id for r in rows]
        self._splits = [r.split for r in rows] if rows and rows[0].split else None
        self.HAS_OFFICIAL_SPLITS = self._splits is not None
        self.set_samples({m: torch.from_numpy(v) for m, v in stacked.items()},
                         torch.tensor(_label_indices(rows)), [r.domain for r in rows],
                         _natural_sorted({r.domain for r in rows}),
                         _natural_sorted({r.label for r in rows}))

    def encoder_spec(self, modality: str) -> dict[str, Any]:
        return default_encoder(self.input_shape(modality))

    def sample_name(self, index: int) -> str:
        return f"sample {one_line(self.sample_ids[index])}"

    def split(self, domain: str, role: str, seed: int, holdout_fraction: float) -> Dataset:
        """The manifest's ``split`` column when present, else the seeded holdout."""
        if self._splits is None:
            return super().split(domain, role, seed, holdout_fraction)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        samples = self.domain_samples(domain)
        splits = [self._splits[i] for i in self.domain_indices(domain).tolist()]
        keep = [k for k, s in enumerate(splits) if s == role]
        if not keep:
            raise ValueError(f"manifest: domain {domain!r} has no rows with split={role!r} "
                             f"(it has {dict(Counter(splits))})")
        return samples.subset(keep)

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              length: int | Mapping[str, int] | None = None, sequence_mode: str = "resample",
              normalization: str | Mapping[str, str] | None = None, normalize: bool = True,
              progress: bool = True, allow_outside_root: bool = False,
              **_: Any) -> CheckReport:
        """Load every row and array (nothing is trained); report counts and every problem,
        including values that overflow float32 once standardized as a run with any target
        would standardize them."""
        root_path = _manifest_path(root).parent
        allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        rows, all_modalities, problems = read_manifest(root_path)
        mods = _select_modalities(all_modalities, modalities)
        stacked, good, load_problems = load_samples(root_path, rows, mods, length,
                                                    sequence_mode, progress, allow_outside_root)
        if normalize and good and not load_problems:
            modes = _normalization_modes(normalization, stacked)
            load_problems = _overflow_problems(stacked, good, modes)
        return CheckReport("manifest", _counts(good), problems + load_problems,
                           _check_notes(root_path, rows, good, stacked))


def _select_modalities(available: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    unknown = sorted(set(requested or []) - set(available))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; the manifest has {list(available)}")
    return sorted(set(requested or available))


def _label_indices(rows: Sequence[ManifestRow]) -> list[int]:
    names = _natural_sorted({r.label for r in rows})
    index = {n: i for i, n in enumerate(names)}
    return [index[r.label] for r in rows]


def _normalization_modes(option: str | Mapping[str, str] | None,
                         stacked: Mapping[str, np.ndarray]) -> dict[str, str]:
    modes = {}
    for m, v in stacked.items():
        mode = option.get(m) if isinstance(option, Mapping) else option
        modes[m] = mode or ("channel" if v.ndim <= 3 else "global")  # v is (n, ...)
        if modes[m] not in NORMALIZATION_MODES:
            raise ValueError(f"normalization for {m!r} must be one of {NORMALIZATION_MODES}, "
                             f"got {modes[m]!r}")
    return modes


def _overflow_problems(stacked: Mapping[str, np.ndarray], rows: Sequence[ManifestRow],
                       modes: Mapping[str, str]) -> list[str]:
    """One problem per sample whose values overflow float32 once standardized with the
    statistics of the other domains (what a run targeting its domain, or another, computes)."""
    domains = np.array([r.domain for r in rows])
    bad: dict[tuple[int, str], str] = {}
    for target in _natural_sorted(set(domains.tolist())):
        sources = torch.from_numpy(domains != target)
        if not sources.any():
            continue
        for m, v in stacked.items():
            x = torch.from_numpy(v)
            stats = fit_standardization(x[sources], modes[m])
            overflow = (~torch.isfinite(stats.apply(x))).flatten(1).any(1)
            for i in overflow.nonzero().flatten().tolist():
                bad.setdefault((i, m), target)
    return [f"sample {one_line(rows[i].sample_id)} ({m}): its values overflow float32 once "
            f"standardized with the statistics of the domains other than {target!r}; rescale them"
            for (i, m), target in sorted(bad.items())]


def _counts(rows: Sequence[ManifestRow]) -> dict[str, dict[str, int]]:
    per = Counter((r.domain, r.label) for r in rows)
    labels = _natural_sorted({r.label for r in rows})
    return {d: {c: per[(d, c)] for c in labels}
            for d in _natural_sorted({r.domain for r in rows})}


def _check_notes(root: Path, rows: Sequence[ManifestRow], good: Sequence[ManifestRow],
                 stacked: Mapping[str, np.ndarray | None]) -> list[str]:
    notes = [f"root: {root}", f"rows: {len(rows)} usable, {len(good)} with every file readable",
             "modalities:"]
    for m, v in stacked.items():
        notes.append(f"  {m}: sample shape {tuple(v.shape[1:])}" if v is not None
                     else f"  {m}: shapes do not stack (see problems)")
    if good and good[0].split:
        per = Counter((r.domain, r.split) for r in good)
        notes.append("split rows per domain: " + "; ".join(
            f"{d}: " + ", ".join(f"{s} {per[(d, s)]}" for s in ROLES)
            for d in _natural_sorted({r.domain for r in good})))
    for d, classes in _counts(good).items():
        absent = [c for c, n in classes.items() if n == 0]
        if absent:
            notes.append(f"warning: domain {d!r} has no samples of classes {absent}")
    return notes
