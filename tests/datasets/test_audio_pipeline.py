"""The audio recipe against scipy and against reading the whole wav (the reference loaders)."""

import numpy as np
import pytest
import torch

from merdg.datasets.audio import (
    AudioReadError,
    augment_spectrogram,
    log_spectrogram,
    psd_spectrogram,
    read_wav_window,
    spectrogram_shape,
    tile_to_length,
    tukey_window,
)
from merdg.testing import write_wav

signal = pytest.importorskip("scipy.signal")


def reference_log_spectrogram(samples, rate):
    """The reference loaders' steps, transcribed (tile loop, scipy, log, standardize)."""
    x = samples[:160000]
    while len(x) < 160000:
        x = np.tile(x, 10)[:160000]
    x = np.clip(x, -1.0, 1.0)
    _, _, spec = signal.spectrogram(x, rate, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    return ((spec - spec.mean()) / (spec.std() + 1e-9)).astype(np.float32)


def test_window_and_psd_match_scipy():
    assert np.array_equal(tukey_window(512).numpy(), signal.get_window(("tukey", 0.25), 512))
    x = np.random.default_rng(0).normal(0.1, 0.3, 160000)
    _, _, expected = signal.spectrogram(x, 16000, nperseg=512, noverlap=353)
    ours = psd_spectrogram(torch.from_numpy(x), 16000).numpy()
    assert ours.shape == expected.shape == spectrogram_shape() == (257, 1004)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-20)


@pytest.mark.parametrize("kind", ["noise", "tone", "quiet", "dc_offset", "clipped", "long"])
def test_log_spectrogram_matches_reference(kind):
    rng = np.random.default_rng(1)
    t = np.arange(30000) / 16000
    samples = {"noise": rng.normal(0, 0.3, 24000), "tone": 0.4 * np.sin(2 * np.pi * 440 * t),
               "quiet": 1e-4 * rng.normal(size=5000), "dc_offset": 0.5 + 1e-3 * rng.normal(
                   size=8000), "clipped": rng.normal(0, 2, 30000),
               "long": rng.normal(0, 0.1, 200000)}[kind]
    expected = reference_log_spectrogram(samples, 16000)
    fast = log_spectrogram(samples, 16000)
    exact = log_spectrogram(samples, 16000, fft_dtype=torch.float64)
    assert fast.shape == (1, 257, 1004) and fast.dtype == torch.float32
    assert np.abs(fast[0].numpy() - expected).max() < 1e-4
    assert np.abs(exact[0].numpy() - expected).max() < 1e-5


def test_tiling_is_the_reference_loop():
    x = np.arange(7.0)
    expected = x
    while len(expected) < 50:
        expected = np.tile(expected, 10)[:50]
    assert np.array_equal(tile_to_length(x, 50), expected)
    with pytest.raises(ValueError, match="empty"):
        tile_to_length(np.zeros(0), 50)


def test_window_read_equals_whole_file_slice(tmp_path):
    import soundfile as sf

    rate = 16000
    samples = np.random.default_rng(2).uniform(-0.9, 0.9, 5 * rate)
    path = tmp_path / "P01_01.wav"
    write_wav(path, samples, rate)
    whole, _ = sf.read(path)
    duration = len(whole) / rate
    for t0, t1 in [(0.0, 1.5), (1.23, 2.61), (4.5, 6.0), (0.0, 20.0), (3.99, 4.0)]:
        start = int(np.round(t0 / duration * len(whole)))
        stop = int(np.round(t1 / duration * len(whole)))
        expected = whole[start:stop][:160000]
        ours, got_rate = read_wav_window(str(path), t0, t1)
        assert got_rate == rate and np.array_equal(ours, expected), (t0, t1)
    empty, _ = read_wav_window(str(path), 6.0, 7.0)  # after the end of the file
    assert empty.size == 0
    with pytest.raises(AudioReadError, match="nope.wav"):
        read_wav_window(str(tmp_path / "nope.wav"), 0, 1)


def test_stereo_is_averaged(tmp_path):
    import soundfile as sf

    left, right = np.full(1000, 0.5), np.full(1000, -0.25)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    mono, _ = read_wav_window(str(tmp_path / "s.wav"), 0.0, 0.05)
    assert np.allclose(mono, 0.125)


def test_augmentation_noise_and_frequency_mask():
    torch.manual_seed(0)
    spec = torch.ones(1, 257, 1004)
    out = augment_spectrogram(spec)
    zero_rows = (out[0] == 0).all(dim=1).nonzero().flatten().tolist()
    assert len(zero_rows) == 9 and zero_rows == list(range(zero_rows[0], zero_rows[0] + 9))
    assert 0 <= zero_rows[0] < 247
    kept = out[0][[r for r in range(257) if r not in zero_rows]]
    assert (kept - 1).abs().max() <= 0.05 and (kept - 1).abs().max() > 0.04
    assert torch.equal(spec, torch.ones(1, 257, 1004))  # the input is not modified
