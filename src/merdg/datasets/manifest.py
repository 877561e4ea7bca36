"""Bring your own data: a directory with ``manifest.csv`` and one ``.npy`` file per sample and
modality is a dataset (``--dataset manifest --data-root DIR``).

``manifest.csv`` columns:

- ``sample_id``: unique name of the sample (used in error messages);
- ``domain``: the sample's domain (any string; leave-one-domain-out runs over them);
- ``domain:NAME`` (optional, any number): other candidate domain definitions (subject, session,
  placement, ...); the dataset option ``domain_column=NAME`` makes one of them the domains
  (without a ``domain`` column it is required), and ``where=NAME:VALUE,...`` selects rows (see
  :mod:`merdg.datasets.columns`);
- ``label``: the class (any string; class indices follow the sorted labels, numerically when
  every label is an integer);
- ``split`` (optional): ``train``, ``val`` or ``test``. With it, a run trains on the sources'
  ``train`` rows, selects on their ``val`` rows and tests on the target's ``test`` rows; without
  it, a seeded share of each source domain is held out and the whole target is tested;
- ``group`` (optional): the recording, session or subject a sample comes from; the holdout keeps
  each group on one side (windows of one recording never straddle train and validation);
- every other column is a modality; its value is the path, relative to DIR, of a ``.npy`` array
  (a path that leaves DIR, through ``..``, an absolute path or a symlink, is refused unless the
  dataset option ``allow_outside_root`` is true).

The arrays of one modality share a shape, or share every axis but the first (time): such
sequences, e.g. (T, C) with varying T, are brought to one length by the ``length_policy``
("resample", "pad" or "crop", see :mod:`merdg.datasets.sequences`). The stacked float32 arrays
are cached on disk once and memory-mapped, so DataLoader workers share one copy. See
``docs/manifest.md``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from merdg.datasets.arrays import ArrayDomainDataset
from merdg.datasets.base import DATASETS, ROLES, CheckReport
from merdg.datasets.cache import MappedArrayCache, content_digest, default_cache_dir, settings_key
from merdg.datasets.columns import (
    Where,
    check_enough_domains,
    describe_columns,
    natural_sorted,
    parse_where,
    select_rows,
)
from merdg.datasets.groups import describe_groups, group_summary, split_leaks, windows_warning
from merdg.datasets.preprocessing import (
    NORMALIZATION_MODES,
    DataError,
    raise_problems,
)
from merdg.datasets.sequences import SequencePlan, check_length_policy, plan_modality
from merdg.datasets.untrusted import check_flag, one_line, read_utf8, resolve_in_root
from merdg.hparams import HParam, training_default
from merdg.progress import progress_bar

__all__ = ["MANIFEST_NAME", "ManifestDataset", "ManifestRow", "read_manifest"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("sample_id", "label")
DOMAIN_COLUMN = "domain"
DOMAIN_PREFIX = "domain:"  # a candidate domain column: "domain:subject" is named "subject"
SPLIT_COLUMN = "split"
GROUP_COLUMN = "group"
OPTIONAL_COLUMNS = (SPLIT_COLUMN, GROUP_COLUMN)
RESERVED_NAMES = (*REQUIRED_COLUMNS, DOMAIN_COLUMN, *OPTIONAL_COLUMNS)
NAME_SYNTAX = ":;,"  # characters of the where syntax, refused in a domain column's name
CACHE_FORMAT = 2  # bump when the stacking code changes what it writes (2: content keys)


@dataclass(frozen=True)
class ManifestRow:
    """One line of ``manifest.csv`` (``line`` counts the header as line 1).

    ``domain`` is the value of the run's domain column; ``domains`` holds every candidate
    domain column by name (``"domain"``, and ``"subject"`` for ``domain:subject``).
    """

    line: int
    sample_id: str
    domain: str
    label: str
    split: str | None
    files: dict[str, str]
    group: str | None = None
    domains: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestHeader:
    """What the header of ``manifest.csv`` declares.

    Attributes:
        modalities: Modality columns, in column order.
        domain_columns: ``{name: column}`` of the candidate domain columns (``"domain"`` for
            ``domain``, ``"subject"`` for ``domain:subject``), in column order.
        domain_column: The name of the one that gives each row its domain.
        has_split / has_group: Whether the optional columns are there.
    """

    modalities: list[str]
    domain_columns: dict[str, str]
    domain_column: str
    has_split: bool
    has_group: bool

    def filter_columns(self) -> list[str]:
        """The columns ``where`` may name: the candidate domain columns and ``group``."""
        return [*self.domain_columns, *([GROUP_COLUMN] if self.has_group else [])]


def _manifest_path(root: str | Path | None) -> Path:
    if not root:
        raise FileNotFoundError("the manifest dataset needs --data-root DIR (or $MERDG_DATA_ROOT)"
                                f", where DIR holds {MANIFEST_NAME}")
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {root}")
    return path


def _parse_row(line: int, row: dict[str, str], header: ManifestHeader,
               seen: set[str]) -> tuple[ManifestRow | None, list[str]]:
    """The row, or None with the reasons it is unusable."""
    cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
    name = one_line(cells.get("sample_id") or f"<line {line}>")
    where = f"{MANIFEST_NAME} line {line} (sample {name})"
    needed = (*REQUIRED_COLUMNS, *header.domain_columns.values(), *header.modalities,
              *([GROUP_COLUMN] if header.has_group else []))
    problems = [f"{where}: empty {one_line(c)!r}" for c in needed if not cells[c]]
    if None in row:
        problems.append(f"{where}: more cells than columns")
    split = cells.get(SPLIT_COLUMN) if header.has_split else None
    if header.has_split and split not in ROLES:
        problems.append(f"{where}: split must be one of {list(ROLES)}, got {split!r}")
    if cells["sample_id"] in seen:
        problems.append(f"{where}: duplicate sample_id")
    seen.add(cells["sample_id"])
    if problems:
        return None, problems
    files = {m: cells[m] for m in header.modalities}
    domains = {n: cells[c] for n, c in header.domain_columns.items()}
    return ManifestRow(line, cells["sample_id"], domains[header.domain_column], cells["label"],
                       split, files, cells[GROUP_COLUMN] if header.has_group else None,
                       domains), []


def read_manifest(root: str | Path | None, domain_column: str | None = None
                  ) -> tuple[list[ManifestRow], list[str], list[str]]:
    """Parse ``DIR/manifest.csv`` (UTF-8, with or without a byte-order mark).

    Args:
        root: The directory holding it.
        domain_column: The candidate domain column that gives each row its ``domain``
            (default: the ``domain`` column).

    Returns:
        (usable rows, modality names in column order, one problem per unusable row; a manifest
        without rows is one problem).

    Raises:
        FileNotFoundError: No manifest.
        DataError: Not UTF-8 text, not parseable as CSV, or a bad header (required columns
            missing, no modality or domain column, a column without a name or named twice); the
            message names the file and the line.
        ValueError: ``domain_column`` names no candidate domain column.
    """
    rows, header, problems = _read(root, domain_column)
    return rows, header.modalities, problems


def _read(root: str | Path | None, domain_column: str | None
          ) -> tuple[list[ManifestRow], ManifestHeader, list[str]]:
    """:func:`read_manifest`, with the whole header."""
    path = _manifest_path(root)
    reader = csv.DictReader(io.StringIO(read_utf8(path, "manifest"), newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        header = _header(path, columns, domain_column)
        rows, problems, seen = [], [], set()
        for raw in reader:
            row, row_problems = _parse_row(reader.line_num, raw, header, seen)
            problems += row_problems
            if row is not None:
                rows.append(row)
    except csv.Error as err:  # e.g. a field over csv's size limit
        line = reader.reader.line_num  # DictReader.line_num lags when a row fails
        raise DataError(f"{path} line {line}: not readable as CSV ({err})") from None
    if not rows and not problems:
        problems.append(f"{path}: no sample rows (only a header)")
    return rows, header, problems + _group_domain_problems(path, rows)


def _header(path: Path, columns: Sequence[str], domain_column: str | None) -> ManifestHeader:
    """What ``columns`` declare, with the run's domain column checked."""
    _check_columns(path, columns)
    domains = {c.removeprefix(DOMAIN_PREFIX): c for c in columns
               if c == DOMAIN_COLUMN or c.startswith(DOMAIN_PREFIX)}
    modalities = [c for c in columns if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS,
                                                  *domains.values())]
    return ManifestHeader(modalities, domains, _domain_column(path, domains, domain_column),
                          SPLIT_COLUMN in columns, GROUP_COLUMN in columns)


def _domain_column(path: Path, domains: Mapping[str, str], chosen: str | None) -> str:
    """The name of the run's domain column (the dataset option ``domain_column``)."""
    if chosen is not None and (not isinstance(chosen, str) or not chosen.strip()):
        raise ValueError(f"dataset option domain_column must be a column name, got {chosen!r}")
    name = DOMAIN_COLUMN if chosen is None else chosen.strip().removeprefix(DOMAIN_PREFIX)
    if name in domains:
        return name
    listed = ", ".join(domains)
    if chosen is None:
        raise ValueError(f"{path} has no {DOMAIN_COLUMN!r} column: choose one of its domain "
                         f"columns ({listed}) with --dataset-option domain_column=NAME")
    raise ValueError(f"dataset option domain_column={one_line(chosen)}: {path} has no domain "
                     f"column {one_line(name)!r} (a column named {DOMAIN_PREFIX}"
                     f"{one_line(name)}); its domain columns are {listed}")


def _group_domain_problems(path: Path, rows: Sequence[ManifestRow]) -> list[str]:
    """One problem per ``group`` whose rows lie in more than one domain.

    The source-validation holdout splits each domain on its own (``holdout_indices``), so such
    a group could have rows in one domain's training part and another's validation part: the
    promise of the column (a group stays on one side) could not be kept.
    """
    lines: dict[str, dict[str, int]] = {}  # group -> {domain: its first line}
    for row in rows:
        if row.group is not None:
            lines.setdefault(row.group, {}).setdefault(row.domain, row.line)
    problems = []
    for group, where in lines.items():
        if len(where) > 1:
            shown = ", ".join(f"{one_line(d)!r} (line {line})" for d, line in
                              list(where.items())[:3]) + (" ..." if len(where) > 3 else "")
            problems.append(
                f"{path}: group {one_line(group)!r} has rows in {len(where)} domains: {shown}; "
                "the holdout splits each domain on its own, so the group would straddle "
                "training and validation: give each domain's rows their own group names "
                f"(e.g. '<domain>/{one_line(group)}')")
    return problems


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
    candidates = [c for c in columns if c.startswith(DOMAIN_PREFIX)]
    bad = [one_line(c) for c in candidates if c.removeprefix(DOMAIN_PREFIX).strip() in
           ("", *RESERVED_NAMES) or any(ch in c.removeprefix(DOMAIN_PREFIX)
                                        for ch in NAME_SYNTAX)]
    if bad:
        raise DataError(f"{path}: domain column(s) {bad}: a name after {DOMAIN_PREFIX!r} must be "
                        f"non-empty, not one of {list(RESERVED_NAMES)} and without any of "
                        f"{list(NAME_SYNTAX)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if DOMAIN_COLUMN not in columns and not candidates:
        missing.insert(1, DOMAIN_COLUMN)
    fixed = sum(c in columns for c in (*REQUIRED_COLUMNS, DOMAIN_COLUMN, *OPTIONAL_COLUMNS))
    if missing or len(columns) == fixed + len(candidates):
        raise DataError(f"{path}: columns {shown} lack {missing or 'a modality column'}; "
                        f"need {['sample_id', 'domain', 'label']} (or, instead of 'domain', "
                        f"'{DOMAIN_PREFIX}NAME' columns), optional "
                        f"{list(OPTIONAL_COLUMNS)}, then one column per modality")


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


def _length_for(length: int | Mapping[str, int] | None, modality: str) -> int | None:
    return length.get(modality) if isinstance(length, Mapping) else length


def _check_length_names(length: int | Mapping[str, int] | None, available: Sequence[str]) -> None:
    """Refuse a ``length`` dict naming a modality the manifest does not have.

    Raises:
        ValueError: One line naming the unknown names and the manifest's modalities.
    """
    if isinstance(length, Mapping):
        unknown = sorted(set(length) - set(available))
        if unknown:
            raise ValueError(f"dataset option length names modalities {unknown} that the "
                             f"manifest does not have (its modalities: {list(available)})")


def _check_length_fits(length: int | Mapping[str, int] | None,
                      plans: Mapping[str, SequencePlan | None]) -> None:
    """Refuse a ``length`` that no sequence would use: given by name to a modality whose
    arrays have a fixed shape such as (D,) (no time axis), or given as one number when no
    modality is a sequence (a number applies to every sequence modality).

    Raises:
        ValueError: One line naming the modality and its sample shape.
    """
    fixed = {m: p.sample_shape for m, p in plans.items() if p is not None and p.length is None}
    if length is None or not fixed:
        return
    if isinstance(length, Mapping):
        named = [m for m in fixed if m in length]
        if named:
            m = named[0]
            raise ValueError(f"dataset option length gives {length[m]} frames to {m!r}, whose "
                             f"arrays have the fixed shape {fixed[m]} (no time axis); remove "
                             f"{m!r} from length")
    elif len(fixed) == sum(p is not None for p in plans.values()):
        shapes = ", ".join(f"{m} {shape}" for m, shape in fixed.items())
        raise ValueError(f"dataset option length={length}: no modality is a sequence (every "
                         f"array has a fixed shape: {shapes}); remove the option")


def scan_shapes(root: Path, rows: Sequence[ManifestRow], modalities: Sequence[str],
                progress: bool = True, allow_outside_root: bool = False
                ) -> tuple[dict[str, list[tuple[int, ...]]], list[ManifestRow], list[str]]:
    """Read and validate every array (:func:`load_array`), keeping only its shape.

    Returns:
        (``{modality: [shape of each good row]}``, the rows whose every file loads, every
        problem). One array is in memory at a time.
    """
    shapes: dict[str, list[tuple[int, ...]]] = {m: [] for m in modalities}
    good, problems = [], []
    for row in progress_bar(rows, desc="manifest: checking", shown=progress):
        found = {}
        for m in modalities:
            try:
                found[m] = load_array(root, row, m, allow_outside_root).shape
            except DataError as err:
                problems.append(str(err))
        if len(found) == len(modalities):
            good.append(row)
            for m in modalities:
                shapes[m].append(found[m])
    return shapes, good, problems


def plan_modalities(shapes: Mapping[str, Sequence[tuple[int, ...]]], rows: Sequence[ManifestRow],
                    length: int | Mapping[str, int] | None, policy: str
                    ) -> tuple[dict[str, SequencePlan | None], list[str]]:
    """The :class:`~merdg.datasets.sequences.SequencePlan` of each modality (None when its
    arrays do not stack) and every problem."""
    plans, problems = {}, []
    for m, modality_shapes in shapes.items():
        plans[m], found = plan_modality(modality_shapes, [r.sample_id for r in rows], m,
                                        _length_for(length, m), policy)
        problems += found
    return plans, problems


def fill_modality(root: Path, rows: Sequence[ManifestRow], plan: SequencePlan, out: Any,
                  progress: bool = True, allow_outside_root: bool = False) -> list[int]:
    """Write each row's array, brought to ``plan.sample_shape``, into ``out[i]`` (n, ...): an
    array, or the row writer of a cache entry being built.

    Returns:
        Each sample's valid (not padded) steps (its length for vectors: 0).
    """
    valid = []
    for i, row in enumerate(progress_bar(rows, desc=f"manifest: stacking {plan.modality}",
                                 shown=progress)):
        array = load_array(root, row, plan.modality, allow_outside_root)
        out[i] = plan.fit(array)
        valid.append(plan.valid_steps(array.shape[0]) if plan.length is not None else 0)
    return valid


def _plan_from_dict(d: Mapping[str, Any]) -> SequencePlan:
    raw = tuple(tuple(v) if isinstance(v, list) else v for v in d["raw_shape"])
    return SequencePlan(d["modality"], d["policy"], raw, tuple(d["sample_shape"]), d["padded"])


def default_encoder(input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Encoder spec by the sample's rank: (D,) mlp, (T, C) tcn, (T, H, W) / (C, T, H, W) cnn3d
    with five blocks (receptive field 63 pixels; see docs/manifest.md for why five)."""
    specs = {1: {"name": "mlp", "hidden": 128, "out_dim": 64, "layers": 2},
             2: {"name": "tcn", "channels": [32, 64, 64], "kernel_size": 5},
             3: {"name": "cnn3d", "channels": [8, 16, 32, 64, 64]},
             4: {"name": "cnn3d", "channels": [8, 16, 32, 64, 64]}}
    if len(input_shape) not in specs:
        raise KeyError(f"no default encoder for samples of shape {input_shape}; give one with "
                       '--encoders \'{"<modality>": {"name": ...}}\'')
    return dict(specs[len(input_shape)])


def _length_policy(length_policy: str, sequence_mode: str | None) -> str:
    """The length policy, accepting the former option name ``sequence_mode`` (with a warning)."""
    if sequence_mode is not None:
        if length_policy not in ("resample", sequence_mode):
            raise ValueError(f"dataset options length_policy={length_policy!r} and "
                             f"sequence_mode={sequence_mode!r} disagree; give length_policy only")
        warnings.warn("dataset option sequence_mode is now called length_policy", FutureWarning,
                      stacklevel=3)
        length_policy = sequence_mode
    return check_length_policy(length_policy)


@DATASETS.register("manifest")
class ManifestDataset(ArrayDomainDataset):
    """Your own data: ``manifest.csv`` + one ``.npy`` per sample and modality (docs/manifest.md).

    Args:
        root: Directory holding ``manifest.csv``; the arrays' paths are relative to it.
        modalities: Subset of the manifest's modality columns (default: all).
        length: Frames that sequences of varying length are brought to (an int for every
            sequence modality or ``{modality: int}``; default: the longest sequence of the
            modality, the shortest with ``length_policy="crop"``). A name the manifest does not
            have, or a modality of fixed-size arrays such as (D,), is refused.
        length_policy: ``"resample"`` (linear interpolation), ``"pad"`` (zero-pad at the end;
            padded steps are masked) or ``"crop"`` (the middle frames); see
            :mod:`merdg.datasets.sequences`.
        normalization: ``"channel"``, ``"global"`` or ``"none"`` for every modality, or a dict
            per modality (default: ``"channel"`` for (D,) and (T, C) samples, else ``"global"``);
            statistics come from the source domains only.
        normalize: Standardize at all (``fit_normalization``); False hands out raw arrays.
        progress: Show a progress bar while loading.
        cache: Keep the stacked float32 arrays in an on-disk cache (built once, then
            memory-mapped by every run and DataLoader worker); False stacks them in memory.
        cache_dir: Cache directory (default ``$MERDG_CACHE_DIR`` or ``~/.cache/merdg``); entries
            go to ``manifest/`` in it, keyed by the settings and the content of every input
            file (:mod:`merdg.datasets.cache`: verified when read; a full or unwritable
            directory stacks in memory instead, with one warning line).
        sequence_mode: Former name of ``length_policy`` (deprecated).
        allow_outside_root: Read array paths that leave ``root`` (absolute paths, ``..``,
            symlinks pointing elsewhere); refused by default (docs/reliability.md).
        domain_column: The candidate domain column that defines the domains: ``domain``
            (default) or the ``NAME`` of a ``domain:NAME`` column.
        where: Keep only the rows it selects (``"subject:p01,p02;session:s1"``, see
            :mod:`merdg.datasets.columns`; it may name the domain columns and ``group``);
            only their arrays are read. The class list stays that of the whole manifest, so
            class indices agree between selections.

    Raises:
        FileNotFoundError: No ``manifest.csv`` under ``root``.
        ValueError: A bad ``domain_column`` or ``where`` (an unknown column, a value no row
            holds, an empty selection, fewer than two domains left), before any array is read.
        DataError: Listing every bad row, missing/corrupt file, NaN array and shape mismatch.
    """

    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": training_default("lr", 1e-3, "Adam learning rate for small from-scratch encoders"),
        "weight_decay": training_default("weight_decay", 1e-4, "Adam weight decay"),
        "batch_size": training_default("batch_size", 32, "global batch, split evenly over the "
                                       "source domains"),
        "epochs": training_default("epochs", 20, "training epochs"),
        "proj_hidden": training_default("proj_hidden", 256, "projection head hidden width "
                                        "(scaled down from 2048)"),
        "fusion_hidden": training_default("fusion_hidden", 128, "fusion classifier hidden width "
                                          "(scaled down from 512)"),
    }

    def __init__(self, root: str | None = None, modalities: Sequence[str] | None = None,
                 length: int | Mapping[str, int] | None = None, length_policy: str = "resample",
                 normalization: str | Mapping[str, str] | None = None, normalize: bool = True,
                 progress: bool = True, cache: bool = True, cache_dir: str | None = None,
                 sequence_mode: str | None = None, allow_outside_root: bool = False,
                 domain_column: str | None = None,
                 where: str | Mapping[str, Any] | Sequence[str] | None = None) -> None:
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self.where = parse_where(where)
        self.length_policy = _length_policy(length_policy, sequence_mode)
        self.root = _manifest_path(root).parent
        all_rows, header, problems = _read(self.root, domain_column)
        self.domain_column = header.domain_column
        self.ALL_MODALITIES = tuple(header.modalities)
        self.modalities = self.select_modalities(modalities)
        _check_length_names(length, header.modalities)
        raise_problems(problems, str(self.root / MANIFEST_NAME))
        if not all_rows:
            raise DataError(f"{self.root / MANIFEST_NAME} has no samples")
        rows = _selected(all_rows, header, self.where)
        directory = (Path(cache_dir) if cache_dir else default_cache_dir()) / "manifest"
        stacked, self.plans, valid = self._stack(rows, length, directory if cache else None,
                                                 progress)
        if self.where:
            _warn_selection_length(self.plans, length)
        self.stacked = stacked  # {modality: (n, ...) float32}, memory-mapped from the cache
        self.normalize = normalize
        self.normalization = _normalization_modes(normalization, self.plans)
        self.sample_ids = [r.sample_id for r in rows]
        self._splits = [r.split for r in rows] if rows[0].split else None
        self._groups = [r.group for r in rows] if rows[0].group is not None else None
        self.HAS_OFFICIAL_SPLITS = self._splits is not None
        class_names = natural_sorted({r.label for r in all_rows})  # of every selection
        self.set_samples({m: torch.from_numpy(v) for m, v in stacked.items()},
                         torch.tensor(_label_indices(rows, class_names)),
                         [r.domain for r in rows], natural_sorted({r.domain for r in rows}),
                         class_names,
                         lengths={m: torch.tensor(valid[m]) for m, plan in self.plans.items()
                                  if plan.padded})

    def _stack(self, rows: Sequence[ManifestRow], length: int | Mapping[str, int] | None,
               cache_dir: Path | None, progress: bool
               ) -> tuple[dict[str, np.ndarray], dict[str, SequencePlan], dict[str, list[int]]]:
        """Every modality stacked to (n, ...) float32: from the cache, or validated, planned
        and written (to the cache, or in memory without one); one problem list for all."""
        ids = [r.sample_id for r in rows]
        entries = {m: self._cache_entry(cache_dir, rows, m, length) for m in self.modalities}
        stacked, plans, valid = {}, {}, {}
        for m, entry in entries.items():
            found = entry.load() if entry is not None else None
            if found is not None and found[1].get("sample_ids") != ids:
                log.warning("preprocessing cache entry %s lists other samples than %s; "
                            "rebuilding it", entry.path, self.root / MANIFEST_NAME)
            elif found is not None:
                stacked[m], meta = found
                plans[m], valid[m] = _plan_from_dict(meta["plan"]), meta["valid_steps"]
        missing = [m for m in self.modalities if m not in stacked]
        if not missing:
            _check_length_fits(length, plans)
            return stacked, plans, valid
        shapes, good, problems = scan_shapes(self.root, rows, missing, progress,
                                             self.allow_outside_root)
        new_plans, plan_problems = plan_modalities(shapes, good, length, self.length_policy)
        raise_problems(problems + plan_problems, f"the manifest dataset {self.root}")
        _check_length_fits(length, {**plans, **new_plans})  # before anything is stacked
        for m in missing:
            plan = plans[m] = new_plans[m]
            shape = (len(rows), *plan.sample_shape)

            def fill(out: np.ndarray, plan: SequencePlan = plan) -> dict[str, Any]:
                return {"sample_ids": ids, "plan": plan.as_dict(),
                        "valid_steps": fill_modality(self.root, rows, plan, out, progress,
                                                     self.allow_outside_root)}

            if entries[m] is None:
                stacked[m] = np.empty(shape, dtype=np.float32)
                meta = fill(stacked[m])
            else:
                stacked[m], meta = entries[m].build(shape, np.float32, fill)
            valid[m] = meta["valid_steps"]
        return stacked, plans, valid

    def _cache_entry(self, cache_dir: Path | None, rows: Sequence[ManifestRow], modality: str,
                     length: int | Mapping[str, int] | None) -> MappedArrayCache | None:
        """The cache entry of ``modality`` (None without a cache, or when an input file cannot
        be listed: the problem is then reported by the validation that follows)."""
        if cache_dir is None:
            return None
        if any(resolve_in_root(self.root, r.files[modality], self.allow_outside_root)[1]
               for r in rows):  # a verified entry never lets a refused path through
            return None
        paths = [self.root / MANIFEST_NAME, *(self.root / r.files[modality] for r in rows)]
        try:
            files = content_digest(paths, self.root)
        except (OSError, ValueError):  # a missing file or one outside the root
            return None
        key = {"format": CACHE_FORMAT, "modality": modality,
               # the path policy the entry's files were accepted under (absent: the default)
               **({"allow_outside_root": True} if self.allow_outside_root else {}),
               "length_policy": self.length_policy, "length": _length_for(length, modality),
               "files": files, "samples": settings_key({"ids": [r.sample_id for r in rows]})}
        return MappedArrayCache(cache_dir, modality, key)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. for DataLoader workers started by spawn or forkserver) without the
        memory-mapped arrays: their cache files are mapped again on unpickling, so a worker
        shares the page cache instead of receiving a copy."""
        state = self.__dict__.copy()
        mapped = {m: str(a.filename) for m, a in self.stacked.items()
                  if isinstance(a, np.memmap) and a.filename}
        state["stacked"] = {m: a for m, a in self.stacked.items() if m not in mapped}
        state["_raw"] = {m: v for m, v in self._raw.items() if m not in mapped}
        state["_mapped_files"] = mapped
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        mapped = state.pop("_mapped_files", {})
        self.__dict__.update(state)
        for m, path in mapped.items():
            self.stacked[m] = np.load(path, mmap_mode="c", allow_pickle=False)
            self._raw[m] = torch.from_numpy(self.stacked[m])

    def sample_name(self, index: int) -> str:
        return f"sample {one_line(self.sample_ids[index])}"

    def encoder_spec(self, modality: str) -> dict[str, Any]:
        shape = self.input_shape(modality)
        spec = default_encoder(shape)
        if self.plans[modality].padded:
            if len(shape) > 3:  # cnn3d reads (C, T, H, W): the padded first axis is no time
                raise ValueError(f"length_policy=pad on the rank-{len(shape)} arrays of "
                                 f"{modality!r} (shape {shape}): the default encoder cannot "
                                 "mask them; use length_policy=resample or crop")
            spec["mask_padding"] = True  # padded steps are exact zeros; pool over the others
        return spec

    def preprocessing(self) -> dict[str, Any]:
        """``{modality: plan}``: raw length range, length policy and stacked shape of each
        modality (see :class:`~merdg.datasets.sequences.SequencePlan`)."""
        return {m: self.plans[m].as_dict() for m in self.modalities}

    def domain_groups(self, domain: str) -> list[str] | None:
        """The ``group`` column of ``domain``'s rows (None without the column)."""
        if self._groups is None:
            return None
        return [self._groups[i] for i in self.domain_indices(domain).tolist()]

    def split(self, domain: str, role: str, seed: int, holdout_fraction: float) -> Dataset:
        """The manifest's ``split`` column when present, else the seeded (grouped) holdout."""
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
              length: int | Mapping[str, int] | None = None, length_policy: str = "resample",
              progress: bool = True, sequence_mode: str | None = None,
              **options: Any) -> CheckReport:
        """Read and validate every row and array, one at a time, writing nothing (no training,
        no cache); report counts, each modality's raw length range and stacked shape, groups,
        and every problem. Training options (``normalization``, ``normalize``, ``cache``,
        ``cache_dir``) are accepted so that the same options can be reused."""
        unknown = sorted(set(options) - {"normalization", "normalize", "cache", "cache_dir",
                                         "allow_outside_root", "domain_column", "where"})
        if unknown:
            raise TypeError(f"unknown dataset options {unknown} for the manifest dataset")
        allow = check_flag("allow_outside_root", options.get("allow_outside_root", False))
        where = parse_where(options.get("where"))
        policy = _length_policy(length_policy, sequence_mode)
        root_path = _manifest_path(root).parent
        all_rows, header, problems = _read(root_path, options.get("domain_column"))
        mods = _select_modalities(header.modalities, modalities)
        rows = _selected(all_rows, header, where) if all_rows else []
        _check_length_names(length, header.modalities)
        shapes, good, load_problems = scan_shapes(root_path, rows, mods, progress, allow)
        plans, plan_problems = plan_modalities(shapes, good, length, policy)
        _check_length_fits(length, plans)
        problems += load_problems + plan_problems + _holdout_problems(good)
        if options.get("normalize", True) and good and not problems:
            modes = _normalization_modes(options.get("normalization"), plans)
            problems += _overflow_problems(root_path, good, plans, modes, allow)
        labels = natural_sorted({r.label for r in all_rows})
        columns = describe_columns({n: [r.domains[n] for r in good]
                                    for n in header.domain_columns},
                                   [r.label for r in good], header.domain_column,
                                   len(all_rows), where)
        return CheckReport("manifest", _counts(good, labels), problems,
                           _check_notes(root_path, rows, good, plans, labels, columns))


def _holdout_problems(rows: Sequence[ManifestRow]) -> list[str]:
    """With a ``group`` column and no ``split`` column: one problem per domain with a single
    group. Such a domain cannot give a source run both a training and a validation part (the
    holdout keeps every group whole), so every run with it among the sources is refused."""
    if not rows or rows[0].split is not None or rows[0].group is None:
        return []
    groups: dict[str, set[str]] = {}
    for row in rows:
        groups.setdefault(row.domain, set()).add(row.group or "")
    return [f"domain {one_line(d)!r} has one group ({one_line(next(iter(names)))!r}): as a "
            "source it cannot give both a training and a validation part (the holdout keeps "
            "each group whole), so it can only be a target; give it more groups, or add a "
            f"{SPLIT_COLUMN!r} column" for d, names in groups.items() if len(names) < 2]


def _select_modalities(available: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    unknown = sorted(set(requested or []) - set(available))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; the manifest has {list(available)}")
    return sorted(set(requested or available))


def _selected(rows: Sequence[ManifestRow], header: ManifestHeader,
              where: Where) -> list[ManifestRow]:
    """The rows ``where`` selects (all without it), leaving at least two domains.

    Raises:
        ValueError: See :func:`~merdg.datasets.columns.select_rows` and
            :func:`~merdg.datasets.columns.check_enough_domains`.
    """
    if not where:
        return list(rows)
    table = {c: [r.group if c == GROUP_COLUMN else r.domains[c] for r in rows]
             for c in header.filter_columns()}
    kept = [rows[i] for i in select_rows(table, where)]
    check_enough_domains(natural_sorted({r.domain for r in kept}), header.domain_column, where)
    return kept


def _warn_selection_length(plans: Mapping[str, SequencePlan],
                           length: int | Mapping[str, int] | None) -> None:
    """Warn when the length of resampled or cropped sequences comes from the selected rows:
    another selection of the same manifest (the pretraining rows, say) may get another one."""
    for m, plan in plans.items():
        raw = plan.raw_shape[0]
        if (plan.policy in ("resample", "crop") and isinstance(raw, tuple) and raw[0] != raw[1]
                and _length_for(length, m) is None):
            warnings.warn(f"manifest: the {plan.policy}d length of {m!r} ({plan.length} frames) "
                          "comes from the rows selected by where; another selection may get "
                          f"another length: fix it with --dataset-option length={plan.length} "
                          "(or a JSON object per modality)", stacklevel=3)


def _label_indices(rows: Sequence[ManifestRow], names: Sequence[str]) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    return [index[r.label] for r in rows]


def _normalization_modes(option: str | Mapping[str, str] | None,
                         plans: Mapping[str, SequencePlan]) -> dict[str, str]:
    modes = {}
    for m, plan in plans.items():
        mode = option.get(m) if isinstance(option, Mapping) else option
        modes[m] = mode or ("channel" if len(plan.sample_shape) <= 2 else "global")
        if modes[m] not in NORMALIZATION_MODES:
            raise ValueError(f"normalization for {m!r} must be one of {NORMALIZATION_MODES}, "
                             f"got {modes[m]!r}")
    return modes


def _counts(rows: Sequence[ManifestRow], labels: Sequence[str] | None = None
            ) -> dict[str, dict[str, int]]:
    """``{domain: {class: samples}}``; the classes of ``rows`` unless ``labels`` are given."""
    per = Counter((r.domain, r.label) for r in rows)
    labels = natural_sorted({r.label for r in rows}) if labels is None else labels
    return {d: {c: per[(d, c)] for c in labels}
            for d in natural_sorted({r.domain for r in rows})}


def _check_notes(root: Path, rows: Sequence[ManifestRow], good: Sequence[ManifestRow],
                 plans: Mapping[str, SequencePlan | None], labels: Sequence[str],
                 columns: Sequence[str]) -> list[str]:
    """``data check`` notes; ``rows`` are the usable rows a run reads, ``labels`` the classes of
    the whole manifest, ``columns`` the lines of the domain columns."""
    notes = [f"root: {root}", f"rows: {len(rows)} usable, {len(good)} with every file readable",
             *columns, "modalities:"]
    for m, plan in plans.items():
        notes.append(f"  {plan.describe()}" if plan is not None
                     else f"  {m}: shapes do not stack (see problems)")
    domains = natural_sorted({r.domain for r in good})
    if good and good[0].split:
        per = Counter((r.domain, r.split) for r in good)
        notes.append("split rows per domain: " + "; ".join(
            f"{d}: " + ", ".join(f"{s} {per[(d, s)]}" for s in ROLES) for d in domains))
    notes += _group_notes(good, domains)
    for d, classes in _counts(good, labels).items():
        absent = [c for c, n in classes.items() if n == 0]
        if absent:
            notes.append(f"warning: domain {d!r} has no samples of classes {absent}")
    return notes


def _group_notes(good: Sequence[ManifestRow], domains: Sequence[str]) -> list[str]:
    """Groups per domain, groups that straddle splits, or the windowed-ids warning."""
    if not good:
        return []
    if good[0].group is None:
        notes = [f"groups: no {GROUP_COLUMN!r} column, every sample is its own group"]
        warning = None if good[0].split else windows_warning([r.sample_id for r in good])
        return notes + ([warning] if warning else [])
    row_domains, groups = [r.domain for r in good], [r.group or "" for r in good]
    notes = [describe_groups(group_summary(row_domains, groups), domains)]
    if good[0].split:
        for d, leaked in split_leaks(row_domains, groups, [r.split or "" for r in good]).items():
            notes.append(f"warning: domain {d!r}: {len(leaked)} group(s) have rows in more than "
                         f"one split (e.g. {leaked[:3]}); validation is then not independent of "
                         "training")
    return notes


def _overflow_problems(root: Path, rows: Sequence[ManifestRow],
                       plans: Mapping[str, SequencePlan], modes: Mapping[str, str],
                       allow_outside_root: bool = False) -> list[str]:
    """One problem per sample whose values overflow float32 once standardized with the
    statistics of the other domains (what a run targeting its domain, or another, computes).

    One streaming pass per modality: each domain's moments (count, sum, sum of squares, over
    the valid steps, in float64) and each sample's extremes; a sample overflows a target's
    standardization when ``max |x - mean| / std`` exceeds the float32 range.
    """
    domains = [r.domain for r in rows]
    bad: dict[tuple[int, str], str] = {}
    for m, plan in plans.items():
        if modes[m] == "none":
            continue
        moments: dict[str, np.ndarray] = {}  # domain -> (3, channels): n, sum, sum of squares
        lows, highs = [], []
        for row in rows:
            array = load_array(root, row, m, allow_outside_root)
            x = plan.fit(array).astype(np.float64)
            if plan.padded:
                x = x[: plan.valid_steps(array.shape[0])]
            v = x.reshape(-1, x.shape[-1]) if modes[m] == "channel" else x.reshape(-1, 1)
            acc = moments.setdefault(row.domain, np.zeros((3, v.shape[1])))
            acc += np.stack([np.full(v.shape[1], len(v)), v.sum(0), (v * v).sum(0)])
            lows.append(v.min(0))
            highs.append(v.max(0))
        low, high = np.stack(lows), np.stack(highs)  # (n, channels)
        for target in natural_sorted(set(domains)):
            sources = [acc for d, acc in moments.items() if d != target]
            if not sources:
                continue
            n, total, squares = np.sum(sources, axis=0)
            mean = total / n
            std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
            std = np.where(std < 1e-6, 1.0, std)  # as the standardization itself
            reach = np.maximum(np.abs(high - mean), np.abs(low - mean)) / std
            for i in np.nonzero((reach > FLOAT32_MAX).any(1))[0].tolist():
                bad.setdefault((i, m), target)
    return [f"sample {one_line(rows[i].sample_id)} ({m}): its values overflow float32 once "
            f"standardized with the statistics of the domains other than {target!r}; rescale them"
            for (i, m), target in sorted(bad.items())]
