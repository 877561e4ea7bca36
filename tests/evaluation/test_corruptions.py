"""Corruption functions on hand-checkable inputs, and the properties every corruption has."""

import colorsys
import math

import pytest
import torch

from merdg.evaluation import (
    MISSING,
    SEVERITIES,
    check_severity,
    corruption_names,
    get_corruption,
    list_corruptions,
)
from merdg.evaluation.corruptions import correlate_frames, natural_cubic_spline

RATE = 16000


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def run(kind, name, x, severity, seed=0, **context):
    return get_corruption(kind, name)(x, severity, gen(seed), **context)


def sines(freqs, seconds=1.0, amplitude=0.1):
    t = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    return sum(amplitude * torch.sin(2 * math.pi * f * t) for f in freqs)


def texture(shape, seed=0):
    return torch.rand(shape, generator=gen(seed))


# one input per kind, its context, and the randomness-free corruptions
INPUTS = {
    # a static texture brightening over 32 frames: temporal corruptions change it too
    "video": (lambda: 0.6 * texture((3, 1, 24, 24)) + 0.4 * torch.linspace(0, 1, 32).view(
        1, 32, 1, 1), {}),
    "flow": (lambda: texture((2, 4, 24, 24)) - 0.5, {}),
    "audio": (lambda: sines([5000, 3000, 1500, 700, 350, 150]) + 0.01 * torch.randn(
        RATE, generator=gen(1), dtype=torch.float64), {"sample_rate": RATE}),
    "timeseries": (lambda: torch.randn(200, 3, generator=gen(2)).cumsum(0) * 0.1
                   + torch.tensor([1.0, -2.0, 0.5]), {"spread": torch.tensor([0.5, 1.0, 2.0])}),
    "array": (lambda: torch.randn(512, generator=gen(3)), {"spread": torch.ones(512) * 0.7}),
    # 40 tokens of 16 features, then 24 padded steps (zeros)
    "text": (lambda: torch.cat([torch.randn(40, 16, generator=gen(4)) + 3,
                                torch.zeros(24, 16)]), {"spread": torch.ones(16) * 0.5}),
}
DETERMINISTIC = {("video", "brightness"), ("video", "contrast"), ("video", "jpeg_compression"),
                 ("video", "defocus_blur"), ("flow", "magnitude_scaling"), ("audio", "gain"),
                 ("audio", "clipping"), ("audio", "band_limit"), ("array", "scaling")}
ALL = [(c.kind, c.name) for c in list_corruptions()]
GRADED = [(k, n) for k, n in ALL if n != MISSING]


# --- properties of every corruption ----------------------------------------------------------
@pytest.mark.parametrize(("kind", "name"), ALL)
def test_shape_dtype_kept_input_untouched_and_deterministic(kind, name):
    make, context = INPUTS[kind]
    x = make()
    before = x.clone()
    severity = 3 if name != MISSING else None
    a = run(kind, name, x, severity, seed=5, **context)
    b = run(kind, name, x, severity, seed=5, **context)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(x, before)  # pure: the input is not modified
    assert torch.equal(a, b)  # same generator seed, same output
    assert torch.isfinite(a).all()
    if name != MISSING:
        assert not torch.equal(a, x)  # severity 3 changes these inputs
    c = run(kind, name, x, severity, seed=6, **context)
    assert torch.equal(a, c) == ((kind, name) in DETERMINISTIC or name == MISSING)


@pytest.mark.parametrize(("kind", "name"), GRADED)
def test_distortion_grows_with_severity(kind, name):
    make, context = INPUTS[kind]
    x = make()
    distortion = [float((run(kind, name, x, s, **context) - x).abs().mean()) for s in SEVERITIES]
    assert all(a < b for a, b in zip(distortion, distortion[1:])), distortion


@pytest.mark.parametrize(("kind", "name"), GRADED)
@pytest.mark.parametrize("severity", [0, 6, 2.0, True, None, "3"])
def test_invalid_severity_is_named(kind, name, severity):
    make, context = INPUTS[kind]
    with pytest.raises(ValueError, match=r"severity must be an integer in 1\.\.5, got"):
        run(kind, name, make(), severity, **context)


def test_missing_is_zeros_for_every_kind_and_still_checks_severity():
    for kind, (make, _) in INPUTS.items():
        x = make()
        assert torch.equal(run(kind, MISSING, x, None), torch.zeros_like(x))
        assert torch.equal(run(kind, MISSING, x, 5), torch.zeros_like(x))
        with pytest.raises(ValueError, match="got 9"):
            run(kind, MISSING, x, 9)
        assert corruption_names(kind)[-1] == MISSING
        assert not get_corruption(kind, MISSING).graded


def test_registry_lookup_errors_list_the_kinds_names():
    with pytest.raises(ValueError, match="unknown timeseries corruption 'jpeg_compression'; "
                                         "timeseries corruptions: bias_drift, gaussian_noise"):
        get_corruption("timeseries", "jpeg_compression")
    with pytest.raises(ValueError, match="unknown modality kind 'image'"):
        get_corruption("image", "gaussian_noise")
    with pytest.raises(ValueError, match="unknown modality kind"):
        list_corruptions("image")
    assert check_severity(5) == 5
    every = list_corruptions()
    assert all(c.source and c.summary and c.parameter for c in every)
    assert all(len(c.levels) == 5 for c in every if c.name != MISSING)


# --- video (3, T, H, W) in [0, 1] ------------------------------------------------------------
def test_video_gaussian_and_shot_noise_statistics():
    x = torch.full((3, 4, 64, 64), 0.5)
    for severity, std in zip((1, 2), (0.08, 0.12)):
        noise = run("video", "gaussian_noise", x, severity) - x
        assert float(noise.std()) == pytest.approx(std, rel=0.03)
        assert abs(float(noise.mean())) < 0.005
    shot = run("video", "shot_noise", x, 1)  # Poisson(0.5 * 60) / 60
    assert float(shot.mean()) == pytest.approx(0.5, abs=0.005)
    assert float(shot.std()) == pytest.approx(math.sqrt(0.5 / 60), rel=0.03)
    assert torch.allclose(shot * 60, (shot * 60).round(), atol=1e-4)  # counts / 60
    assert run("video", "gaussian_noise", x, 5).min() >= 0


def test_video_brightness_matches_the_hsv_definition():
    pixels = [(0.3, 0.3, 0.3), (0.5, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
              (0.2, 0.6, 0.4), (0.9, 0.1, 0.55)]
    x = torch.tensor(pixels).T.reshape(3, 1, 1, len(pixels))
    for severity, c in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.4, 0.5)):
        out = run("video", "brightness", x, severity).reshape(3, -1).T
        for (r, g, b), got in zip(pixels, out):
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            expected = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
            assert got.tolist() == pytest.approx(expected, abs=1e-6)
    grey = run("video", "brightness", torch.full((3, 2, 4, 4), 0.3), 1)
    assert torch.allclose(grey, torch.full_like(grey, 0.4))


def test_video_contrast_pulls_toward_each_frames_channel_mean():
    x = torch.zeros(3, 2, 2, 2)
    x[:, :, 0] = 0.2
    x[:, :, 1] = 0.8  # per (channel, frame) mean 0.5
    out = run("video", "contrast", x, 1)  # c = 0.4
    assert torch.allclose(out[:, :, 0], torch.full_like(out[:, :, 0], 0.5 - 0.3 * 0.4))
    assert torch.allclose(out[:, :, 1], torch.full_like(out[:, :, 1], 0.5 + 0.3 * 0.4))


def test_blurs_keep_constant_frames_and_spread_an_impulse():
    flat = torch.full((3, 2, 40, 40), 0.25)
    for severity in SEVERITIES:
        assert torch.allclose(run("video", "motion_blur", flat, severity), flat, atol=1e-6)
    # ImageNet-C's disks of radius 8 and 10 touch their grid's edge: the anti-aliasing blur
    # (reflected borders) leaves those kernels summing to 1.013 and 1.011
    for severity, gain in zip(SEVERITIES, (1.0, 1.0, 1.0, 1.01298, 1.01079)):
        out = run("video", "defocus_blur", flat, severity)
        assert torch.allclose(out, flat * gain, atol=1e-5)
    impulse = torch.zeros(1, 1, 61, 61)
    impulse[0, 0, 30, 30] = 1.0
    disk = run("video", "defocus_blur", impulse.expand(3, 1, 61, 61), 3)[0, 0]  # radius 6
    assert float(disk.sum()) == pytest.approx(1.0, abs=1e-5)
    ys, xs = torch.nonzero(disk > 1e-4, as_tuple=True)
    assert int(((ys - 30) ** 2 + (xs - 30) ** 2).max()) <= (6 + 2) ** 2  # disk + anti-aliasing
    assert float(disk[30, 30]) == pytest.approx(float(disk[30, 33]), rel=1e-3)  # flat inside
    line = run("video", "motion_blur", impulse.expand(3, 1, 61, 61), 1)[0, 0]  # 21 taps
    assert float(line.sum()) == pytest.approx(1.0, abs=1e-5)
    assert 11 <= int((line > 1e-6).sum()) <= 21  # one pixel per tap (some taps share one)
    ys, xs = torch.nonzero(line > 1e-6, as_tuple=True)
    assert int(((ys - 30) ** 2 + (xs - 30) ** 2).max()) <= 20**2  # within the kernel's reach
    k0 = 1 / sum(math.exp(-j * j / 18) for j in range(21))  # tap 0 (sigma 3) lies on the pixel
    assert float(line[30, 30]) >= k0 - 1e-6


def test_fft_correlation_equals_a_direct_one():
    x = texture((3, 2, 20, 26))
    kernel = torch.rand(5, 9, generator=gen(4), dtype=torch.float64)
    for mode in ("reflect", "replicate"):
        padded = torch.nn.functional.pad(x.reshape(6, 1, 20, 26), (4, 4, 2, 2), mode=mode)
        direct = torch.nn.functional.conv2d(padded, kernel.float()[None, None])
        assert torch.allclose(correlate_frames(x, kernel, mode), direct.reshape(3, 2, 20, 26),
                              atol=1e-5)


def test_video_jpeg_compression_returns_decoded_uint8_pixels():
    pytest.importorskip("PIL")
    x = texture((3, 2, 32, 32))
    out = run("video", "jpeg_compression", x, 1)
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)
    assert float((out - x).abs().mean()) > 0.01


def test_video_frame_drop_freezes_the_exact_share_of_frames():
    t = 11
    x = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1).expand(3, t, 2, 2) / t
    for severity, dropped in zip(SEVERITIES, (1, 2, 3, 4, 5)):
        frames = (run("video", "frame_drop", x, severity)[0, :, 0, 0] * t).round().long()
        assert frames[0] == 0
        assert all(a <= b for a, b in zip(frames, frames[1:]))  # earlier frames only
        assert int((frames[1:] == frames[:-1]).sum()) == dropped


def test_video_temporal_jitter_stays_within_k_frames():
    t = 40
    x = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1).expand(3, t, 2, 2)
    for severity, k in zip(SEVERITIES, (1, 2, 3, 4, 6)):
        frames = run("video", "temporal_jitter", x, severity)[0, :, 0, 0]
        assert int((frames - torch.arange(t)).abs().max()) <= k
        assert torch.equal(frames.frac(), torch.zeros(t))  # whole frames, not blends


# --- flow (2, T, H, W) in [-1, 127/128] --------------------------------------------------------
def test_flow_corruptions_on_known_values():
    zero = torch.zeros(2, 4, 64, 64)
    noise = run("flow", "gaussian_noise", zero, 1)
    assert float(noise.std()) == pytest.approx(0.08 * 255 / 128, rel=0.03)
    x = torch.full((2, 1, 2, 2), 0.1)
    assert torch.allclose(run("flow", "magnitude_scaling", x, 1), x * 1.25)
    assert torch.allclose(run("flow", "magnitude_scaling", x * 5, 5), torch.full_like(x, 127 / 128))
    assert torch.allclose(run("flow", "magnitude_scaling", -x * 5, 5), torch.full_like(x, -1.0))
    ones = torch.full((2, 8, 32, 32), 0.5)
    for severity, p in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.4, 0.5)):
        out = run("flow", "dropout", ones, severity)
        assert torch.equal(out[0] == 0, out[1] == 0)  # u and v are lost together
        assert float((out[0] == 0).float().mean()) == pytest.approx(p, abs=0.02)


# --- audio (n,) in [-1, 1] --------------------------------------------------------------------
def test_audio_noise_has_the_requested_snr():
    x = sines([440], amplitude=0.5)
    for severity, snr in zip(SEVERITIES, (20, 15, 10, 5, 0)):
        noise = run("audio", "gaussian_noise", x, severity) - x
        measured = 10 * math.log10(float(x.square().mean()) / float(noise.square().mean()))
        assert measured == pytest.approx(snr, abs=0.2)
    silence = torch.zeros(100, dtype=torch.float64)
    assert torch.equal(run("audio", "gaussian_noise", silence, 5), silence)


def test_audio_gain_in_db_and_clipping_share():
    x = sines([440], amplitude=0.5)
    for severity, db in zip(SEVERITIES, (-10, -20, -30, -40, -50)):
        out = run("audio", "gain", x, severity)
        ratio = 20 * math.log10(float(out.square().mean().sqrt() / x.square().mean().sqrt()))
        assert ratio == pytest.approx(db, abs=1e-9)
    for severity, share in zip(SEVERITIES, (0.05, 0.1, 0.2, 0.3, 0.4)):
        out = run("audio", "clipping", x, severity)
        assert float((out != x).double().mean()) == pytest.approx(share, abs=0.01)
        assert float(out.max()) == pytest.approx(-float(out.min()), abs=1e-3)  # symmetric sine


def test_audio_time_mask_silences_one_segment_of_the_share():
    x = sines([440], amplitude=0.2) + 0.5  # never 0 by itself
    for severity, share in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.4, 0.5)):
        silent = torch.nonzero(run("audio", "time_mask", x, severity) == 0).flatten()
        assert len(silent) == round(share * RATE)
        assert int(silent[-1] - silent[0]) == len(silent) - 1  # contiguous


def test_audio_band_limit_removes_tones_above_the_cutoff():
    low, high = sines([500]), sines([6000])
    for severity in (1, 2, 3, 4):  # cutoffs 4000 .. 500 Hz keep the 500 Hz tone
        out = run("audio", "band_limit", low + high, severity, sample_rate=RATE)
        assert torch.allclose(out, low, atol=1e-9)
    assert torch.allclose(run("audio", "band_limit", low, 5, sample_rate=RATE),
                          torch.zeros(RATE, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(run("audio", "band_limit", high, 1, sample_rate=8000), high)  # Nyquist
    with pytest.raises(ValueError, match="needs the sample_rate"):
        run("audio", "band_limit", low, 1)


# --- time series (T, C) -------------------------------------------------------------------------
def test_timeseries_noise_scales_with_each_channels_spread():
    x = torch.zeros(20000, 2)
    spread = torch.tensor([1.0, 10.0])
    noise = run("timeseries", "gaussian_noise", x, 1, spread=spread)  # 20 dB: 0.1 spread
    assert noise.std(0).tolist() == pytest.approx([0.1, 1.0], rel=0.03)
    same = run("array", "gaussian_noise", torch.zeros(20000), 3, spread=2.0)  # 10 dB
    assert float(same.std()) == pytest.approx(2.0 * 10 ** (-0.5), rel=0.03)


def test_timeseries_bias_drift_is_a_linear_ramp():
    x = torch.zeros(5, 2)
    out = run("timeseries", "bias_drift", x, 3, spread=torch.tensor([2.0, 3.0]))  # b = 0.5
    assert out[0].tolist() == [0.0, 0.0]
    assert out[-1].abs().tolist() == pytest.approx([1.0, 1.5])
    assert torch.allclose(out[2], out[-1] / 2)


def test_spikes_hit_the_share_of_values_with_five_spreads():
    x = torch.zeros(4000, 2)
    for severity, share in zip(SEVERITIES, (0.01, 0.02, 0.05, 0.1, 0.2)):
        out = run("timeseries", "spikes", x, severity, spread=torch.tensor([1.0, 2.0]))
        hit = out != 0
        assert float(hit.float().mean()) == pytest.approx(share, abs=0.006)
        assert set(out[:, 0][hit[:, 0]].abs().tolist()) == {5.0}
        assert set(out[:, 1][hit[:, 1]].abs().tolist()) == {10.0}


def test_timeseries_sample_dropout_holds_the_last_step():
    t = 21
    x = torch.arange(t, dtype=torch.float32)[:, None].repeat(1, 3)
    for severity, share in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.5, 0.7)):
        out = run("timeseries", "sample_dropout", x, severity)
        assert torch.equal(out[:, 0], out[:, 2])  # all channels lose the same steps
        steps = out[:, 0]
        assert steps[0] == 0 and all(a <= b for a, b in zip(steps, steps[1:]))
        assert int((steps[1:] == steps[:-1]).sum()) == round(share * (t - 1))


def test_time_warp_keeps_endpoints_order_and_constants():
    t = 50
    ramp = torch.linspace(0.0, 1.0, t)[:, None].repeat(1, 2)
    for severity in SEVERITIES:
        out = run("timeseries", "time_warp", ramp, severity, seed=severity)
        assert float(out[0, 0]) == pytest.approx(0.0, abs=1e-6)
        assert float(out[-1, 0]) == pytest.approx(1.0, abs=1e-6)
        assert torch.all(out[1:] >= out[:-1] - 1e-6)  # time runs forward
        assert torch.equal(out[:, 0], out[:, 1])  # one clock for all channels
    flat = torch.full((t, 3), 2.5)
    assert torch.allclose(run("timeseries", "time_warp", flat, 5), flat)


def test_magnitude_warp_is_a_smooth_curve_around_one():
    ones = torch.ones(400, 3)
    curve = run("timeseries", "magnitude_warp", ones, 3)  # sigma 0.2
    assert float(curve.mean()) == pytest.approx(1.0, abs=0.25)
    assert float((curve[1:] - curve[:-1]).abs().max()) < 0.02  # smooth at 400 steps
    assert torch.equal(run("timeseries", "magnitude_warp", torch.zeros(40, 2), 5),
                       torch.zeros(40, 2))


def test_natural_cubic_spline_interpolates_and_reproduces_lines():
    knots = torch.linspace(0.0, 10.0, 6, dtype=torch.float64)
    values = torch.stack([2 * knots + 1, torch.sin(knots)], dim=1)
    at = torch.linspace(0.0, 10.0, 101, dtype=torch.float64)
    out = natural_cubic_spline(knots, values, at)
    assert torch.allclose(out[::20], values, atol=1e-12)  # through the knots
    assert torch.allclose(out[:, 0], 2 * at + 1, atol=1e-12)  # a line stays a line


# --- arrays ---------------------------------------------------------------------------------------
def test_array_dropout_scaling_and_spikes():
    x = torch.ones(20000)
    for severity, p in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.5, 0.7)):
        assert float((run("array", "dropout", x, severity) == 0).float().mean()) == \
            pytest.approx(p, abs=0.01)
    for severity, s in zip(SEVERITIES, (0.8, 0.6, 0.4, 0.2, 0.1)):
        assert torch.allclose(run("array", "scaling", x, severity), x * s)
    spiked = run("array", "spikes", torch.zeros(20000), 3, spread=0.5)
    assert float((spiked != 0).float().mean()) == pytest.approx(0.05, abs=0.005)
    assert set(spiked[spiked != 0].abs().tolist()) == {2.5}


# --- text: feature sequences, zero-padded ------------------------------------------------------
def test_text_noise_has_the_snr_and_leaves_the_padding_at_zero():
    make, context = INPUTS["text"]
    x = make()
    for severity, snr in zip(SEVERITIES, (20, 15, 10, 5, 0)):
        out = run("text", "gaussian_noise", x, severity, **context)
        assert torch.equal(out[40:], torch.zeros(24, 16))  # the padding mask is unchanged
        noise = (out - x)[:40]
        assert float(noise.std()) == pytest.approx(0.5 * 10 ** (-snr / 20), rel=0.1)


def test_text_token_drop_removes_the_share_keeps_the_first_and_the_order():
    x = torch.zeros(12, 2)
    x[:11, 0] = torch.arange(1.0, 12.0)  # 11 tokens numbered 1..11, one padded step
    x[:11, 1] = 1.0
    for severity, share in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.5, 0.7)):
        out = run("text", "token_drop", x, severity, seed=severity)
        kept = out[:, 0][out.abs().amax(1) > 0]
        assert len(kept) == 11 - round(share * 10)
        assert kept[0] == 1.0 and torch.all(kept[1:] > kept[:-1])  # first kept, in order
        assert set(kept.tolist()) <= set(range(1, 12))
        assert torch.equal(out[len(kept):], torch.zeros(12 - len(kept), 2))  # zeros after
    one = torch.zeros(5, 2)
    one[0] = 1.0
    assert torch.equal(run("text", "token_drop", one, 5), one)  # nothing to drop


def test_docs_table_and_text_table_list_every_corruption():
    from pathlib import Path

    from merdg.evaluation import corruption_table
    from merdg.evaluation.corruptions import format_levels

    docs = (Path(__file__).parents[2] / "docs" / "robustness.md").read_text()
    rows = {line for line in docs.splitlines() if line.startswith("| ")}
    text = corruption_table().splitlines()
    assert text[0].split()[:2] == ["kind", "name"] and len(text) == len(ALL) + 1
    for c in list_corruptions():
        row = (f"| {c.kind} | `{c.name}` | {c.summary} | {c.parameter}: {format_levels(c)} | "
               f"{c.source} |")
        assert row in rows, row
        assert any(line.split()[:2] == [c.kind, c.name] and format_levels(c) in line
                   for line in text)
    assert len(corruption_table("flow").splitlines()) == 1 + len(corruption_names("flow"))


# --- dtypes, the spline against SciPy, the table and the shared helpers ----------------------

@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, n in GRADED
                                             if (k, n) != ("video", "jpeg_compression")])
def test_float64_inputs_stay_float64_and_agree_with_float32(kind, name):
    make, context = INPUTS[kind]
    x = make()
    single = run(kind, name, x.float(), 3, **context)
    double = run(kind, name, x.double(), 3, **context)
    assert double.dtype == torch.float64 and single.dtype == torch.float32
    if "noise" not in name:  # Gaussian draws differ by dtype (another stream), the rest agree
        scale = x.double().abs().max()
        assert (double - single.double()).abs().max() <= 1e-4 * scale, (kind, name)


@pytest.mark.parametrize("k", [3, 4, 7])
def test_natural_cubic_spline_matches_scipy(k):
    interpolate = pytest.importorskip("scipy.interpolate")
    knots = 2.0 + 1.5 * torch.arange(k, dtype=torch.float64)  # evenly spaced, not from 0
    values = torch.randn(k, 2, generator=gen(k), dtype=torch.float64)
    at = torch.linspace(float(knots[0]), float(knots[-1]), 41, dtype=torch.float64)
    spline = interpolate.CubicSpline(knots.numpy(), values.numpy(), bc_type="natural")
    got = natural_cubic_spline(knots, values, at)
    assert torch.allclose(got, torch.from_numpy(spline(at.numpy())), atol=1e-12)


def test_corruption_table_header_and_alignment():
    from merdg.evaluation.corruptions import corruption_table

    lines = corruption_table("audio").splitlines()
    header = lines[0].split()
    assert header[:4] == ["kind", "name", "parameter", "severities"] and header[-1] == "source"
    widths = {line.index("  ", len("audio")) for line in lines}  # kind column padded alike
    assert len(widths) == 1
    assert all(line.startswith(("kind ", "audio ")) for line in lines)
    source_at = lines[0].index("source")
    assert all(line[source_at - 2:source_at] == "  " for line in lines[1:])


def test_spikes_have_both_signs():
    make, context = INPUTS["array"]
    x = make()
    delta = run("array", "spikes", x, 5, **context) - x
    hits = delta[delta != 0]
    assert (hits > 0).any() and (hits < 0).any()
    assert torch.allclose(hits.abs(), torch.full_like(hits.abs(), float(hits.abs()[0])))


def test_defocus_kernel_matches_imagenet_c_written_with_numpy():
    """ImageNet-C's disk: aliased disk on a grid of at least 17 x 17, normalized, then
    GaussianBlur with 3 x 3 taps up to radius 8 and 5 x 5 above (reflect-101 borders)."""
    np = pytest.importorskip("numpy")
    from merdg.evaluation.corruptions import _disk_kernel

    def reference(radius, sigma):
        half = max(8, radius)
        ax = np.arange(-half, half + 1)
        xx, yy = np.meshgrid(ax, ax)
        disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
        disk /= disk.sum()
        taps = 3 if radius <= 8 else 5
        k = np.arange(taps) - (taps - 1) / 2
        g = np.exp(-(k**2) / (2 * sigma**2))
        g /= g.sum()
        padded = np.pad(disk, taps // 2, mode="reflect")
        rows = sum(g[i] * padded[i:i + disk.shape[0], :] for i in range(taps))
        return sum(g[j] * rows[:, j:j + disk.shape[1]] for j in range(taps))

    for radius, sigma in [(3, 0.1), (8, 0.5), (9, 0.5), (10, 0.5)]:
        got = _disk_kernel(radius, sigma).numpy()
        assert np.allclose(got, reference(radius, sigma), atol=1e-12), radius


def test_default_spread_is_one():
    x = torch.randn(64, generator=gen(5))
    for kind, name in [("array", "gaussian_noise"), ("array", "spikes")]:
        assert torch.equal(run(kind, name, x, 3), run(kind, name, x, 3, spread=1.0))
        assert not torch.equal(run(kind, name, x, 3), run(kind, name, x, 3, spread=2.0))


def test_uniform_draws_stay_in_their_range():
    from merdg.evaluation.corruptions import _uniform

    draws = [_uniform(gen(s), -45.0, 45.0) for s in range(300)]
    assert -45.0 <= min(draws) < -40.0 and 40.0 < max(draws) <= 45.0


def test_the_last_step_can_be_dropped_too():
    x = torch.arange(50.0)[:, None] * torch.ones(1, 2)  # distinct steps
    held_last = [bool((run("timeseries", "sample_dropout", x, 5, seed=s)[-1] != x[-1]).all())
                 for s in range(30)]
    assert any(held_last) and not all(held_last)
