"""Shared machinery of the on-disk video datasets (EPIC-Kitchens, HAC).

- :class:`ClipOptions`: the clip, crop and audio parameters of the paper's pipeline (options
  of the dataset, so tests can shrink them);
- :class:`ClipDataset`: a :class:`~merdg.datasets.base.DomainDataset` whose samples are
  records read from disk per modality; it validates the files a run needs before training and
  either stops with the list of problems or, with ``on_error="skip"``, drops the bad samples
  and counts them (:meth:`ClipDataset.data_issues`, written to the run records);
- :class:`ClipPart`: the samples of one (domain, role), read lazily. A file that fails to
  decode during training stops the run with the file's name, or (``on_error="skip"``) is
  replaced by the next sample of the same part and logged.

A subclass names and parses its split files (:meth:`ClipDataset.index_path`,
:meth:`ClipDataset.read_index`; :meth:`ClipDataset.load_records` reads them all), reads one
sample (:meth:`ClipDataset.read_sample`), lists a record's files
(:meth:`ClipDataset.record_files`) and maps roles to official splits
(:meth:`ClipDataset.role_records`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.audio import AUDIO_SAMPLES, AudioReadError, spectrogram_shape
from merdg.datasets.base import ROLES, CheckReport, DomainDataset
from merdg.datasets.video import FLOW_MEAN_STD, RGB_MEAN_STD, ClipTransform, FrameReadError

__all__ = ["ClipDataset", "ClipOptions", "ClipPart", "ClipRecord", "SampleReadError"]

log = logging.getLogger("merdg")

MODALITIES = ("audio", "flow", "video")
OFFICIAL_ORDER = ("video", "audio", "flow")  # concatenation order of train_mer_dg.py
MAX_SUBSTITUTES = 20  # consecutive unreadable samples tolerated with on_error="skip"

# The paper's encoders (arXiv 2605.01967, section 5; docs/paper-setting.md): BatchNorm of the
# frozen video / flow trunks in train mode and of the audio trunk in eval mode, as the official
# code runs them. The paper's training hparams are merdg's training defaults
# (merdg.hparams.TRAINING_HPARAMS), so these datasets declare none of their own.
PAPER_ENCODERS: dict[str, dict[str, Any]] = {
    "video": {"name": "slowfast", "trunk_bn": "train"},
    "flow": {"name": "slowonly", "trunk_bn": "train"},
    "audio": {"name": "vggsound_resnet", "trunk_bn": "eval"},
}


class SampleReadError(RuntimeError):
    """A sample's file is missing or unreadable; the message names the sample and the file."""


@dataclass(frozen=True)
class ClipOptions:
    """Clip parameters (defaults: the paper's configs).

    Attributes:
        rgb_clip_len / rgb_interval: RGB frames per clip and their spacing (32, 2).
        flow_clip_len / flow_interval: Flow frames per clip and their spacing (8, 4).
        short_side: Short side after the first resize (256).
        crop_size: Training crop (224, RGB and flow).
        rgb_eval_crop / flow_eval_crop: Evaluation center crops (224 RGB, 256 flow).
    """

    rgb_clip_len: int = 32
    rgb_interval: int = 2
    flow_clip_len: int = 8
    flow_interval: int = 4
    short_side: int = 256
    crop_size: int = 224
    rgb_eval_crop: int = 224
    flow_eval_crop: int = 256

    def transform(self, modality: str, train: bool) -> ClipTransform:
        mean, std = FLOW_MEAN_STD if modality == "flow" else RGB_MEAN_STD
        eval_crop = self.flow_eval_crop if modality == "flow" else self.rgb_eval_crop
        return ClipTransform(train=train, short_side=self.short_side, crop_size=self.crop_size,
                             eval_crop_size=eval_crop, mean=mean, std=std,
                             flow=modality == "flow")

    def input_shape(self, modality: str) -> tuple[int, ...]:
        """Training-sample shape; evaluation flow clips are ``flow_eval_crop`` wide instead."""
        if modality == "video":
            return (3, self.rgb_clip_len, self.crop_size, self.crop_size)
        if modality == "flow":
            return (2, self.flow_clip_len, self.crop_size, self.crop_size)
        if modality == "audio":
            return (1, *spectrogram_shape(AUDIO_SAMPLES))
        raise KeyError(f"unknown modality {modality!r}")


@dataclass(frozen=True)
class ClipRecord:
    """One labelled sample: ``uid`` names it in messages; ``info`` holds dataset fields."""

    uid: str
    domain: str
    split: str
    label: int
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class SkipLog:
    """Append-only log of samples skipped at read time; shared by DataLoader workers through
    a file (one line per skip), so the main process can count them."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="merdg-skipped-", suffix=".log")
        os.close(fd)
        self._finalizer = weakref.finalize(self, _remove_file, self.path)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}  # workers append to the same file; only the owner deletes it

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]

    def record(self, record: ClipRecord, error: Exception) -> None:
        line = f"{record.uid}\t{str(error).replace(chr(10), ' ')}\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def entries(self) -> list[str]:
        try:
            return Path(self.path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []


def _remove_file(path: str) -> None:
    Path(path).unlink(missing_ok=True)


class ClipPart(Dataset):
    """The samples of one (domain, role), read from disk on access.

    Args:
        owner: The dataset that reads samples and decides what to do with unreadable ones.
        records: The part's samples.
        train: Training pipeline (random crops, flips, spectrogram noise) or evaluation.
    """

    def __init__(self, owner: ClipDataset, records: Sequence[ClipRecord], train: bool) -> None:
        self.owner, self.records, self.train = owner, list(records), train

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> list[int]:
        """Every sample's label, read from the index (no file is opened)."""
        return [r.label for r in self.records]

    def subset(self, indices: Sequence[int]) -> ClipPart:
        """The part restricted to ``indices`` (an unreadable sample is then replaced by another
        sample of the subset only)."""
        return ClipPart(self.owner, [self.records[i] for i in indices], self.train)

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], int]:
        failures = []
        for attempt in range(min(MAX_SUBSTITUTES, len(self.records))):
            record = self.records[(i + attempt) % len(self.records)]
            try:
                return self.owner.read_sample(record, self.train), record.label
            except (AudioReadError, FrameReadError) as err:
                message = f"sample {record.uid} ({record.domain}, {record.split}): {err}"
                if self.owner.on_error != "skip":
                    raise SampleReadError(message + " (dataset option on_error=skip skips "
                                          "unreadable samples)") from err
                self.owner.skip_log.record(record, err)
                log.warning("skipping unreadable %s", message)
                failures.append(message)
        raise SampleReadError(f"{len(failures)} consecutive unreadable samples: {failures}")


class ClipDataset(DomainDataset):
    """Base of the on-disk video datasets (see the module docstring).

    Args:
        root: Dataset root directory.
        modalities: Subset of ``audio``, ``flow``, ``video`` (default: all).
        on_error: ``"raise"`` (default): stop with the list of missing or unreadable files;
            ``"skip"``: drop or replace such samples and count them in the run records.
        validate: Check that every file a run needs exists before training (default True).
        **clip_options: Fields of :class:`ClipOptions`.
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = MODALITIES
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = PAPER_ENCODERS
    HAS_OFFICIAL_SPLITS: ClassVar[bool] = True
    DOMAINS: ClassVar[tuple[str, ...]] = ()
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, root: str | None, modalities: Sequence[str] | None = None,
                 on_error: str = "raise", validate: bool = True, **clip_options: Any) -> None:
        if not root:
            raise ValueError(f"{type(self).__name__} needs --data-root (the dataset directory)")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data root {self.root} is not a directory")
        self.modalities = self.select_modalities(modalities)
        self.options = ClipOptions(**clip_options)
        self.domains = list(self.DOMAINS)
        self.class_names = list(self.CLASS_NAMES)
        self.num_classes = len(self.class_names)
        self.on_error, self.validate = on_error, validate
        self.skip_log = SkipLog() if on_error == "skip" else None
        self.missing_index_files: list[str] = []  # split/annotation files not found
        self.records = self.load_records()  # {(domain, split): [ClipRecord]}
        self.dropped: dict[str, str] = {}  # uid -> why, samples dropped before training
        self._parts: dict[tuple[str, str], list[ClipRecord]] = {}

    # --- what a subclass provides -------------------------------------------------------
    def load_records(self) -> dict[tuple[str, str], list[ClipRecord]]:
        """``{(domain, split): records}``; absent split files go to ``missing_index_files``."""
        records = {}
        for domain in self.DOMAINS:
            for split in self.SPLITS:
                path = self.index_path(domain, split)
                if not path.exists():
                    self.missing_index_files.append(str(path))
                    continue
                records[domain, split] = self.read_index(path, domain, split)
        return records

    def index_path(self, domain: str, split: str) -> Path:
        """The split/annotation file listing ``domain``'s ``split`` clips."""
        raise NotImplementedError

    def read_index(self, path: Path, domain: str, split: str) -> list[ClipRecord]:
        """The records of one split file."""
        raise NotImplementedError

    def role_records(self, domain: str, role: str) -> list[ClipRecord]:
        """The records of ``domain`` for a role (official splits)."""
        raise NotImplementedError

    def read_sample(self, record: ClipRecord, train: bool) -> dict[str, Tensor]:
        raise NotImplementedError

    def record_files(self, record: ClipRecord) -> dict[str, list[tuple[str, list[str]]]]:
        """``{modality: [(folder, [file names])]}``: the files a record needs (validation)."""
        raise NotImplementedError

    # --- DomainDataset interface ----------------------------------------------------------
    def input_shape(self, modality: str) -> tuple[int, ...]:
        return self.options.input_shape(modality)

    def fusion_order(self) -> list[str]:
        """The official concatenation order: video, audio, flow, except flow + audio, which
        ``train_mer_dg.py`` concatenates as [flow, audio]."""
        if set(self.modalities) == {"audio", "flow"}:
            return ["flow", "audio"]
        return [m for m in OFFICIAL_ORDER if m in self.modalities]

    def split(self, domain: str, role: str, seed: int = 0,
              holdout_fraction: float = 0.0) -> ClipPart:
        """The official split of ``domain`` for ``role`` (seed and holdout are not used)."""
        self.check_domains([domain])
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if (domain, role) not in self._parts:
            self._parts[domain, role] = self.usable(self.role_records(domain, role))
        records = self._parts[domain, role]
        if not records:
            raise ValueError(f"{type(self).__name__}: no readable samples for {domain} ({role})")
        return ClipPart(self, records, train=role == "train")

    def labels(self, domain: str) -> list[int]:
        return [r.label for (d, _), rs in self.records.items() if d == domain for r in rs]

    def data_issues(self) -> dict[str, Any]:
        """Samples skipped before training (missing files) and while reading (decode errors)."""
        if self.skip_log is None:
            return {}
        runtime = self.skip_log.entries()
        return {"skipped_before_training": len(self.dropped),
                "skipped_while_reading": len(runtime),
                "skipped_samples": sorted(self.dropped.items())[:100],
                "skipped_reads": runtime[:100]}

    # --- validation ---------------------------------------------------------------------
    def usable(self, records: list[ClipRecord]) -> list[ClipRecord]:
        """``records`` whose files exist; missing files raise (default) or drop the sample."""
        if not self.validate:
            return records
        problems = self.find_problems(records)
        if problems and self.on_error != "skip":
            listing = "\n  ".join(p for ps in problems.values() for p in ps[:3])
            raise FileNotFoundError(
                f"{len(problems)} samples of {type(self).__name__} have missing files (run "
                f"`merdg data check` for the full list, or pass --dataset-option "
                f"on_error=skip to skip them):\n  {listing}")
        for uid, ps in problems.items():
            self.dropped[uid] = "; ".join(ps)
        if problems:
            log.warning("%s: skipping %d samples with missing files", type(self).__name__,
                        len(problems))
        return [r for r in records if r.uid not in problems]

    def find_problems(self, records: Sequence[ClipRecord]) -> dict[str, list[str]]:
        """``{uid: [problem, ...]}`` for records whose needed files do not exist."""
        listing = _DirectoryCache()
        problems: dict[str, list[str]] = {}
        for record in records:
            for modality, groups in self.record_files(record).items():
                if modality not in self.modalities:
                    continue
                missing = [(folder, listing.missing(folder, names)) for folder, names in groups]
                missing = [(folder, names) for folder, names in missing if names]
                if missing:
                    problems.setdefault(record.uid, []).append(
                        f"{record.uid}: {modality}: {_describe_missing(missing)}")
        return problems

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              **options: Any) -> CheckReport:
        """Validate every sample of every split: missing files, unreadable headers, counts per
        (domain, split) and class. Reports every problem instead of stopping at the first."""
        dataset = cls(root=root, modalities=modalities, validate=False, **options)
        problems = [f"missing split file {p}" for p in dataset.missing_index_files]
        counts: dict[str, dict[str, int]] = {}
        for (domain, split), records in dataset.records.items():
            missing = dataset.find_problems(records)
            unreadable = dataset.check_headers([r for r in records if r.uid not in missing])
            problems += [p for ps in missing.values() for p in ps] + list(unreadable.values())
            good = Counter(r.label for r in records
                           if r.uid not in missing and r.uid not in unreadable)
            counts[f"{domain} {split}"] = {n: good.get(c, 0)
                                           for c, n in enumerate(dataset.class_names)}
        notes = [f"root: {dataset.root}", f"modalities: {', '.join(dataset.modalities)}"] + [
            f"  {m}: training sample shape {dataset.input_shape(m)}" for m in dataset.modalities]
        return CheckReport(cls.__name__, counts, problems, notes)

    def check_headers(self, records: Sequence[ClipRecord]) -> dict[str, str]:
        """``{uid: problem}`` for records whose audio/video files cannot be opened."""
        return {}


class _DirectoryCache:
    """Existence checks through one directory listing per folder (EPIC folders hold up to
    ~100k frames; a listing is much faster than one ``stat`` per frame)."""

    def __init__(self) -> None:
        self.listings: dict[str, set[str] | None] = {}

    def missing(self, folder: str, names: Sequence[str]) -> list[str]:
        """The ``names`` absent from ``folder`` (all of them if the folder does not exist)."""
        if folder not in self.listings:
            try:
                self.listings[folder] = set(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                self.listings[folder] = None
        present = self.listings[folder]
        return list(names) if present is None else [n for n in names if n not in present]


def _describe_missing(missing: Sequence[tuple[str, list[str]]]) -> str:
    """Every missing file, compactly: absent folders once, consecutive frame numbers as runs."""
    parts = []
    for folder, names in missing:
        if not os.path.isdir(folder):
            parts.append(f"missing folder {folder}")
        else:
            parts.append(f"missing in {folder}: {_compact_names(names)}")
    return "; ".join(parts)


def _compact_names(names: Sequence[str]) -> str:
    """``frame_0000000005.jpg .. frame_0000000009.jpg`` style runs of consecutive numbers."""
    runs: list[list[str]] = []
    previous = None
    for name in names:
        number = _frame_number(name)
        if runs and number is not None and previous is not None and number == previous + 1:
            runs[-1][1] = name
        else:
            runs.append([name, name])
        previous = number
    return ", ".join(a if a == b else f"{a} .. {b}" for a, b in runs)


def _frame_number(name: str) -> int | None:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else None
