"""Tiny data sets in the exact distributed layouts, generated locally.

Used by the tests, the data-pipeline benchmark, smoke runs and the README: EPIC-Kitchens and HAC
(real JPEG frame folders, mp4 videos (H.264 through PyAV), 16-bit PCM wavs, MM-SADA split
pickles with their 10 columns and HAC split csvs), HUST (the 24 text files with header lines
and 5 columns, or ``Motor_Vib.mat`` / ``Motor_Aud.mat``) and MMSA (``mosi.pkl``, ``mosei.pkl``,
``sims.pkl`` with thuiar/MMSA's keys and dtypes). The content is synthetic (moving patterns
whose colour depends on the class, tones whose pitch depends on the class, feature sequences
whose mean follows the sentiment) so that a model can learn something from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["MMSA_SIZES", "make_epic_fixture", "make_hac_fixture", "make_hust_fixture",
           "make_mmsa_fixture", "mmsa_split", "synthetic_frames", "synthetic_tone", "write_jpegs",
           "write_mp4", "write_wav", "write_windowed_manifest"]


def synthetic_frames(n: int, height: int, width: int, label: int = 0, seed: int = 0,
                     start: int = 0) -> np.ndarray:
    """(n, height, width, 3) uint8 frames: smooth moving waves, hue set by ``label``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi, 3)
    frames = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        t = (start + k) * 0.1
        for c in range(3):
            wave = np.sin(xx / (3 + c + label) + yy / 5 + t * (c + 1) + phase[c])
            frames[k, ..., c] = np.clip(128 + 100 * wave + 10 * ((label + c) % 3), 0, 255)
    return frames


def synthetic_tone(seconds: float, rate: int = 16000, label: int = 0, seed: int = 0) -> np.ndarray:
    """A tone whose pitch depends on ``label``, plus noise; float in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * math.pi * (220 + 110 * label) * t)
    return np.clip(tone + rng.normal(0, 0.05, t.shape), -1, 1)


def write_jpegs(folder: Path, frames: np.ndarray, first_index: int, gray: bool = False,
                template: str = "frame_{:010d}.jpg") -> None:
    """Save frames as ``folder/template.format(first_index + k)`` JPEGs (grey: channel 0)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        image = Image.fromarray(frame[..., 0] if gray else frame, "L" if gray else "RGB")
        image.save(folder / template.format(first_index + k), quality=90)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """16-bit PCM mono wav (the EPIC recipe: ffmpeg ``-ac 1 -ar 16000 pcm_s16le``)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype="PCM_16")


def write_mp4(path: Path, frames: np.ndarray, fps: int = 24, gop: int | None = None) -> None:
    """H.264 (libx264 defaults unless ``gop`` is given) yuv420p mp4 of (n, h, w, 3) frames."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _timestamp(seconds: float) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def make_epic_fixture(root: str | Path, segments: int = 4, segment_frames: int = 70,
                      size: tuple[int, int] = (24, 40), domains: Sequence[str] = ("D1", "D2",
                                                                                  "D3"),
                      num_classes: int = 8, seed: int = 0) -> Path:
    """A tiny EPIC-Kitchens tree (see :mod:`merdg.datasets.epic_kitchens` for the layout).

    Each (domain, split) holds one video with ``segments`` back-to-back action segments of
    ``segment_frames`` RGB frames (60 fps), the matching half-rate u/v flow frames, a 16 kHz
    wav, and a split pickle with the MM-SADA columns. Labels cycle through the classes.
    """
    import pandas as pd

    root = Path(root)
    height, width = size
    participant = {"D1": "P08", "D2": "P01", "D3": "P22"}
    for d_index, domain in enumerate(domains):
        for s_index, split in enumerate(("train", "test")):
            video_id = f"{participant.get(domain, 'P99')}_{10 + s_index:02d}"
            total = segments * segment_frames + 2
            rgb_dir = root / "rgb" / split / domain / video_id
            frames = synthetic_frames(total, height, width, seed=seed + d_index)
            rows = []
            for k in range(segments):
                label = (k + d_index) % num_classes
                start, stop = 1 + k * segment_frames, 1 + (k + 1) * segment_frames
                frames[start - 1:stop - 1, ..., 0] //= (1 + label % 3)  # class-dependent tint
                rows.append(_epic_row(domain, video_id, k, start, stop, label))
            write_jpegs(rgb_dir, frames, first_index=1)
            flow = frames[::2]
            flow_dir = root / "flow" / split / domain / video_id
            write_jpegs(flow_dir / "u", flow[..., :1], first_index=1, gray=True)
            write_jpegs(flow_dir / "v", flow[..., 1:2], first_index=1, gray=True)
            seconds = total / 60.0 + 0.5
            write_wav(rgb_dir.parent / f"{video_id}.wav", synthetic_tone(seconds, seed=seed))
            split_dir = root / "MM-SADA_Domain_Adaptation_Splits"
            split_dir.mkdir(parents=True, exist_ok=True)
            _plain_frame(pd, rows).to_pickle(split_dir / f"{domain}_{split}.pkl")
    return root


def _plain_frame(pd, rows: list[dict]):
    """A DataFrame whose text columns and labels are numpy ``object`` arrays, as in the MM-SADA
    pickles (pandas 3 would otherwise store text as its string type, pyarrow-backed when pyarrow
    is installed, which the restricted unpickler refuses)."""
    frame = pd.DataFrame(rows)
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    frame = frame.astype({c: object for c in text})
    frame.columns = pd.Index(list(frame.columns), dtype=object)
    return frame


def _epic_row(domain: str, video_id: str, k: int, start: int, stop: int, label: int) -> dict:
    verbs = ["take", "put", "open", "close", "wash", "cut", "mix", "pour"]
    return {"uid": 1000 * int(domain[-1]) + k, "participant_id": video_id[:3],
            "video_id": video_id, "narration": f"{verbs[label % 8]} thing",
            "start_timestamp": _timestamp(start / 60.0), "stop_timestamp": _timestamp(stop / 60.0),
            "start_frame": start, "stop_frame": stop, "verb": verbs[label % 8],
            "verb_class": label}


def make_hac_fixture(root: str | Path, clips: int = 3, frames: int = 30,
                     size: tuple[int, int] = (24, 32), domains: Sequence[str] = ("human",
                                                                                 "animal",
                                                                                 "cartoon"),
                     num_classes: int = 7, seed: int = 0) -> Path:
    """A tiny HAC tree (see :mod:`merdg.datasets.hac` for the layout): per (domain, split)
    ``clips`` mp4 videos of ``frames`` frames at 24 fps with x/y flow videos and 16 kHz wavs,
    and the split csvs."""
    root = Path(root)
    height, width = size
    (root / "HAC_Splits").mkdir(parents=True, exist_ok=True)
    for d_index, domain in enumerate(domains):
        for split in ("train", "test"):
            lines = []
            for k in range(clips):
                label = (k + d_index) % num_classes
                name = f"{domain[:2]}{split}{k:03d}_000012_000022"
                rgb = synthetic_frames(frames, height, width, label, seed=seed + k + d_index)
                write_mp4(root / domain / "videos" / f"{name}.mp4", rgb)
                write_mp4(root / domain / "flow" / f"{name}_flow_x.mp4",
                          np.repeat(rgb[..., :1], 3, axis=-1))
                write_mp4(root / domain / "flow" / f"{name}_flow_y.mp4",
                          np.repeat(rgb[..., 1:2], 3, axis=-1))
                write_wav(root / domain / "audio" / f"{name}.wav",
                          synthetic_tone(frames / 24.0, label=label, seed=seed + k))
                lines.append(f"{name}.mp4,{label}\n")
            (root / "HAC_Splits" / f"HAC_{split}_only_{domain}.csv").write_text("".join(lines))
    return root


def write_windowed_manifest(root: str | Path, domains: int = 3, classes: int = 3,
                            recordings: int = 6, recording_steps: int = 320, window: int = 64,
                            hop: int = 16, channels: int = 3, group_column: bool = True,
                            tone_amplitude: float = 1.5, seed: int = 0) -> Path:
    """A manifest data set of overlapping windows cut from longer sensor recordings.

    Each (domain, class) has ``recordings`` recordings of ``recording_steps`` steps and
    ``channels`` channels: a class tone (frequency by class, ``tone_amplitude``), a recording
    signature (two sinusoids of random frequency and phase, amplitude 1, the same in every
    window of the recording), a per-domain offset and scale (the domain shift) and white noise
    (std 0.5). Windows of ``window`` steps every ``hop`` steps (75 % overlap by default) are
    the samples: ``accel/<id>.npy`` of shape (window, channels), with ids
    ``{domain}_{class}_r{recording}_w{window:03d}`` and, with ``group_column``, the recording
    ``{domain}_{class}_r{recording}`` as the ``group``.

    A random holdout of windows puts near-copies of training windows into validation (their
    recording signature gives the label away); holding out whole recordings does not.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "accel").mkdir(parents=True, exist_ok=True)
    t = np.arange(recording_steps)[:, None]  # (steps, 1)
    rows = []
    for d in range(domains):
        offset, scale = rng.normal(0, 0.5, channels), rng.uniform(0.7, 1.4)
        for c in range(classes):
            for r in range(recordings):
                tone = tone_amplitude * np.sin(2 * np.pi * (0.02 + 0.015 * c) * t
                                               + rng.uniform(0, 6.3, channels))
                signature = sum(np.sin(2 * np.pi * rng.uniform(0.01, 0.08, channels) * t
                                       + rng.uniform(0, 6.3, channels)) for _ in range(2))
                noise = rng.normal(0, 0.5, (recording_steps, channels))
                signal = (scale * (tone + signature + noise) + offset).astype(np.float32)
                group = f"d{d}_c{c}_r{r}"
                for w, start in enumerate(range(0, recording_steps - window + 1, hop)):
                    sid = f"{group}_w{w:03d}"
                    np.save(root / "accel" / f"{sid}.npy", signal[start:start + window])
                    row = {"sample_id": sid, "domain": f"d{d}", "label": f"c{c}",
                           "accel": f"accel/{sid}.npy"}
                    rows.append({**row, "group": group} if group_column else row)
    with open(root / "manifest.csv", "w", encoding="utf-8") as f:
        f.write(",".join(rows[0]) + "\n")
        f.writelines(",".join(row.values()) + "\n" for row in rows)
    return root


# --- HUST ----------------------------------------------------------------------------------
HUST_STATES = ("H", "BF", "BOW", "BROKEN", "MISAL", "UNBAL")
HUST_CONDITIONS = ("5HZ", "10HZ", "20HZ", "30HZ")


def _hust_recording(state: int, condition: int, rows: int, rng: np.random.Generator
                    ) -> np.ndarray:
    """(rows, 5): time, three vibration axes and sound; the health state sets the tones, the
    working condition their speed (the domain shift)."""
    t = np.arange(rows) / 1000.0
    speed = 1.0 + 0.04 * condition
    axes = [np.sin(2 * np.pi * (20 + 7 * state) * speed * t + k) * (1 + 0.2 * k)
            + 0.3 * rng.standard_normal(rows) for k in range(3)]
    sound = np.sin(2 * np.pi * (35 + 11 * state) * speed * t) + 0.4 * rng.standard_normal(rows)
    return np.stack([t, *axes, sound], axis=1)


def make_hust_fixture(root: str | Path, form: str = "txt", window: int = 64,
                      train_windows: int = 20, test_windows: int = 10, seed: int = 0) -> Path:
    """A tiny HUST release (see :mod:`merdg.datasets.hust`) in ``root``.

    ``form="txt"``: the 24 ``{STATE}_{WC}.txt`` files, header lines (beginning with the words
    the benchmark's parser skips: Title, Parameters, DAQ, Frequency, Channels, Time; the
    release's exact header text is not documented) then rows of 5 tab-separated numbers, as
    many as ``train_windows + test_windows`` windows of ``window`` samples need (read them with
    the same ``window``, ``train_windows``, ``test_windows`` dataset options).
    ``form="mat"``: ``Motor_Vib.mat`` and ``Motor_Aud.mat`` (``scipy.io.savemat``) with keys
    ``load{d}_train`` (window x 6 train_windows) and ``load{d}_test`` (window x 6 test_windows),
    one window per column, class-major, cut from the same recordings at consecutive starts.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    count = train_windows + test_windows
    rows = window + count - 1 + 8
    mats: dict[str, dict[str, list[np.ndarray]]] = {"vib": {}, "aud": {}}
    for c_index, condition in enumerate(HUST_CONDITIONS):
        for s_index, state in enumerate(HUST_STATES):
            data = _hust_recording(s_index, c_index, rows, rng)
            if form == "txt":
                header = [f"Title:\tHUST motor {state} at {condition}",
                          "Parameters:\tsynthetic fixture", "DAQ:\tmerdg.testing",
                          "Frequency:\t1000 Hz", f"Channels:\t5 ({rows} rows)",
                          "Time\tVibration X\tVibration Y\tVibration Z\tSound"]
                body = "\n".join("\t".join(f"{v:.6f}" for v in row) for row in data)
                (root / f"{state}_{condition}.txt").write_text("\n".join(header) + "\n" + body
                                                               + "\n")
                continue
            vibration, sound = np.linalg.norm(data[:, 1:4], axis=1), data[:, 4]
            for key, signal in (("vib", vibration), ("aud", sound)):
                cuts = np.stack([signal[i:i + window] for i in range(count)])  # (count, W)
                for split, part in (("train", cuts[:train_windows]),
                                    ("test", cuts[train_windows:])):
                    mats[key].setdefault(f"load{c_index + 1}_{split}", []).append(part)
    if form == "mat":
        from scipy.io import savemat

        for key, name in (("vib", "Motor_Vib.mat"), ("aud", "Motor_Aud.mat")):
            savemat(root / name, {k: np.vstack(v).T for k, v in mats[key].items()})
    elif form != "txt":
        raise ValueError(f"form must be 'txt' or 'mat', got {form!r}")
    return root


# --- MMSA ----------------------------------------------------------------------------------
MMSA_SIZES = {"mosi": (768, 5, 20), "mosei": (768, 74, 35), "sims": (768, 33, 709)}
"""thuiar/MMSA's feature sizes (text, audio, vision) per data set: a cross-data-set run needs
one extraction for all three (``docs/mmdg-bench.md``)."""


def mmsa_split(n: int, sizes: tuple[int, int, int], lengths: tuple[int, int, int],
               rng: np.random.Generator, label_scale: float = 3.0,
               name: str = "x") -> dict[str, object]:
    """One split of a thuiar/MMSA pickle: ``text``, ``audio``, ``vision`` (n, length, size)
    float32 zero-padded at the end, ``text_bert`` (n, 3, length) of token ids, mask and segment
    ids, ``audio_lengths`` / ``vision_lengths``, ``regression_labels`` (n,) float32 in
    [-label_scale, label_scale] (a few exactly 0), ``classification_labels``, ``id``,
    ``raw_text``, ``annotations``. The features of each step lean with the sentiment."""
    labels = np.round(rng.uniform(-label_scale, label_scale, n), 1).astype(np.float32)
    labels[::5] = 0.0  # some exactly 0: neither positive nor negative
    split: dict[str, object] = {}
    for key, size, length in zip(("text", "audio", "vision"), sizes, lengths):
        valid = rng.integers(max(length // 2, 1), length + 1, n)
        valid[0] = length
        features = rng.standard_normal((n, length, size)).astype(np.float32)
        features += 0.8 * (labels / label_scale)[:, None, None]
        features[np.arange(length)[None, :] >= valid[:, None]] = 0.0  # zero padding
        split[key] = features
        if key == "text":
            mask = (np.arange(length)[None, :] < valid[:, None]).astype(np.float32)
            ids = rng.integers(100, 2000, (n, length)).astype(np.float32) * mask
            split["text_bert"] = np.stack([ids, mask, np.zeros_like(mask)], axis=1)
        else:
            split[f"{key}_lengths"] = valid.astype(np.int64).tolist()
    split["regression_labels"] = labels
    split["classification_labels"] = np.sign(labels).astype(np.float32) + 1
    split["id"] = np.array([f"{name}$_${i}" for i in range(n)], dtype=object)
    split["raw_text"] = np.array([f"utterance {i}" for i in range(n)], dtype=object)
    split["annotations"] = np.array(["Negative" if v < 0 else "Neutral" if v == 0 else
                                     "Positive" for v in labels], dtype=object)
    return split


def make_mmsa_fixture(root: str | Path, sizes: tuple[int, int, int] = (16, 6, 5),
                      lengths: tuple[int, int, int] = (8, 10, 6),
                      counts: tuple[int, int, int] = (24, 12, 12),
                      per_dataset_sizes: bool = False, seed: int = 0) -> Path:
    """``mosi.pkl``, ``mosei.pkl`` and ``sims.pkl`` in ``root``: ``{"train", "valid", "test"}``
    of :func:`mmsa_split` (``counts`` samples each), as thuiar/MMSA-FET writes them (numpy
    arrays, lists and strings; pickle protocol 4). CH-SIMS' labels lie in [-1, 1].

    Args:
        sizes: Feature sizes (text, audio, vision) of every file (one consistent extraction,
            as the benchmark needs).
        per_dataset_sizes: Use thuiar/MMSA's own sizes per data set instead
            (:data:`MMSA_SIZES`): the standard pickles, which a cross-data-set run refuses.
    """
    import pickle

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(("mosi", "mosei", "sims")):
        rng = np.random.default_rng([seed, k])
        dims = MMSA_SIZES[name] if per_dataset_sizes else sizes
        scale = 1.0 if name == "sims" else 3.0
        data = {split: mmsa_split(n, dims, lengths, rng, scale, f"{name}_{split}")
                for split, n in zip(("train", "valid", "test"), counts)}
        with open(root / f"{name}.pkl", "wb") as f:
            pickle.dump(data, f, protocol=4)
    return root
