"""HAC (Human-Animal-Cartoon, 7 actions) in the layout of its Hugging Face release.

Layout under the data root (hdong51/Human-Animal-Cartoon, as SimMMDG's HAC loader reads it)::

    HAC_Splits/HAC_{train,test}_only_{human,animal,cartoon}.csv   rows "<file>.mp4,<label>"
    {domain}/videos/<file>.mp4                                    RGB video
    {domain}/flow/<stem>_flow_x.mp4, <stem>_flow_y.mp4            optical flow as videos
    {domain}/audio/<stem>.wav                                     audio

The csvs are read as UTF-8 (a byte-order mark is fine; other encodings are an error naming the
line); each row's file must be a plain ``.mp4`` file name and its label an integer in 0..6, and
bad rows are listed with their file and line.

Official protocol (SimMMDG's ``HACDOMAIN``): a source domain trains on its train csv and is
validated on its test csv; the **target** is tested on its test csv *plus* its train csv (every
clip of the domain). ``target_test="test"`` restricts the target to its test csv.

Per sample, as the reference loader (``docs/paper-setting.md`` lists its quirks):

- the video has ``n`` frames; clips are sampled over ``n - 1`` frames (RGB: 32 every 2nd; flow:
  8 every 4th) and index ``i`` reads frame ``clamp(i - 1, 0, n - 1)``;
- flow videos are decoded to RGB and converted to grey (OpenCV's formula), x then y;
- audio: the window between the first and last sampled RGB frame (flow frames without video),
  in seconds at an assumed 24 fps (``audio_fps``); an empty window gives an all-zero
  spectrogram, as the reference. With audio alone, the window starts at 0 s.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from merdg.datasets.audio import (
    AUDIO_SAMPLES,
    augment_spectrogram,
    corrupt_waveform,
    log_spectrogram,
    read_wav_window,
    spectrogram_shape,
)
from merdg.datasets.base import DATASETS
from merdg.datasets.clips import ClipDataset, ClipRecord, Corruptions, IndexRowsError
from merdg.datasets.preprocessing import DataError
from merdg.datasets.untrusted import one_line, plain_name_problem, read_utf8
from merdg.datasets.video import FrameReadError, VideoFile, sample_clip_indices

__all__ = ["HAC"]

SPLITS_DIR = "HAC_Splits"


@DATASETS.register("hac")
class HAC(ClipDataset):
    """HAC human/animal/cartoon, RGB + flow + audio, read from mp4 and wav files.

    Args:
        root: The folder holding ``HAC_Splits`` and the three domain folders.
        modalities: Subset of ``audio``, ``flow``, ``video`` (default: all).
        target_test: ``"all"`` (published protocol: target train + test clips) or ``"test"``.
        audio_fps: Frame rate assumed when mapping sampled frames to audio time (reference: 24).
        on_error / validate / clip options: see :class:`~merdg.datasets.clips.ClipDataset`.

    Label names are not published with the data (candidates in ``docs/paper-setting.md``), so
    classes are named ``class0`` .. ``class6``.
    """

    DOMAINS: ClassVar[tuple[str, ...]] = ("human", "animal", "cartoon")
    CLASS_NAMES: ClassVar[tuple[str, ...]] = tuple(f"class{i}" for i in range(7))
    # MOOSA's open-set split: label 3 is unknown (github.com/donghao51/MOOSA,
    # HAC-rgb-flow-audio/dataloader_video_flow_audio_HAC_MOOSA.py, lines 10-13)
    OPEN_SET_KNOWN_CLASSES: ClassVar[tuple[int, ...]] = (0, 1, 2, 4, 5, 6)

    def __init__(self, root: str | None, modalities=None, target_test: str = "all",
                 audio_fps: float = 24.0, **options) -> None:
        if target_test not in ("all", "test"):
            raise ValueError(f"target_test must be 'all' or 'test', got {target_test!r}")
        self.target_test, self.audio_fps = target_test, float(audio_fps)
        super().__init__(root, modalities, **options)

    def index_path(self, domain: str, split: str) -> Path:
        return self.root / SPLITS_DIR / f"HAC_{split}_only_{domain}.csv"

    def read_index(self, path: Path, domain: str, split: str) -> list[ClipRecord]:
        return _read_csv(path, domain, split, self.num_classes)

    def role_records(self, domain: str, role: str) -> list[ClipRecord]:
        splits = {"train": ["train"], "val": ["test"],
                  "test": ["test", "train"] if self.target_test == "all" else ["test"]}[role]
        missing = [s for s in splits if (domain, s) not in self.records]
        if missing:
            files = ", ".join(str(self.index_path(domain, s)) for s in missing)
            raise FileNotFoundError(f"split file(s) of {domain} missing: {files}")
        return [r for s in splits for r in self.records[domain, s]]

    def record_files(self, record: ClipRecord) -> dict[str, list[tuple[str, list[str]]]]:
        base = os.path.join(self.root, record.domain)
        stem = record.info["stem"]
        return {"video": [(os.path.join(base, "videos"), [record.info["file"]])],
                "flow": [(os.path.join(base, "flow"), [f"{stem}_flow_x.mp4",
                                                       f"{stem}_flow_y.mp4"])],
                "audio": [(os.path.join(base, "audio"), [f"{stem}.wav"])]}

    def _path(self, record: ClipRecord, modality: str, index: int = 0) -> str:
        folder, names = self.record_files(record)[modality][0]
        return os.path.join(folder, names[index])

    def read_sample(self, record: ClipRecord, train: bool,
                    corruptions: Corruptions | None = None) -> dict[str, Tensor]:
        x, frame_inds = {}, None
        corruptions = corruptions or {}
        if "video" in self.modalities:
            x["video"], frame_inds = self._read_rgb(record, train, corruptions.get("video"))
        if "flow" in self.modalities:
            x["flow"], flow_inds = self._read_flow(record, train, corruptions.get("flow"))
            frame_inds = flow_inds if frame_inds is None else frame_inds
        if "audio" in self.modalities:
            x["audio"] = self._read_audio(record, train, frame_inds, corruptions.get("audio"))
        return {m: x[m] for m in self.modalities}

    def _read_rgb(self, record: ClipRecord, train: bool,
                  corrupt=None) -> tuple[Tensor, Tensor]:
        with VideoFile(self._path(record, "video")) as video:
            inds = _sample(video, self.options.rgb_clip_len, self.options.rgb_interval, train)
            frames = video.frames(_frame_of_index(inds, video.num_frames))
        return self.options.transform("video", train)(frames, corrupt), inds

    def _read_flow(self, record: ClipRecord, train: bool,
                   corrupt=None) -> tuple[Tensor, Tensor]:
        with VideoFile(self._path(record, "flow", 0)) as fx, \
                VideoFile(self._path(record, "flow", 1)) as fy:
            inds = _sample(fx, self.options.flow_clip_len, self.options.flow_interval, train)
            wanted = _frame_of_index(inds, fx.num_frames)
            x = fx.frames(wanted, gray=True)
            y = fy.frames(wanted.clamp(max=fy.num_frames - 1), gray=True)
        return self.options.transform("flow", train)(torch.cat([x, y], dim=-1), corrupt), inds

    def _read_audio(self, record: ClipRecord, train: bool, frame_inds: Tensor | None,
                    corrupt=None) -> Tensor:
        if frame_inds is None:  # audio alone: no sampled frames to align with
            t0, t1 = 0.0, AUDIO_SAMPLES  # seconds; read_wav_window keeps the first 160000
        else:
            t0, t1 = float(frame_inds[0]) / self.audio_fps, float(frame_inds[-1]) / self.audio_fps
        samples, rate = read_wav_window(self._path(record, "audio"), t0, t1)
        if samples.size == 0:  # the reference substitutes silence; its map standardizes to 0
            spec = torch.zeros(1, *spectrogram_shape())  # (nothing to corrupt either)
        else:
            if corrupt is not None:
                samples = corrupt_waveform(samples, rate, corrupt)
            spec = log_spectrogram(samples, rate)
        return augment_spectrogram(spec) if train else spec

    def check_headers(self, records: list[ClipRecord]) -> dict[str, str]:
        """Videos that cannot be opened or have fewer than 2 frames; wavs that cannot be read."""
        import soundfile as sf

        problems = {}
        for record in records:
            errors = [self._video_problem(self._path(record, m, k))
                      for m, k in (("video", 0), ("flow", 0), ("flow", 1))
                      if m in self.modalities]
            if "audio" in self.modalities:
                try:
                    sf.info(self._path(record, "audio"))
                except (OSError, RuntimeError) as err:
                    errors.append(f"unreadable {self._path(record, 'audio')}: {err}")
            errors = [e for e in errors if e]
            if errors:
                problems[record.uid] = f"{record.uid}: " + "; ".join(errors)
        return problems

    @staticmethod
    def _video_problem(path: str) -> str | None:
        try:
            with VideoFile(path) as video:
                if video.num_frames < 2:
                    return f"{path} has {video.num_frames} frame(s)"
        except FrameReadError as err:
            return str(err)
        return None


def _sample(video: VideoFile, clip_len: int, interval: int, train: bool) -> Tensor:
    """Frame indices over ``n - 1`` frames (the reference's ``total_frames = end - start``)."""
    total = video.num_frames - 1
    if total < 1:
        raise FrameReadError(f"{video.path} has {video.num_frames} frame(s)")
    return sample_clip_indices(total, clip_len, interval, train)


def _frame_of_index(inds: Tensor, num_frames: int) -> Tensor:
    """The reference reads frame ``i - 1`` for index ``i``, clamped to the video."""
    return (inds - 1).clamp(0, num_frames - 1)


def _read_csv(path: Path, domain: str, split: str, num_classes: int) -> list[ClipRecord]:
    """Records of one split csv (UTF-8, rows ``<file>.mp4,<label>``).

    Raises:
        DataError: The file is not UTF-8 text or not parseable as CSV (naming the line).
        IndexRowsError: Some rows cannot be used: one ``(file line N, why)`` per row.
    """
    reader = csv.reader(io.StringIO(read_utf8(path, "split csv"), newline=""))
    records, bad = [], []
    try:
        for row in reader:
            if not row:
                continue
            try:
                records.append(_record(row, domain, split, num_classes))
            except ValueError as err:
                bad.append((f"{path} line {reader.line_num}", str(err)))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: not readable as CSV ({err})") from None
    if bad:
        raise IndexRowsError(bad, records)
    return records


def _record(row: list[str], domain: str, split: str, num_classes: int) -> ClipRecord:
    """One clip of a split csv; a ValueError says what is wrong with the row."""
    if len(row) < 2:
        raise ValueError(f"expected '<file>.mp4,<label>', got {one_line(row)}")
    name, label_text = row[0], row[1].strip()
    problem = plain_name_problem(name)
    if problem or not name.endswith(".mp4"):
        raise ValueError(f"file {one_line(repr(name))}: {problem or 'not an .mp4 file name'}")
    if not re.fullmatch(r"-?[0-9]+", label_text):
        raise ValueError(f"label {one_line(repr(row[1]))} is not an integer")
    label = int(label_text)
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside 0..{num_classes - 1}")
    return ClipRecord(f"{domain}/{split}/{name}", domain, split, label,
                      {"file": name, "stem": name[:-4]})
