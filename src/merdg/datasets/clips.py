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

The split files and the names in them are untrusted (``docs/reliability.md``): a file that cannot
be read safely, or rows that cannot be used, stop the dataset's construction with every problem
listed (``on_error="skip"`` drops the bad rows instead); a file a record needs that resolves
outside the data root (a symlink) is refused unless ``allow_outside_root=True``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from merdg.datasets.audio import AUDIO_SAMPLES, AudioReadError, spectrogram_shape
from merdg.datasets.base import ROLES, CheckReport, DomainDataset, ValueConvention
from merdg.datasets.preprocessing import DataError, raise_problems
from merdg.datasets.untrusted import OPT_OUT, check_flag, one_line, outside_root
from merdg.datasets.video import (
    FLOW_MEAN_STD,
    FLOW_ZERO,
    RGB_MEAN_STD,
    ClipTransform,
    FrameReadError,
)

__all__ = ["ClipDataset", "ClipOptions", "ClipPart", "ClipRecord", "IndexRowsError",
           "SampleReadError"]

log = logging.getLogger("merdg")

MODALITIES = ("audio", "flow", "video")
OFFICIAL_ORDER = ("video", "audio", "flow")  # concatenation order of train_mer_dg.py
MAX_SUBSTITUTES = 20  # consecutive unreadable samples tolerated with on_error="skip"

Corruptions = Mapping[str, Callable[..., Tensor]]
"""``{modality: corrupt}`` applied while reading a sample: ``corrupt(values)`` for video and
flow (the cropped clip, :func:`~merdg.datasets.video.pixels_to_values`), ``corrupt(waveform,
sample_rate=rate)`` for audio (the window's samples before the spectrogram)."""

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


class IndexRowsError(DataError):
    """Rows of a split file that cannot be used.

    Attributes:
        rows: ``(where, why)`` per bad row, ``where`` naming the file and the row.
        records: The records of the file's good rows.
    """

    def __init__(self, rows: Sequence[tuple[str, str]], records: Sequence[ClipRecord]) -> None:
        self.rows, self.records = list(rows), list(records)
        super().__init__("\n".join(f"{where}: {why}" for where, why in self.rows))


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
        return self.corrupted_item(i, {})

    def corrupted_item(self, i: int, corruptions: Corruptions) -> tuple[dict[str, Tensor], int]:
        """Sample ``i`` read with ``corruptions`` applied inside the pipeline (see
        :data:`Corruptions`; ``{}`` gives the clean sample)."""
        failures = []
        for attempt in range(min(MAX_SUBSTITUTES, len(self.records))):
            record = self.records[(i + attempt) % len(self.records)]
            try:
                return self.owner.read_sample(record, self.train, corruptions), record.label
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
        on_error: ``"raise"`` (default): stop with the list of missing or unreadable files
            and unusable split-file rows; ``"skip"``: drop or replace such samples and count
            them in the run records.
        validate: Check that every file a run needs exists, inside the data root, before
            training (default True).
        allow_outside_root: Read files that resolve outside ``root`` through symlinks.
        report_only: Collect the split files' problems in :attr:`index_problems` instead of
            raising them (what ``merdg data check`` uses).
        **clip_options: Fields of :class:`ClipOptions`.
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = MODALITIES
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = PAPER_ENCODERS
    HAS_OFFICIAL_SPLITS: ClassVar[bool] = True
    DOMAINS: ClassVar[tuple[str, ...]] = ()
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
    SPLITS: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, root: str | None, modalities: Sequence[str] | None = None,
                 on_error: str = "raise", validate: bool = True,
                 allow_outside_root: bool = False, report_only: bool = False,
                 **clip_options: Any) -> None:
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
        self.on_error, self.validate = on_error, check_flag("validate", validate)
        self.report_only = report_only
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self.skip_log = SkipLog() if on_error == "skip" else None
        self.missing_index_files: list[str] = []  # split/annotation files not found
        self.index_problems: list[str] = []  # split files that cannot be read, bad rows
        self.dropped: dict[str, str] = {}  # uid -> why, samples dropped before training
        self.records = self.load_records()  # {(domain, split): [ClipRecord]}
        if not report_only:
            raise_problems(self.index_problems, f"the split files of {type(self).__name__} "
                           f"under {one_line(self.root)}")
        self._parts: dict[tuple[str, str], list[ClipRecord]] = {}

    # --- what a subclass provides -------------------------------------------------------
    def load_records(self) -> dict[tuple[str, str], list[ClipRecord]]:
        """``{(domain, split): records}``, reading every split file even when some fail.

        Absent split files go to :attr:`missing_index_files`; files that cannot be read and
        unusable rows go to :attr:`index_problems`, except rows dropped with
        ``on_error="skip"`` (counted in :attr:`dropped`).
        """
        records = {}
        for domain in self.DOMAINS:
            for split in self.SPLITS:
                path = self.index_path(domain, split)
                if not path.exists():
                    self.missing_index_files.append(str(path))
                    continue
                try:
                    records[domain, split] = self.read_index(path, domain, split)
                except IndexRowsError as err:
                    records[domain, split] = err.records
                    self._bad_rows(err.rows)
                except DataError as err:  # the whole file: unsafe, unreadable, bad columns
                    records[domain, split] = []
                    self.index_problems.append(str(err))
        return records

    def _bad_rows(self, rows: Sequence[tuple[str, str]]) -> None:
        if self.on_error != "skip" or self.report_only:
            self.index_problems += [f"{where}: {why}" for where, why in rows]
            return
        for where, why in rows:
            self.dropped[where] = why
        log.warning("%s: skipping %d unusable split-file rows", type(self).__name__, len(rows))

    def index_path(self, domain: str, split: str) -> Path:
        """The split/annotation file listing ``domain``'s ``split`` clips."""
        raise NotImplementedError

    def read_index(self, path: Path, domain: str, split: str) -> list[ClipRecord]:
        """The records of one split file."""
        raise NotImplementedError

    def role_records(self, domain: str, role: str) -> list[ClipRecord]:
        """The records of ``domain`` for a role (official splits)."""
        raise NotImplementedError

    def read_sample(self, record: ClipRecord, train: bool,
                    corruptions: Corruptions | None = None) -> dict[str, Tensor]:
        """The sample's tensors; ``corruptions`` are applied while reading (see
        :data:`Corruptions`)."""
        raise NotImplementedError

    def record_files(self, record: ClipRecord) -> dict[str, list[tuple[str, list[str]]]]:
        """``{modality: [(folder, [file names])]}``: the files a record needs (validation)."""
        raise NotImplementedError

    # --- DomainDataset interface ----------------------------------------------------------
    def input_shape(self, modality: str) -> tuple[int, ...]:
        return self.options.input_shape(modality)

    def modality_kind(self, modality: str) -> str:
        return modality  # "video" (RGB), "flow", "audio"

    def value_convention(self, modality: str) -> ValueConvention:
        """Corruptions act inside the reading pipeline: on the cropped clip (video: RGB in
        [0, 1]; flow: [-1, 127/128], 0 = no motion) and on the waveform before its
        spectrogram. ``mean``/``std`` map the network's input to those values."""
        if modality == "audio":
            return ValueConvention("audio", in_pipeline=True)
        mean, std = FLOW_MEAN_STD if modality == "flow" else RGB_MEAN_STD
        # sample = (pixel - mean) / std and values = pixels_to_values(pixel)
        scale, offset = (FLOW_ZERO, FLOW_ZERO) if modality == "flow" else (255.0, 0.0)
        shape = (-1, 1, 1, 1)
        mean_t = (torch.tensor(mean) - offset).div(scale).view(shape)
        std_t = torch.tensor(std).div(scale).view(shape)
        return ValueConvention(modality, mean=mean_t, std=std_t, in_pipeline=True)

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
            self.prepare_parts({(domain, role): self.role_records(domain, role)})
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

    def fit_normalization(self, sources: Sequence[str]) -> None:
        """Nothing to fit (clips are normalized per sample); training calls this first, with
        the run's sources, so the files of every part the run can read are validated here, in
        one pass: the sources' train and val parts and every other domain's test part.

        Raises:
            FileNotFoundError: Listing every missing or refused file of those parts, and every
                missing split file (unless ``on_error="skip"``, which drops such samples).
        """
        self.check_domains(sources)
        wanted = [(d, r) for d in sources for r in ("train", "val")]
        wanted += [(d, "test") for d in self.domains if d not in sources]
        parts, missing_splits = {}, []
        for domain, role in wanted:
            if (domain, role) in self._parts:
                continue
            try:
                parts[domain, role] = self.role_records(domain, role)
            except FileNotFoundError as err:
                missing_splits.append(str(err))
        self.prepare_parts(parts, missing_splits)

    # --- validation ---------------------------------------------------------------------
    def prepare_parts(self, parts: dict[tuple[str, str], list[ClipRecord]],
                      problems: Sequence[str] = ()) -> None:
        """Validate the records of several parts at once and keep their usable records.

        Missing or refused files raise one error listing all of them, with ``problems`` found
        before (default), or drop their samples (``on_error="skip"``).
        """
        if self.validate:
            union = list({r.uid: r for records in parts.values() for r in records}.values())
            found = self.find_problems(union)
        else:
            found = {}
        if (found or problems) and self.on_error != "skip":
            counts = [f"{len(found)} samples have missing or refused files"] * bool(found)
            counts += [f"{len(problems)} split files are missing"] * bool(problems)
            listing = "\n  ".join([*problems, *(p for ps in found.values() for p in ps)])
            raise FileNotFoundError(
                f"{type(self).__name__}: {' and '.join(counts)} (`merdg data check` lists every "
                f"problem; --dataset-option on_error=skip skips such samples):\n  {listing}")
        if found:
            log.warning("%s: skipping %d samples with missing or refused files",
                        type(self).__name__, len(found))
        for uid, ps in found.items():
            self.dropped[uid] = "; ".join(ps)
        for key, records in parts.items():
            self._parts[key] = [r for r in records if r.uid not in found]

    def find_problems(self, records: Sequence[ClipRecord]) -> dict[str, list[str]]:
        """``{uid: [problem, ...]}`` for records whose needed files do not exist or resolve
        outside the data root (unless ``allow_outside_root``)."""
        listing = _DirectoryCache(None if self.allow_outside_root else self.root)
        problems: dict[str, list[str]] = {}
        for record in records:
            for modality, groups in self.record_files(record).items():
                if modality not in self.modalities:
                    continue
                missing = [(folder, listing.missing(folder, names)) for folder, names in groups]
                missing = [(folder, names) for folder, names in missing if names]
                refused = [r for folder, names in groups if (r := listing.refused(folder, names))]
                if missing or refused:
                    what = "; ".join([_describe_missing(missing)] * bool(missing) + refused)
                    problems.setdefault(record.uid, []).append(
                        f"{one_line(record.uid)}: {modality}: {what}")
        return problems

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              **options: Any) -> CheckReport:
        """Validate every sample of every split: missing files, unreadable headers, counts per
        (domain, split) and class. Reports every problem instead of stopping at the first."""
        dataset = cls(root=root, modalities=modalities, validate=False, report_only=True,
                      **options)
        problems = [f"missing split file {p}" for p in dataset.missing_index_files]
        problems += dataset.index_problems
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
        return CheckReport(cls.__name__, counts, problems, notes,
                           row_kind="domain/split parts")

    def check_headers(self, records: Sequence[ClipRecord]) -> dict[str, str]:
        """``{uid: problem}`` for records whose audio/video files cannot be opened."""
        return {}


class _DirectoryCache:
    """Existence checks through one directory listing per folder (EPIC folders hold up to
    ~100k frames; a listing is much faster than one ``stat`` per frame).

    With a ``root``, files that resolve outside it are refused: each folder is resolved once,
    and only the entries that are symlinks are resolved one by one.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.listings: dict[str, set[str] | None] = {}
        self.symlinks: dict[str, set[str]] = {}
        self.outside: dict[str, str | None] = {}

    def _list(self, folder: str) -> set[str] | None:
        if folder not in self.listings:
            try:
                with os.scandir(folder) as entries:
                    names, links = set(), set()
                    for entry in entries:
                        names.add(entry.name)
                        if entry.is_symlink():
                            links.add(entry.name)
                self.listings[folder], self.symlinks[folder] = names, links
            except (FileNotFoundError, NotADirectoryError):
                self.listings[folder], self.symlinks[folder] = None, set()
        return self.listings[folder]

    def missing(self, folder: str, names: Sequence[str]) -> list[str]:
        """The ``names`` absent from ``folder`` (all of them if the folder does not exist)."""
        present = self._list(folder)
        return list(names) if present is None else [n for n in names if n not in present]

    def refused(self, folder: str, names: Sequence[str]) -> str | None:
        """Why files of ``names`` in ``folder`` may not be read (outside the root), or None."""
        if self.root is None or self._list(folder) is None:
            return None
        if folder not in self.outside:
            self.outside[folder] = outside_root(self.root, folder)
        if self.outside[folder]:
            return f"folder {one_line(folder)} {self.outside[folder]} ({OPT_OUT})"
        links = self.symlinks[folder]
        for name in (n for n in names if n in links):
            reason = outside_root(self.root, os.path.join(folder, name))
            if reason:
                return f"{one_line(os.path.join(folder, name))} {reason} ({OPT_OUT})"
        return None


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
