"""HUST motor-fault diagnosis as MMDG-Bench runs it: vibration + acoustic, four working
conditions as domains, six health states (lihongzhao99/MMDG_Benchmark, ``HUSTmotor/``; the
benchmark: arXiv 2605.06643).

Reads either form of the release (``docs/mmdg-bench.md``):

- the 24 text files ``{STATE}_{WC}.txt`` (STATE in ``H, BF, BOW, BROKEN, MISAL, UNBAL``, the
  classes in that order; WC in ``5HZ, 10HZ, 20HZ, 30HZ``, the domains ``D1`` .. ``D4``): header
  lines first, then rows of 5 whitespace-separated numbers, column 0 unused, columns 1-3 the
  three vibration axes, column 4 the acoustic signal (``parse_txt_file`` in
  ``HUSTmotor/utils/HUST_preprocess.py``: data start at the first line that is not a header
  line and splits into 5 fields; from there every line of exactly 5 numbers is kept, others are
  skipped, as here);
- or the two files its preprocessing writes, ``Motor_Vib.mat`` and ``Motor_Aud.mat``, with
  keys ``load{d}_train`` (window x 6 * 800) and ``load{d}_test`` (window x 6 * 200), one
  window per column, class-major (read with ``scipy.io.loadmat``).

From the text files the windows are cut as the benchmark's preprocessing does
(``random_train_test_split_samples``): vibration is the per-step Euclidean norm of the three
axes; for each (condition, class), in the order 5HZ .. 30HZ then H .. UNBAL, one
``numpy.random.default_rng(42)`` draws 1000 distinct window starts (``choice`` without
replacement, then ``shuffle``), both modalities cut at the same starts; the first 800 are the
training windows and the last 200 the test windows. Distinct starts still overlap, also across
training and test windows; ``windows="disjoint"`` cuts non-overlapping windows instead
(consecutive ones, shuffled by the same generator, the first 4/5 for training), so no two
windows share a sample. Every window is scaled to [0, 1] on its own, ``(x - min) / (max - min +
1e-8)`` (``HUSTmotor/utils/data_loader_1d.py``), and is a (window, 1) sequence.

Protocol (``train_HUST_*.py``): 10,000 optimizer steps with an evaluation every 200 (hparams
``steps``, ``eval_every``); a source domain's training windows are split per class into
``val_per_class`` (200) validation windows and the rest (600) for training, by a
``numpy.random.RandomState(split_seed)`` (8) that shuffles each class's windows in turn; the
target is its 1200 test windows. The benchmark's generator runs on across the source domains of
a multi-source run, so a domain's split depends on its place in the source list; here every
domain is split as the benchmark splits it as a single (or first) source, the same in every
task. ``--holdout-fraction`` and ``--split-seed`` do not apply.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from merdg.datasets.arrays import ArrayDomainDataset
from merdg.datasets.base import DATASETS, ROLES, CheckReport
from merdg.datasets.preprocessing import DataError, raise_problems
from merdg.datasets.untrusted import check_flag, outside_root
from merdg.hparams import HParam, optional_default, training_default

__all__ = ["CONDITIONS", "DOMAINS", "HUSTMotor", "HUSTWindows", "MAT_FILES", "STATES",
           "benchmark_starts", "disjoint_starts", "min_max_scale", "parse_txt", "txt_name"]

STATES = ("H", "BF", "BOW", "BROKEN", "MISAL", "UNBAL")
CONDITIONS = ("5HZ", "10HZ", "20HZ", "30HZ")
DOMAINS = ("D1", "D2", "D3", "D4")
MAT_FILES = {"vibration": "Motor_Vib.mat", "acoustic": "Motor_Aud.mat"}
HEADER_WORDS = ("Title", "Parameters", "DAQ", "Frequency", "Spectral", "Number", "Total",
                "Channels", "Legend", "Tacho", "On/Off", "Volts", "Time")
"""The header lines ``parse_txt_file`` skips begin with these words."""
WINDOWINGS = ("benchmark", "disjoint")
SOURCES = ("auto", "txt", "mat")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def txt_name(state: str, condition: str) -> str:
    """The text file of one (health state, working condition)."""
    return f"{state}_{condition}.txt"


def _floats(fields: Sequence[str]) -> list[float] | None:
    try:
        return [float(f) for f in fields]
    except ValueError:
        return None


def parse_txt(path: Path) -> tuple[np.ndarray, int]:
    """The data rows of one text file, (T, 5) float64, and how many lines after the data start
    were skipped (not 5 numbers), as ``parse_txt_file`` reads them.

    Raises:
        DataError: Unreadable, no data row, or non-finite values (the file and line named).
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from err
    start = next((i for i, line in enumerate(lines)
                  if line.strip() and not line.startswith(HEADER_WORDS)
                  and len(line.split()) == 5 and _floats(line.split()[:1]) is not None), None)
    if start is None:
        raise DataError(f"{path}: no data row (a line of 5 numbers after the header)")
    rows, skipped = [], 0
    for i, line in enumerate(lines[start:], start + 1):
        fields = line.split()
        if not fields:
            continue
        values = _floats(fields) if len(fields) == 5 else None
        if values is None:
            skipped += 1
            continue
        if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values):
            raise DataError(f"{path} line {i}: non-finite or out-of-range value {line.strip()!r}")
        rows.append(values)
    return np.asarray(rows, dtype=np.float64), skipped


def benchmark_starts(rng: np.random.Generator, length: int, window: int, train: int,
                     test: int) -> tuple[np.ndarray, np.ndarray]:
    """(training starts, test starts): ``train + test`` distinct starts drawn as
    ``random_train_test_split_samples`` draws them (``rng.choice`` without replacement, then
    ``rng.shuffle``), the first ``train`` for training."""
    starts = rng.choice(length - window + 1, size=train + test, replace=False)
    rng.shuffle(starts)
    return starts[:train], starts[train:]


def disjoint_starts(rng: np.random.Generator, length: int, window: int, train: int,
                    test: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts of non-overlapping windows: ``train + test`` consecutive windows from the
    recording's start (0, window, 2 window, ...), shuffled by ``rng``, the first ``train`` for
    training."""
    starts = np.arange(train + test) * window
    rng.shuffle(starts)
    return starts[:train], starts[train:]


def min_max_scale(windows: np.ndarray) -> np.ndarray:
    """Each row of (n, window) scaled to [0, 1] on its own: ``(x - min) / (max - min + 1e-8)``
    (the benchmark's ``zscore``), float32."""
    low = windows.min(axis=1, keepdims=True)
    high = windows.max(axis=1, keepdims=True)
    return ((windows - low) / (high - low + 1e-8)).astype(np.float32)


@dataclass(frozen=True)
class HUSTWindows:
    """How windows are cut from the text files (the benchmark's defaults).

    Attributes:
        window: Samples per window (1024).
        train_windows / test_windows: Windows per (condition, class) (800 / 200).
        windows: ``"benchmark"`` (distinct random starts, overlapping) or ``"disjoint"``.
        seed: Seed of the starts' generator (42).
    """

    window: int = 1024
    train_windows: int = 800
    test_windows: int = 200
    windows: str = "benchmark"
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("window", "train_windows", "test_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"dataset option {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"dataset option seed must be an integer >= 0, got {self.seed!r}")
        if self.windows not in WINDOWINGS:
            raise ValueError(f"dataset option windows must be one of {list(WINDOWINGS)}, got "
                             f"{self.windows!r}")

    @property
    def is_benchmark(self) -> bool:
        """The windows of the released ``.mat`` files."""
        return self == HUSTWindows()

    def needed(self) -> int:
        """Data rows a recording needs."""
        count = self.train_windows + self.test_windows
        return (count * self.window if self.windows == "disjoint"
                else self.window + count - 1)

    def check_length(self, rows: int, where: str) -> None:
        """Raises DataError when a recording of ``rows`` rows is too short (``where`` named)."""
        if rows < self.needed():
            raise DataError(f"{where}: {rows} data rows, fewer than the {self.needed()} "
                            f"that {self.train_windows} + {self.test_windows} "
                            f"{self.windows} windows of {self.window} need")

    def cut(self, rng: np.random.Generator, rows: np.ndarray, where: str
            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{modality: (training windows, test windows)}`` of one recording, each (n, window)
        float64, with the starts drawn from ``rng`` (its state moves on, as the benchmark's).

        Raises:
            DataError: Too few rows (``where`` named).
        """
        self.check_length(len(rows), where)
        draw = benchmark_starts if self.windows == "benchmark" else disjoint_starts
        train, test = draw(rng, len(rows), self.window, self.train_windows, self.test_windows)
        signals = {"vibration": np.linalg.norm(rows[:, 1:4], axis=1), "acoustic": rows[:, 4]}
        offsets = np.arange(self.window)
        return {m: (s[train[:, None] + offsets], s[test[:, None] + offsets])
                for m, s in signals.items()}


def _in_root(root: Path, path: Path, allow_outside_root: bool) -> str | None:
    if allow_outside_root:
        return None
    reason = outside_root(root, path)
    return None if reason is None else f"{path}: {reason} (dataset option " \
        "allow_outside_root=true reads it anyway)"


def find_hust_root(root: str | os.PathLike | None) -> Path:
    """The folder with the release: ``root`` or ``root/HUSTmotor/data`` or ``root/hust``.

    Raises:
        FileNotFoundError: No candidate holds a ``.txt`` or one of the ``.mat`` files.
    """
    if not root:
        raise FileNotFoundError("HUST: pass --data-root DIR (or set $MERDG_DATA_ROOT), where DIR "
                                "holds the 24 {STATE}_{WC}.txt files or Motor_Vib.mat and "
                                "Motor_Aud.mat")
    candidates = [Path(root), Path(root) / "HUSTmotor" / "data", Path(root) / "hust"]
    for c in candidates:
        if any((c / f).is_file() for f in MAT_FILES.values()) or any(
                (c / txt_name(s, w)).is_file() for s in STATES for w in CONDITIONS):
            return c
    raise FileNotFoundError(f"HUST release not found (tried {', '.join(map(str, candidates))}): "
                            "a folder with the 24 {STATE}_{WC}.txt files (e.g. H_5HZ.txt) or "
                            "Motor_Vib.mat and Motor_Aud.mat")


def _choose_source(root: Path, source: str, windows: HUSTWindows) -> str:
    """``"txt"`` or ``"mat"``: ``auto`` reads the ``.mat`` files when both are there and the
    windows are the benchmark's, else the text files."""
    if source not in SOURCES:
        raise ValueError(f"dataset option source must be one of {list(SOURCES)}, got "
                         f"{source!r}")
    have_mat = all((root / f).is_file() for f in MAT_FILES.values())
    if source == "mat" and not windows.is_benchmark:
        raise ValueError("the .mat files hold the benchmark's windows; the window options "
                         "(window, train_windows, test_windows, windows, seed) need the text "
                         "files (dataset option source=txt)")
    if source == "auto":
        return "mat" if have_mat and windows.is_benchmark else "txt"
    return source


def read_txt_release(root: Path, windows: HUSTWindows, allow_outside_root: bool = False
                     ) -> tuple[dict[tuple[str, str], dict[str, tuple]], list[str], list[str]]:
    """Every recording's windows from the text files: ``{(domain, state): {modality: (train,
    test)}}``, the problems (one per bad file) and notes (skipped lines).

    The generator walks the files in the benchmark's order (conditions, then states); a file
    that cannot be read is reported and the rest still read, but windows are only cut while
    every file so far was read, so that the starts are the benchmark's.
    """
    rng = np.random.default_rng(windows.seed)
    out, problems, notes = {}, [], []
    for domain, condition in zip(DOMAINS, CONDITIONS):
        for state in STATES:
            path = root / txt_name(state, condition)
            try:
                if not path.is_file():
                    raise DataError(f"{path}: file missing (the release has 24 text files, "
                                    "{STATE}_{WC}.txt)")
                problem = _in_root(root, path, allow_outside_root)
                if problem:
                    raise DataError(problem)
                rows, skipped = parse_txt(path)
                if skipped:
                    notes.append(f"{path.name}: {skipped} line(s) after the data start skipped "
                                 "(not 5 numbers), as the benchmark's parser does")
                windows.check_length(len(rows), str(path))
                if not problems:  # the starts follow the benchmark's only while all were read
                    out[(domain, state)] = windows.cut(rng, rows, str(path))
            except DataError as err:
                problems.append(str(err))
    return out, problems, notes


def read_mat_release(root: Path, allow_outside_root: bool = False
                     ) -> tuple[dict[tuple[str, str], dict[str, tuple]], list[str]]:
    """Every recording's windows from ``Motor_Vib.mat`` and ``Motor_Aud.mat``, and the
    problems (every missing key, bad shape or non-finite array named)."""
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise RuntimeError("reading Motor_Vib.mat / Motor_Aud.mat needs scipy: pip install "
                           "'merdg[utd]' (or read the text files: dataset option "
                           "source=txt)") from err
    arrays: dict[str, dict[str, np.ndarray]] = {}
    problems = []
    for modality, name in MAT_FILES.items():
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: file missing")
            continue
        problem = _in_root(root, path, allow_outside_root)
        if problem:
            problems.append(problem)
            continue
        try:
            content = loadmat(path)
        except Exception as err:  # scipy raises many types on damaged files; name the file
            problems.append(f"{path}: unreadable, truncated or corrupt ({err!r})")
            continue
        arrays[modality] = content
        for d in range(1, len(DOMAINS) + 1):
            for split in ("train", "test"):
                key = f"load{d}_{split}"
                if key not in content:
                    problems.append(f"{path}: no key {key!r} (found "
                                    f"{sorted(k for k in content if not k.startswith('__'))})")
                    continue
                value = np.asarray(content[key])
                if value.ndim != 2 or value.shape[1] % len(STATES) or value.shape[1] == 0 or \
                        not np.issubdtype(value.dtype, np.number):
                    problems.append(f"{path}: {key} has shape {value.shape} ({value.dtype}); "
                                    f"expected (window, {len(STATES)} x windows per class) "
                                    "numbers, one window per column")
                elif not np.isfinite(value).all():
                    problems.append(f"{path}: {key} holds {int((~np.isfinite(value)).sum())} "
                                    "NaN/Inf values")
    if problems:
        return {}, problems
    shapes = {(m, k): arrays[m][k].shape for m in arrays for k in arrays[m]
              if k.startswith("load")}
    for key in sorted({k for _, k in shapes}):
        sizes = {m: shapes[(m, key)] for m in MAT_FILES if (m, key) in shapes}
        if len(set(sizes.values())) > 1:
            problems.append(f"{key}: shapes differ between the files ("
                            + ", ".join(f"{MAT_FILES[m]} {s}" for m, s in sizes.items()) + ")")
    windows = {s[0] for s in shapes.values()}
    if len(windows) > 1:
        problems.append(f"windows of different lengths {sorted(windows)} across the keys")
    if problems:
        return {}, problems
    out = {}
    for d, domain in enumerate(DOMAINS, 1):
        per_class = {split: arrays["vibration"][f"load{d}_{split}"].shape[1] // len(STATES)
                     for split in ("train", "test")}
        for c, state in enumerate(STATES):
            out[(domain, state)] = {
                m: tuple(np.asarray(arrays[m][f"load{d}_{split}"], np.float64)[
                    :, c * per_class[split]:(c + 1) * per_class[split]].T
                    for split in ("train", "test")) for m in MAT_FILES}
    return out, []


@DATASETS.register("hust")
class HUSTMotor(ArrayDomainDataset):
    """HUST motor-fault diagnosis, MMDG-Bench's protocol (module docstring).

    Args:
        root: The folder with the text files or the ``.mat`` files (or a parent holding
            ``HUSTmotor/data`` or ``hust``).
        modalities: Subset of ``acoustic``, ``vibration`` (default: both).
        source: ``"auto"`` (the ``.mat`` files when both are there and the windows are the
            benchmark's, else the text files), ``"txt"`` or ``"mat"``.
        window / train_windows / test_windows / windows / seed: How the text files are cut
            (:class:`HUSTWindows`; the benchmark's 1024 / 800 / 200 / ``"benchmark"`` / 42).
        val_per_class: Validation windows per class of a source domain (200; at most half of
            its training windows, as the benchmark's ``min(val_per_class, n // 2)``).
        split_seed: Seed of the per-class validation split (MMDG-Bench ``--split_seed`` 8).
        allow_outside_root: Read files that resolve outside ``root`` (symlinks).
        normalize: Accepted for the common interface; the windows are used as scaled (the
            benchmark standardizes nothing more).

    Raises:
        FileNotFoundError: No release under ``root``.
        ValueError: A bad option (named), before any file is read.
        DataError: Missing or unreadable files, bad keys or shapes, too short recordings (all
            of them listed in one error).
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = ("acoustic", "vibration")
    HAS_OFFICIAL_SPLITS: ClassVar[bool] = True
    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": training_default("lr", 1e-3, "Adam learning rate (MMDG-Bench HUST --lr 1e-3)"),
        "weight_decay": training_default("weight_decay", 5e-4, "Adam weight decay (MMDG-Bench "
                                         "HUST --l2_decay 5e-4)"),
        "batch_size": training_default("batch_size", 128, "global batch (MMDG-Bench HUST "
                                       "--batch_size 128)"),
        "fusion_hidden": training_default("fusion_hidden", 128, "width of the heads that use it "
                                          "(MBCD's unimodal heads, JAT's and GMP's projections: "
                                          "MMDG-Bench HUST 128); the fusion itself is linear"),
        "proj_hidden": training_default("proj_hidden", 256, "projection head hidden width (the "
                                        "heads only serve MER-DG and add-on terms; scaled down "
                                        "from 2048)"),
        "fusion": optional_default("fusion", "linear", "fusion head: MMDG-Bench HUST's "
                                   "concatenation -> Linear(256, 6)"),
        "steps": optional_default("steps", 10000, "optimizer steps (MMDG-Bench HUST --iteration "
                                  "10000)"),
        "eval_every": optional_default("eval_every", 200, "steps between evaluations "
                                       "(MMDG-Bench HUST: every log_interval x 20 = 200 "
                                       "iterations)"),
        "lr_schedule": optional_default("lr_schedule", "inverse", "MMDG-Bench HUST: lr / (1 + "
                                        "10 (i - 1) / I) ** 0.75 at iteration i of I, the step "
                                        "budget"),
    }
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = {
        m: {"name": "cnn1d", "channels": [8, 16, 32, 32], "kernels": [32, 8, 3, 3], "pool": 4}
        for m in ("acoustic", "vibration")}
    normalization: ClassVar[dict[str, str]] = {"acoustic": "none", "vibration": "none"}

    def __init__(self, root: str | None = None, modalities: Sequence[str] | None = None,
                 source: str = "auto", window: int = 1024, train_windows: int = 800,
                 test_windows: int = 200, windows: str = "benchmark", seed: int = 42,
                 val_per_class: int = 200, split_seed: int = 8,
                 allow_outside_root: bool = False, normalize: bool = True) -> None:
        self.settings = HUSTWindows(window, train_windows, test_windows, windows, seed)
        self.val_per_class = _count("val_per_class", val_per_class, 1)
        self.split_seed = _count("split_seed", split_seed, 0)
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self.normalize = check_flag("normalize", normalize)
        self.modalities = self.select_modalities(modalities)
        self.root = find_hust_root(root)
        self.source = _choose_source(self.root, source, self.settings)
        recordings, problems = self._read()
        raise_problems(problems, f"the HUST release in {self.root}")
        self._install(recordings)

    def _read(self) -> tuple[dict, list[str]]:
        if self.source == "mat":
            return read_mat_release(self.root, self.allow_outside_root)
        recordings, problems, _ = read_txt_release(self.root, self.settings,
                                                   self.allow_outside_root)
        return recordings, problems

    def _install(self, recordings: dict[tuple[str, str], dict[str, tuple]]) -> None:
        """Stack every window: per modality (n, window, 1) float32; the training windows of a
        domain first (class-major), then its test windows."""
        x: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        labels, domains, roles = [], [], []
        for domain in DOMAINS:
            for split, index in (("train", 0), ("test", 1)):
                for c, state in enumerate(STATES):
                    parts = recordings[(domain, state)]
                    n = len(parts[self.modalities[0]][index])
                    for m in self.modalities:
                        x[m].append(min_max_scale(parts[m][index]))
                    labels += [c] * n
                    domains += [domain] * n
                    roles += [split] * n
        stacked = {m: torch.from_numpy(np.concatenate(v))[..., None] for m, v in x.items()}
        self._role = np.asarray(roles)
        self.set_samples(stacked, torch.tensor(labels), domains, DOMAINS, STATES)

    def _positions(self, domain: str, split: str) -> np.ndarray:
        idx = self.domain_indices(domain).numpy()
        return idx[self._role[idx] == split]

    def split(self, domain: str, role: str, seed: int, holdout_fraction: float) -> Dataset:
        """``"test"``: the domain's test windows; ``"train"`` / ``"val"``: its training windows
        split per class by ``RandomState(split_seed)`` (module docstring; ``seed`` and
        ``holdout_fraction`` do not apply)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if role == "test":
            chosen = self._positions(domain, "test")
        else:
            train = self._positions(domain, "train")
            labels = self._y[torch.from_numpy(train)].numpy()
            rng = np.random.RandomState(self.split_seed)
            parts: dict[str, list[int]] = {"train": [], "val": []}
            for c in range(self.num_classes):
                idx = train[labels == c].copy()
                rng.shuffle(idx)
                v = min(self.val_per_class, len(idx) // 2)
                parts["val"] += idx[:v].tolist()
                parts["train"] += idx[v:].tolist()
            chosen = np.asarray(sorted(parts[role]), dtype=np.int64)
        return self.samples_at(torch.from_numpy(chosen))

    def preprocessing(self) -> dict[str, Any]:
        return {"source": self.source, "windows": self.settings.windows,
                "window": self.settings.window, "train_windows": self.settings.train_windows,
                "test_windows": self.settings.test_windows, "val_per_class": self.val_per_class,
                "split_seed": self.split_seed}

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              **options: Any) -> CheckReport:
        """Read every file (writing nothing): counts per domain and class, and every problem,
        one per bad file, key or shape."""
        settings = HUSTWindows(**{k: options.pop(k) for k in
                                  ("window", "train_windows", "test_windows", "windows", "seed")
                                  if k in options})
        allow = check_flag("allow_outside_root", options.pop("allow_outside_root", False))
        source_option = options.pop("source", "auto")
        _count("val_per_class", options.pop("val_per_class", 200), 1)
        _count("split_seed", options.pop("split_seed", 8), 0)
        check_flag("normalize", options.pop("normalize", True))
        if options:
            raise ValueError(f"dataset option(s) {sorted(options)} are not HUST's")
        path = find_hust_root(root)
        source = _choose_source(path, source_option, settings)
        notes = [f"root: {path}", f"read from: {source} files"]
        if source == "mat":
            recordings, problems = read_mat_release(path, allow)
        else:
            recordings, problems, skipped = read_txt_release(path, settings, allow)
            notes += skipped
        counts = {f"{d}/{split}": {s: len(recordings[(d, s)]["vibration"][i])
                                   if (d, s) in recordings else 0 for s in STATES}
                  for d in DOMAINS for i, split in enumerate(("train", "test"))}
        if recordings:
            first = next(iter(recordings.values()))["vibration"][0]
            notes.append(f"modalities: acoustic, vibration; sample shape ({first.shape[1]}, 1)")
        return CheckReport("hust", counts, problems, notes, row_kind="domain/split parts")


def _count(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"dataset option {name} must be an integer >= {low}, got {value!r}")
    return value
