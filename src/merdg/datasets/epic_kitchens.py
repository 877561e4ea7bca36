"""EPIC-Kitchens (MM-SADA domains D1/D2/D3, 8 verb classes) in the layout SimMMDG distributes.

Layout under the data root (the ``frames_rgb_flow`` folder of the download script)::

    MM-SADA_Domain_Adaptation_Splits/D{1,2,3}_{train,test}.pkl   pandas DataFrames, 10 columns
    rgb/{train,test}/D{1,2,3}/<video_id>/frame_0000000001.jpg     RGB frames, 60 fps
    rgb/{train,test}/D{1,2,3}/<video_id>.wav                     audio, one file per video
    flow/{train,test}/D{1,2,3}/<video_id>/{u,v}/frame_%010d.jpg  TV-L1 flow, half rate

The pickles' columns are ``uid, participant_id, video_id, narration, start_timestamp,
stop_timestamp, start_frame, stop_frame, verb, verb_class``; a sample is one action segment
(frames ``[start_frame, stop_frame)``, timestamps ``"HH:MM:SS.ff"``, label ``verb_class``).
Domains: D1 = P08, D2 = P01, D3 = P22 (Munro & Damen, CVPR 2020, arXiv 2001.09691).

The pickles are read with a restricted unpickler (:mod:`merdg.datasets.safe_pickle`): a pickle
that would run code is refused, naming the file. Every row is checked (a ``video_id`` must be a
plain folder name, frames and timestamps must be numbers with stop after start, ``verb_class``
an integer in 0..7); bad rows are listed with their file and position.

Official splits (``train_mer_dg.py``): a source domain trains on its ``train`` pickle and is
validated on its ``test`` pickle; the target domain is tested on its ``test`` pickle.

Per sample (see :mod:`merdg.datasets.video` and :mod:`merdg.datasets.audio`):

- RGB: 32 frames, every 2nd, of the segment (``start_index = start_frame``);
- flow: 8 (u, v) frame pairs, every 4th, at half rate (``start_index = ceil(start_frame / 2)``,
  ``total = int((stop - start) / 2)``);
- audio: the segment's time window of the video's wav, tiled to 10 s, log spectrogram. A
  window outside the wav is an error (the reference loops forever on it).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from merdg.datasets.audio import (
    AudioReadError,
    augment_spectrogram,
    corrupt_waveform,
    log_spectrogram,
    read_wav_window,
    window_bounds,
)
from merdg.datasets.base import DATASETS
from merdg.datasets.clips import ClipDataset, ClipRecord, Corruptions, IndexRowsError
from merdg.datasets.preprocessing import DataError
from merdg.datasets.untrusted import one_line, plain_name_problem
from merdg.datasets.video import FrameReadError, read_jpeg_frames, sample_clip_indices

__all__ = ["EpicKitchens", "parse_timestamp"]

SPLITS_DIR = "MM-SADA_Domain_Adaptation_Splits"
REQUIRED_COLUMNS = ("video_id", "start_timestamp", "stop_timestamp", "start_frame",
                    "stop_frame", "verb_class")
FRAME = "frame_{:010d}.jpg"


def parse_timestamp(text: str) -> float:
    """``"HH:MM:SS.ff"`` -> seconds.

    Raises:
        ValueError: ``text`` is not three ``:``-separated non-negative finite numbers.
    """
    parts = str(text).split(":")
    try:
        hours, minutes, seconds = (float(p) for p in parts)
    except ValueError:
        hours = minutes = seconds = math.nan
    value = (hours * 60 + minutes) * 60 + seconds
    if len(parts) != 3 or not math.isfinite(value) or min(hours, minutes, seconds) < 0:
        raise ValueError(f"timestamp {one_line(repr(text))} is not HH:MM:SS.ff")
    return value


@DATASETS.register("epic-kitchens")
class EpicKitchens(ClipDataset):
    """EPIC-Kitchens D1/D2/D3 (MM-SADA splits), RGB + flow + audio, read from disk.

    Args:
        root: The folder holding ``MM-SADA_Domain_Adaptation_Splits``, ``rgb`` and ``flow``.
        modalities: Subset of ``audio``, ``flow``, ``video`` (default: all).
        on_error / validate / clip options: see :class:`~merdg.datasets.clips.ClipDataset`.
    """

    DOMAINS: ClassVar[tuple[str, ...]] = ("D1", "D2", "D3")
    CLASS_NAMES: ClassVar[tuple[str, ...]] = ("take", "put", "open", "close", "wash", "cut",
                                               "mix", "pour")
    # MOOSA's open-set split: "close" (3) is unknown (github.com/donghao51/MOOSA,
    # EPIC-rgb-flow-audio/dataloader_video_flow_audio_EPIC_MOOSA.py, lines 8-11)
    OPEN_SET_KNOWN_CLASSES: ClassVar[tuple[int, ...]] = (0, 1, 2, 4, 5, 6, 7)

    def index_path(self, domain: str, split: str) -> Path:
        return self.root / SPLITS_DIR / f"{domain}_{split}.pkl"

    def read_index(self, path: Path, domain: str, split: str) -> list[ClipRecord]:
        return _read_split(path, domain, split, self.num_classes)

    def role_records(self, domain: str, role: str) -> list[ClipRecord]:
        split = "train" if role == "train" else "test"
        if (domain, split) not in self.records:
            raise FileNotFoundError(f"split file {self.index_path(domain, split)} is missing")
        return self.records[domain, split]

    def record_files(self, record: ClipRecord) -> dict[str, list[tuple[str, list[str]]]]:
        info = record.info
        rgb_dir = self._dir("rgb", record)
        flow_start, flow_total = _flow_range(info["start_frame"], info["stop_frame"])
        flow_names = [FRAME.format(i) for i in range(flow_start, flow_start + flow_total)]
        flow_dir = self._dir("flow", record)
        return {
            "video": [(rgb_dir, [FRAME.format(i) for i in
                                 range(info["start_frame"], info["stop_frame"])])],
            "flow": [(os.path.join(flow_dir, "u"), flow_names),
                     (os.path.join(flow_dir, "v"), flow_names)],
            "audio": [(os.path.dirname(rgb_dir), [info["video_id"] + ".wav"])],
        }

    def read_sample(self, record: ClipRecord, train: bool,
                    corruptions: Corruptions | None = None) -> dict[str, Tensor]:
        readers = {"video": self._read_rgb, "flow": self._read_flow, "audio": self._read_audio}
        corruptions = corruptions or {}
        return {m: readers[m](record, train, corruptions.get(m)) for m in self.modalities}

    # --- per modality -----------------------------------------------------------------
    def _dir(self, kind: str, record: ClipRecord) -> str:
        return os.path.join(self.root, kind, record.split, record.domain, record.info["video_id"])

    def _read_rgb(self, record: ClipRecord, train: bool, corrupt=None) -> Tensor:
        start, stop = record.info["start_frame"], record.info["stop_frame"]
        offsets = _sample(stop - start, self.options.rgb_clip_len, self.options.rgb_interval,
                          train, record)
        folder = self._dir("rgb", record)
        frames = read_jpeg_frames([os.path.join(folder, FRAME.format(start + int(k)))
                                   for k in offsets])
        return self.options.transform("video", train)(frames, corrupt)  # (3, T, H, W)

    def _read_flow(self, record: ClipRecord, train: bool, corrupt=None) -> Tensor:
        start, total = _flow_range(record.info["start_frame"], record.info["stop_frame"])
        offsets = _sample(total, self.options.flow_clip_len, self.options.flow_interval, train,
                          record)
        folder = self._dir("flow", record)
        names = [FRAME.format(start + int(k)) for k in offsets]
        u = read_jpeg_frames([os.path.join(folder, "u", n) for n in names], gray=True)
        v = read_jpeg_frames([os.path.join(folder, "v", n) for n in names], gray=True)
        uv = torch.cat([u, v], dim=-1)
        return self.options.transform("flow", train)(uv, corrupt)  # (2, T, H, W)

    def _read_audio(self, record: ClipRecord, train: bool, corrupt=None) -> Tensor:
        path = self._dir("rgb", record) + ".wav"
        t0, t1 = record.info["start_s"], record.info["stop_s"]
        samples, rate = read_wav_window(path, t0, t1)
        if samples.size == 0:
            raise AudioReadError(f"audio window {t0:.2f}-{t1:.2f} s lies outside {path}")
        if corrupt is not None:
            samples = corrupt_waveform(samples, rate, corrupt)
        spec = log_spectrogram(samples, rate)  # (1, 257, 1004)
        return augment_spectrogram(spec) if train else spec

    def check_headers(self, records: list[ClipRecord]) -> dict[str, str]:
        """Wavs that cannot be opened, and segments whose window lies outside their wav."""
        if "audio" not in self.modalities:
            return {}
        import soundfile as sf

        infos: dict[str, Any] = {}
        problems = {}
        for record in records:
            path = self._dir("rgb", record) + ".wav"
            if path not in infos:
                try:
                    infos[path] = sf.info(path)
                except (OSError, RuntimeError) as err:
                    infos[path] = err
            info = infos[path]
            if isinstance(info, Exception):
                problems[record.uid] = f"{record.uid}: audio: unreadable {path}: {info}"
                continue
            start, _ = window_bounds(record.info["start_s"], record.info["stop_s"], info.frames,
                                     info.samplerate)
            if start >= info.frames:
                problems[record.uid] = (f"{record.uid}: audio: window starts at "
                                        f"{record.info['start_s']:.2f} s, after the end of "
                                        f"{path} ({info.duration:.2f} s)")
        return problems


def _flow_range(start_frame: int, stop_frame: int) -> tuple[int, int]:
    """First flow frame and number of flow frames of an RGB segment (flow is at half rate)."""
    return math.ceil(start_frame / 2), int((stop_frame - start_frame) / 2)


def _sample(total: int, clip_len: int, interval: int, train: bool,
            record: ClipRecord) -> Tensor:
    if total < 1:
        raise FrameReadError(f"segment {record.uid} has {total} frames")
    return sample_clip_indices(total, clip_len, interval, train)


def _read_split(path: Path, domain: str, split: str, num_classes: int) -> list[ClipRecord]:
    """Records of one MM-SADA split pickle (a pandas DataFrame), read without running code.

    Raises:
        DataError: The file is refused (it would run code), unreadable, not a DataFrame, or
            lacks columns; the message names the file.
        IndexRowsError: Some rows cannot be used: one ``(file row k, why)`` per row.
    """
    try:
        from merdg.datasets.safe_pickle import load_dataframe
    except ImportError as err:  # pragma: no cover - the media extra installs pandas
        raise ImportError("reading the MM-SADA split pickles needs pandas: "
                          "pip install 'merdg[media]'") from err
    frame = load_dataframe(path)
    columns = [str(c) for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or len(set(columns)) < len(columns):
        raise DataError(f"split file {path} lacks columns {missing} or repeats one; has "
                        f"{[one_line(c) for c in columns]}")
    names = [c for c in (*REQUIRED_COLUMNS, "uid") if c in columns]
    values = zip(*(frame[frame.columns[columns.index(c)]].tolist() for c in names))
    records, bad = [], []
    for position, row in enumerate(values):
        try:
            records.append(_record(dict(zip(names, row)), position, domain, split, num_classes))
        except (ValueError, TypeError, OverflowError) as err:
            bad.append((f"{path} row {position}", one_line(err)))
    if bad:
        raise IndexRowsError(bad, records)
    return records


def _record(row: dict[str, Any], position: int, domain: str, split: str,
            num_classes: int) -> ClipRecord:
    """One segment of a split file; a ValueError says what is wrong with the row."""
    video_id = row["video_id"]
    problem = plain_name_problem(video_id) if isinstance(video_id, str) else "not a string"
    if problem:
        raise ValueError(f"video_id {one_line(repr(video_id))}: {problem}")
    label = _integer(row["verb_class"], "verb_class")
    if not 0 <= label < num_classes:
        raise ValueError(f"verb_class {label} outside 0..{num_classes - 1}")
    info = {"video_id": video_id, "start_frame": _integer(row["start_frame"], "start_frame"),
            "stop_frame": _integer(row["stop_frame"], "stop_frame"),
            "start_s": parse_timestamp(row["start_timestamp"]),
            "stop_s": parse_timestamp(row["stop_timestamp"])}
    if not 0 <= info["start_frame"] < info["stop_frame"]:
        raise ValueError(f"frames {info['start_frame']}..{info['stop_frame']}: need "
                         "0 <= start_frame < stop_frame")
    if not info["start_s"] < info["stop_s"]:
        raise ValueError(f"timestamps {one_line(row['start_timestamp'])}.."
                         f"{one_line(row['stop_timestamp'])}: the stop must come after the start")
    key = one_line(row.get("uid", position))
    return ClipRecord(f"{domain}/{split}/{video_id}/{key}", domain, split, label, info)


def _integer(value: Any, column: str) -> int:
    """``value`` as an int when it is one (2, 2.0, "2"); else a ValueError naming the column."""
    if isinstance(value, str):
        if re.fullmatch(r"\s*-?[0-9]+\s*", value):
            return int(value)
    elif not isinstance(value, bool) and isinstance(value, numbers.Real):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
    raise ValueError(f"{column} {one_line(repr(value))} is not an integer")
