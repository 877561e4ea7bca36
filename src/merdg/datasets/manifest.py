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
- every other column is a modality; its value is the path, relative to DIR, of a ``.npy`` array.

The arrays of one modality share a shape, or share every axis but the first (time): such
sequences, e.g. (T, C) with varying T, are brought to ``length`` frames (default: the longest)
by ``sequence_mode`` "resample" (linear) or "pad" (zero-pad or crop at the end). Every array is
loaded into memory. See ``docs/manifest.md``.
"""

from __future__ import annotations

import csv
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
    fit_time_axis,
    raise_problems,
)
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
    if all(v.lstrip("-").isdigit() for v in values):
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
    name = cells.get("sample_id") or f"<line {line}>"
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
    """Parse ``DIR/manifest.csv``.

    Returns:
        (usable rows, modality names in column order, one problem per unusable row).

    Raises:
        FileNotFoundError: No manifest.
        DataError: Required columns are missing, or there is no modality column.
    """
    path = _manifest_path(root)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        modalities = [c for c in columns if c and c not in (*REQUIRED_COLUMNS, SPLIT_COLUMN)]
        if missing or not modalities:
            raise DataError(f"{path}: columns {columns} lack {missing or 'a modality column'}; "
                            f"need {list(REQUIRED_COLUMNS)}, optional {SPLIT_COLUMN!r}, then one "
                            "column per modality")
        rows, problems, seen = [], [], set()
        for line, raw in enumerate(reader, start=2):
            row, row_problems = _parse_row(line, raw, modalities, SPLIT_COLUMN in columns, seen)
            problems += row_problems
            if row is not None:
                rows.append(row)
    return rows, modalities, problems


def load_array(root: Path, row: ManifestRow, modality: str) -> np.ndarray:
    """One sample's ``.npy`` array as float32.

    Raises:
        DataError: Missing, unreadable (truncated, corrupt, pickled), non-numeric, 0-d, or
            non-finite; the message names the file and the sample.
    """
    path = root / row.files[modality]
    where = f"sample {row.sample_id} ({modality}): {path}"
    if not path.is_file():
        raise DataError(f"{where}: file missing")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises several types on damaged files; name the file
        raise DataError(f"{where}: unreadable, truncated or corrupt ({err!r})") from err
    if not isinstance(array, np.ndarray):
        raise DataError(f"{where}: expected one .npy array, got {type(array).__name__}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or array.ndim == 0:
        raise DataError(f"{where}: expected a numeric array with >= 1 axis, got dtype "
                        f"{array.dtype} and shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{where}: {int((~np.isfinite(array)).sum())} NaN/Inf values")
    return array.astype(np.float32)


def _stack_key(shape: tuple[int, ...]) -> tuple[int, ...]:
    """What must agree between samples: every axis but the first (time) of a sequence."""
    return shape[1:] if len(shape) >= 2 else shape


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
        return None, [f"sample {i} ({modality}): shape {a.shape} does not stack with the "
                      f"modality's other arrays (shape (T, *{common}) or {common}); arrays must "
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
                 progress: bool = True) -> tuple[dict[str, np.ndarray], list[ManifestRow],
                                                 list[str]]:
    """Stacked arrays of the rows whose every file loads, those rows, and every problem."""
    arrays: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    good, problems = [], []
    for row in tqdm(rows, desc="manifest: loading", disable=not progress):
        loaded = {}
        for m in modalities:
            try:
                loaded[m] = load_array(root, row, m)
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
                       '--encoders \'{"<modality>": {"name": ...}}\'')
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
                 progress: bool = True) -> None:
        self.root = _manifest_path(root).parent
        rows, all_modalities, problems = read_manifest(self.root)
        self.ALL_MODALITIES = tuple(all_modalities)
        self.modalities = self.select_modalities(modalities)
        raise_problems(problems, str(self.root / MANIFEST_NAME))
        stacked, rows, problems = load_samples(self.root, rows, self.modalities, length,
                                               sequence_mode, progress)
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
              progress: bool = True, **_: Any) -> CheckReport:
        """Load every row and array (nothing is trained); report counts and every problem."""
        root_path = _manifest_path(root).parent
        rows, all_modalities, problems = read_manifest(root_path)
        mods = _select_modalities(all_modalities, modalities)
        stacked, good, load_problems = load_samples(root_path, rows, mods, length,
                                                    sequence_mode, progress)
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
