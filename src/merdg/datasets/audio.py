"""Audio clips of the paper's pipeline: a window of a wav file -> normalized log spectrogram.

The recipe is the one of the SimMMDG / MER-DG loaders (identical for EPIC-Kitchens and HAC, see
``docs/paper-setting.md``):

1. cut the window ``[t0, t1]`` seconds out of the wav, with the sample indices computed as
   ``round(t / duration * n_samples)``;
2. keep the first 160000 samples (10 s at 16 kHz); a shorter window is repeated periodically
   (``np.tile`` in the reference) up to 160000 samples; clip to [-1, 1];
3. ``scipy.signal.spectrogram(x, fs, nperseg=512, noverlap=353)`` with scipy's defaults
   (periodic Tukey(0.25) window, per-segment mean removal, one-sided PSD density scaling)
   -> 257 frequencies x 1004 frames;
4. ``log(S + 1e-7)``, then standardization by the map's own mean and std (+ 1e-9);
5. training only: uniform noise U(-0.05, 0.05) and 9 consecutive frequency rows set to 0,
   starting at a random row in [0, 247).

What differs from the reference, and why it does not change the result:

- the reference reads the whole wav (EPIC wavs hold a whole video, often many minutes) and then
  slices; :func:`read_wav_window` seeks and reads only the window (at most 160000 samples);
- the spectrogram is computed with torch instead of scipy (:func:`psd_spectrogram`); the
  FFT runs in float32 by default (5x faster with torch on CPU), the log and standardization in
  float64; the result matches scipy's to ~1e-5 (to rounding with a float64 FFT); tested.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "AUDIO_SAMPLES",
    "AudioReadError",
    "augment_spectrogram",
    "corrupt_waveform",
    "log_spectrogram",
    "psd_spectrogram",
    "read_wav_window",
    "spectrogram_shape",
    "tile_to_length",
    "tukey_window",
    "window_bounds",
]

AUDIO_SAMPLES = 160000  # 10 s at 16 kHz, the reference's fixed input length
NPERSEG = 512
NOVERLAP = 353
LOG_FLOOR = 1e-7
STD_EPS = 1e-9


class AudioReadError(OSError):
    """A wav file is missing, unreadable, or the requested window is empty."""


def spectrogram_shape(samples: int = AUDIO_SAMPLES, nperseg: int = NPERSEG,
                      noverlap: int = NOVERLAP) -> tuple[int, int]:
    """(frequencies, frames) of the spectrogram of ``samples`` samples: (257, 1004) by default."""
    return nperseg // 2 + 1, (samples - noverlap) // (nperseg - noverlap)


def window_bounds(t0: float, t1: float, n_samples: int, samplerate: float) -> tuple[int, int]:
    """Sample indices of the window ``[t0, t1]`` seconds, computed as the reference does
    (``round(t / duration * n)`` with numpy's round-half-to-even)."""
    duration = n_samples / samplerate
    start = int(np.round(t0 / duration * n_samples))
    stop = int(np.round(t1 / duration * n_samples))
    return start, stop


def read_wav_window(path: str, t0: float, t1: float,
                    max_samples: int = AUDIO_SAMPLES) -> tuple[np.ndarray, int]:
    """Read at most ``max_samples`` samples of ``path`` starting at ``t0`` seconds, up to ``t1``.

    Seeks into the file instead of reading it whole. Multi-channel files are averaged to mono
    (the reference assumes mono; EPIC and HAC wavs are mono).

    Returns:
        ``(samples, samplerate)``: float64 samples in [-1, 1) (possibly empty) and the rate.

    Raises:
        AudioReadError: The file is missing or unreadable (the message names it).
    """
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            n, sr = f.frames, f.samplerate
            start, stop = window_bounds(t0, t1, n, sr)
            start = min(max(start, 0), n)
            count = max(0, min(stop, n) - start)
            f.seek(start)
            data = f.read(min(count, max_samples), dtype="float64", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as err:
        raise AudioReadError(f"cannot read audio {path}: {err}") from err
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], sr


def tile_to_length(x: np.ndarray, length: int = AUDIO_SAMPLES) -> np.ndarray:
    """First ``length`` samples of ``x`` repeated periodically (the reference's ``np.tile`` loop).

    Raises:
        ValueError: ``x`` is empty (the reference loops forever on EPIC; HAC substitutes zeros,
            which the caller decides).
    """
    if x.size == 0:
        raise ValueError("cannot tile an empty audio window")
    return np.resize(x[:length], length)


def tukey_window(n: int, alpha: float = 0.25, dtype: torch.dtype = torch.float64) -> Tensor:
    """Periodic ("DFT-even") Tukey window of length ``n``: scipy's ``get_window(("tukey", alpha),
    n)``, i.e. the symmetric window of length ``n + 1`` without its last sample."""
    m = n + 1  # periodic: symmetric window of n + 1 points, last one dropped
    k = torch.arange(m, dtype=torch.float64)
    width = math.floor(alpha * (m - 1) / 2.0)
    w = torch.ones(m, dtype=torch.float64)
    rise = k[: width + 1]
    fall = k[m - width - 1:]
    w[: width + 1] = 0.5 * (1 + torch.cos(math.pi * (-1 + 2.0 * rise / alpha / (m - 1))))
    w[m - width - 1:] = 0.5 * (1 + torch.cos(math.pi * (-2.0 / alpha + 1
                                                        + 2.0 * fall / alpha / (m - 1))))
    return w[:n].to(dtype)


def psd_spectrogram(x: Tensor, fs: float, nperseg: int = NPERSEG, noverlap: int = NOVERLAP,
                    dtype: torch.dtype = torch.float64) -> Tensor:
    """``scipy.signal.spectrogram(x, fs, nperseg=nperseg, noverlap=noverlap)`` in torch.

    scipy's defaults: periodic Tukey(0.25) window, ``detrend="constant"`` (each segment's mean
    removed before windowing), no padding, one-sided power spectral density
    ``|rfft(w * (seg - mean))|^2 / (fs * sum(w^2))`` with the bins other than DC and Nyquist
    doubled.

    Segments are cut with ``unfold`` rather than :func:`torch.stft`, because the mean removal
    must happen per segment before windowing.

    Args:
        x: Signal, shape (n,), n >= nperseg; the segments are windowed and transformed in its
            dtype (torch's CPU FFT is about 5x faster in float32 than in float64).
        fs: Sampling rate.
        dtype: dtype of the result (the density scaling is applied in it).

    Returns:
        (nperseg // 2 + 1, frames) power spectral density.
    """
    window = tukey_window(nperseg, dtype=x.dtype)
    frames = x.unfold(0, nperseg, nperseg - noverlap)  # (T, nperseg), a view
    frames = (frames - frames.mean(dim=1, keepdim=True)) * window
    spectrum = torch.fft.rfft(frames, dim=1)  # (T, F)
    power = (spectrum.real.square() + spectrum.imag.square()).to(dtype)
    power *= 1.0 / (fs * float(window.double().square().sum()))
    power[:, 1:-1 if nperseg % 2 == 0 else None] *= 2.0  # one-sided: fold negative frequencies
    return power.T.contiguous()  # (F, T)


def log_spectrogram(samples: np.ndarray, samplerate: float, length: int = AUDIO_SAMPLES,
                    fft_dtype: torch.dtype = torch.float32) -> Tensor:
    """Steps 2-4 of the recipe (module docstring) on a non-empty window of samples.

    The segments are transformed in ``fft_dtype``; the power, the ``log(S + 1e-7)`` and the
    standardization are computed in float64 as the reference (in float32 the floor would
    swallow the power of quiet segments, which the standardization then amplifies). Against
    scipy's float64 result: ~1e-5 with a float32 FFT, rounding with a float64 FFT (tested).

    Args:
        samples: The window's samples (float, any length > 0).
        samplerate: Their rate (scales the PSD as scipy's density scaling does).
        length: Samples after tiling (160000).
        fft_dtype: Precision of the windowing and FFT.

    Returns:
        (1, 257, 1004) float32 standardized log spectrogram (channel first, as the audio
        network takes it).
    """
    # clipping before tiling is the same as after, on fewer samples
    x = tile_to_length(np.clip(samples[:length], -1.0, 1.0), length)
    # the per-segment mean removal cancels any constant; removing the global mean first (in
    # float64) keeps a DC offset from costing precision in a float32 FFT
    x = torch.from_numpy(x - x.mean()).to(fft_dtype)
    spec = psd_spectrogram(x, samplerate)  # (F, T) float64
    spec = torch.log_(spec + LOG_FLOOR)
    centered = spec - spec.mean()
    std = centered.square().mean().sqrt()  # population std, as np.std
    return (centered / (std + STD_EPS)).to(torch.float32).unsqueeze(0)


def corrupt_waveform(samples: np.ndarray, samplerate: float, corrupt) -> np.ndarray:
    """A window's samples after ``corrupt(waveform: Tensor (n,) float64, sample_rate=...)``
    (robustness evaluation, :mod:`merdg.evaluation`), before tiling, clipping to [-1, 1] and
    the spectrogram (step 1 of the recipe, so the clipping of step 2 also bounds the corrupted
    signal as an audio interface would)."""
    out = corrupt(torch.from_numpy(np.asarray(samples, dtype=np.float64)),
                  sample_rate=float(samplerate))
    if tuple(out.shape) != samples.shape:
        raise ValueError(f"an audio corruption changed the window's shape from {samples.shape} "
                         f"to {tuple(out.shape)}")
    return out.to(torch.float64).numpy()


def augment_spectrogram(spec: Tensor, noise: float = 0.05, mask_rows: int = 9,
                        mask_start_max: int = 256 - 9) -> Tensor:
    """Training augmentation: add U(-noise, noise) and zero ``mask_rows`` consecutive frequency
    rows starting at a random row in ``[0, mask_start_max)`` (the reference's
    ``np.random.choice(256 - 9)``). Uses torch's global generator (seeded per DataLoader worker).

    Args:
        spec: (1, F, T) spectrogram.
    """
    out = spec + (torch.rand(spec.shape) * 2.0 - 1.0) * noise
    start = int(torch.randint(0, mask_start_max, (1,)))
    out[:, start:start + mask_rows, :] = 0.0
    return out
