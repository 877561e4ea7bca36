"""Per-sample loading time of merdg's EPIC/HAC readers against the reference loaders' approach.

Builds realistic fixtures in a temporary folder, then times, interleaved on the same inputs:

- **audio** (EPIC: one wav per video): the reference reads the whole 10-minute 16 kHz wav with
  ``soundfile.read``, slices the segment, tiles it to 160000 samples and runs
  ``scipy.signal.spectrogram``; merdg seeks into the wav, reads only the window and computes
  the spectrogram with ``torch.stft``;
- **frames** (EPIC: a 60 fps folder of 456x256 JPEGs): both decode the 32 sampled JPEGs with
  Pillow; the reference then crops/normalizes frame by frame with numpy (as mmaction2's
  pipeline does per image), merdg on the stacked clip with torch;
- **video** (HAC: a 10 s, 24 fps, 340x256 H.264 mp4 made with libx264's defaults): the
  reference decodes the whole file to RGB arrays (``imageio.v3.imread(plugin="pyav")``, here
  with PyAV directly) and indexes the 32 sampled frames; merdg decodes from the last keyframe
  before the clip to its last frame and converts only the sampled frames.

Each pair of outputs is compared (maximum absolute difference). The evaluation pipeline (no
random augmentation) is timed so that outputs are comparable; training adds the same crop/flip
work to both. Times are per-sample medians of process CPU time (the cost on a machine whose
cores are all busy, and robust to other processes) and of wall time. The video is timed twice:
with libx264's default keyframe interval (one keyframe in the 10 s clip: the worst case, every
frame before the clip must be decoded) and with a 2 s keyframe interval.

Usage: OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py [--samples 20] [--workdir DIR]
Targets (issue 4): >= 5x faster per sample for audio and for HAC video, no slower for frames.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from merdg.datasets.audio import AUDIO_SAMPLES, log_spectrogram, read_wav_window
from merdg.datasets.video import (
    RGB_MEAN_STD,
    ClipTransform,
    VideoFile,
    read_jpeg_frames,
    sample_clip_indices,
)
from merdg.testing import (
    synthetic_frames,
    synthetic_tone,
    write_jpegs,
    write_mp4,
    write_wav,
)

WAV_SECONDS = 600
FRAME_SIZE = (256, 456)  # EPIC-55 frames
VIDEO_SIZE = (256, 340)  # Kinetics-style HAC clip, short side 256
VIDEO_SECONDS, VIDEO_FPS = 10, 24


# --- the reference loaders' approach ------------------------------------------------------
def reference_audio(path: str, t0: float, t1: float) -> np.ndarray:
    import soundfile as sf
    from scipy import signal

    samples, rate = sf.read(path)
    duration = len(samples) / rate
    start, stop = int(np.round(t0 / duration * len(samples))), int(np.round(t1 / duration
                                                                            * len(samples)))
    samples = samples[start:stop]
    resampled = samples[:AUDIO_SAMPLES]
    while len(resampled) < AUDIO_SAMPLES:
        resampled = np.tile(resampled, 10)[:AUDIO_SAMPLES]
    resampled = np.clip(resampled, -1.0, 1.0)
    _, _, spec = signal.spectrogram(resampled, rate, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    spec = (spec - spec.mean()) / (spec.std() + 1e-9)
    return spec.astype(np.float32)[None]


def _reference_eval_transform(frames: list[np.ndarray], crop: int = 224) -> np.ndarray:
    """mmaction2's evaluation pipeline frame by frame (short side already 256: no resize)."""
    mean = np.array(RGB_MEAN_STD[0], np.float32)
    std_inv = (1.0 / np.array(RGB_MEAN_STD[1], np.float64)).astype(np.float32)  # as mmcv
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        top, left = (h - crop) // 2, (w - crop) // 2
        patch = frame[top:top + crop, left:left + crop].astype(np.float32)
        out.append((patch - mean) * std_inv)
    return np.stack(out).transpose(3, 0, 1, 2)  # (C, T, H, W)


def reference_frames(folder: Path, indices: list[int]) -> np.ndarray:
    from PIL import Image

    frames = []
    for i in indices:
        with Image.open(folder / f"frame_{i:010d}.jpg") as image:
            frames.append(np.array(image.convert("RGB")))
    return _reference_eval_transform(frames)


def reference_video(path: str, indices: list[int]) -> np.ndarray:
    import av

    with av.open(path) as container:
        video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return _reference_eval_transform([video[i] for i in indices])


# --- merdg ------------------------------------------------------------------------------
EVAL = ClipTransform(train=False)


def ours_audio(path: str, t0: float, t1: float) -> np.ndarray:
    samples, rate = read_wav_window(path, t0, t1)
    return log_spectrogram(samples, rate).numpy()


def ours_frames(folder: Path, indices: list[int]) -> np.ndarray:
    frames = read_jpeg_frames([str(folder / f"frame_{i:010d}.jpg") for i in indices])
    return EVAL(frames).numpy()


def ours_video(path: str, indices: list[int]) -> np.ndarray:
    with VideoFile(path) as video:
        return EVAL(video.frames(indices)).numpy()


# --- fixtures and timing ------------------------------------------------------------------
def build_fixtures(workdir: Path, n_frames: int) -> dict[str, Path]:
    start = time.perf_counter()
    wav = workdir / "P01_01.wav"
    write_wav(wav, synthetic_tone(WAV_SECONDS, label=3))
    frames = workdir / "rgb" / "P01_01"
    write_jpegs(frames, synthetic_frames(n_frames, *FRAME_SIZE, label=1), first_index=1)
    video = synthetic_frames(VIDEO_SECONDS * VIDEO_FPS, *VIDEO_SIZE, label=2)
    mp4, mp4_gop = workdir / "clip.mp4", workdir / "clip_gop48.mp4"
    write_mp4(mp4, video, fps=VIDEO_FPS)
    write_mp4(mp4_gop, video, fps=VIDEO_FPS, gop=2 * VIDEO_FPS)
    print(f"fixtures built in {time.perf_counter() - start:.1f} s: {wav.stat().st_size / 1e6:.1f}"
          f" MB wav ({WAV_SECONDS} s, 16 kHz), {n_frames} JPEG frames "
          f"{FRAME_SIZE[1]}x{FRAME_SIZE[0]}, mp4 {VIDEO_SECONDS} s {VIDEO_FPS} fps "
          f"{VIDEO_SIZE[1]}x{VIDEO_SIZE[0]} with libx264 defaults (keyframes at "
          f"{_keyframes(mp4)}) and with a 2 s GOP (keyframes at {_keyframes(mp4_gop)})")
    return {"wav": wav, "frames": frames, "mp4": mp4, "mp4_gop": mp4_gop}


def _keyframes(path: Path) -> list[int]:
    with VideoFile(str(path)) as video:
        return sorted(video.rank[p.pts] for p in video.packets if p.is_keyframe)


def compare(name: str, reference, ours, cases: list[tuple]) -> dict[str, float]:
    """Interleaved timing of ``reference(*case)`` and ``ours(*case)`` (process CPU time and
    wall time, medians over cases); largest absolute difference of the outputs."""
    times: dict[str, list[float]] = {"ref_cpu": [], "our_cpu": [], "ref_wall": [], "our_wall": []}
    diff = 0.0
    for case in cases:
        outputs = []
        for key, fn in (("ref", reference), ("our", ours)):
            wall, cpu = time.perf_counter(), time.process_time()
            outputs.append(fn(*case))
            times[f"{key}_cpu"].append(time.process_time() - cpu)
            times[f"{key}_wall"].append(time.perf_counter() - wall)
        diff = max(diff, float(np.abs(outputs[0] - outputs[1]).max()))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    result = {**med, "cpu_ratio": med["ref_cpu"] / med["our_cpu"],
              "wall_ratio": med["ref_wall"] / med["our_wall"], "diff": diff}
    print(f"{name:12s} CPU ms: reference {med['ref_cpu']:7.1f}  merdg {med['our_cpu']:7.1f}  "
          f"ratio {result['cpu_ratio']:5.1f}x | wall ms: {med['ref_wall']:7.1f} vs "
          f"{med['our_wall']:7.1f}  ratio {result['wall_ratio']:5.1f}x | max |diff| {diff:.1e}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="samples per modality")
    parser.add_argument("--workdir", help="where to build the fixtures (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        paths = build_fixtures(workdir, n_frames=600)
        audio_cases = [(str(paths["wav"]), t0, t0 + rng.uniform(0.5, 3.0))
                       for t0 in rng.uniform(0, WAV_SECONDS - 5, args.samples)]
        frame_cases = [(paths["frames"], (1 + sample_clip_indices(600, 32, 2, True)).tolist())
                       for _ in range(args.samples)]
        n_video = VIDEO_SECONDS * VIDEO_FPS
        clips = [(sample_clip_indices(n_video - 1, 32, 2, True) - 1).clamp(0).tolist()
                 for _ in range(args.samples)]
        print(f"per-sample loading, {args.samples} samples each, evaluation pipeline:")
        results = {
            "audio": compare("audio", reference_audio, ours_audio, audio_cases),
            "frames": compare("frames", reference_frames, ours_frames, frame_cases),
            "video": compare("video", reference_video, ours_video,
                             [(str(paths["mp4"]), c) for c in clips]),
            "video_gop48": compare("video 2s GOP", reference_video, ours_video,
                                   [(str(paths["mp4_gop"]), c) for c in clips]),
        }
    targets = {"audio": 5.0, "video": 5.0, "frames": 1.0}
    for key, target in targets.items():
        cpu, wall = results[key]["cpu_ratio"], results[key]["wall_ratio"]
        verdict = "met" if min(cpu, wall) >= target else "NOT met"
        print(f"target {key} >= {target:g}x: {verdict} (CPU {cpu:.1f}x, wall {wall:.1f}x)")


if __name__ == "__main__":
    main()
