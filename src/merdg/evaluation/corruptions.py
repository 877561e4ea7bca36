"""Corruptions for robustness evaluation: one registry per modality kind, 5 severities each.

Every corruption is a small pure function ``fn(x, severity, generator, **context) -> Tensor`` on
ONE sample of one modality, in the value convention of its kind (``docs/robustness.md``):

- ``"video"``: RGB frames (3, T, H, W) in [0, 1] (ImageNet-C's ``x / 255``);
- ``"flow"``: optical flow (2, T, H, W) in [-1, 127/128], 0 = no motion (the 8-bit flow images
  of EPIC-Kitchens and HAC, ``(p - 128) / 128``);
- ``"audio"``: a mono waveform (n,) in [-1, 1]; context ``sample_rate`` (Hz);
- ``"timeseries"``: a (T, C) sequence in the dataset's units; context ``spread``, the source
  domains' std per channel (broadcastable to the sample);
- ``"array"``: any array in the dataset's units; context ``spread`` likewise;
- ``"text"``: a feature sequence (T, D) as read, padded steps exactly 0 (they stay 0); context
  ``spread``, the source domains' std per feature over the valid steps.

plus ``"missing"`` for every kind, which zero-fills the network's input (see
:data:`MISSING`). All randomness comes from ``generator`` (nothing touches the global random
state), inputs are never modified in place, and the output has the input's shape and dtype.
Severity parameters are written as data (:attr:`Corruption.levels`), ImageNet-C style
(Hendrycks & Dietterich, ICLR 2019, arXiv 1903.12261). Where no published ladder exists the
docstring says that the ladder is ours.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from merdg.datasets.base import MODALITY_KINDS
from merdg.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "MISSING",
    "SEVERITIES",
    "Corruption",
    "check_severity",
    "corruption_names",
    "corruption_table",
    "get_corruption",
    "list_corruptions",
]

SEVERITIES = (1, 2, 3, 4, 5)
MISSING = "missing"

CorruptionFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        kind: The modality kind it applies to.
        name: Its name (the same name may exist for several kinds, e.g. ``gaussian_noise``).
        fn: ``fn(x, severity, generator, **context) -> Tensor``.
        parameter: What :attr:`levels` hold, with units.
        levels: The parameter at severities 1..5 (empty for ungraded corruptions).
        summary: One line: what it does.
        source: Where the definition and the ladder come from.
        on_input: Applied to the network's input rather than to the kind's values
            (``"missing"``).
    """

    kind: str
    name: str
    fn: CorruptionFn
    parameter: str
    levels: tuple[Any, ...]
    summary: str
    source: str
    on_input: bool = False

    @property
    def graded(self) -> bool:
        """Whether the severity changes anything (False for ``"missing"``)."""
        return bool(self.levels)

    def __call__(self, x: Tensor, severity: int | None, generator: torch.Generator,
                 **context: Any) -> Tensor:
        return self.fn(x, severity, generator, **context)


CORRUPTIONS: dict[str, Registry[Corruption]] = {
    kind: Registry(f"{kind} corruption") for kind in MODALITY_KINDS}
"""``{kind: Registry of Corruption}``; add one with :func:`register`."""


def register(kind: str, name: str, parameter: str, levels: Sequence[Any], summary: str,
             source: str, on_input: bool = False) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator: register ``fn`` as corruption ``name`` of ``kind`` with its severity table."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown modality kind {kind!r}; kinds: {list(MODALITY_KINDS)}")
    if levels and len(levels) != len(SEVERITIES):
        raise ValueError(f"{kind} corruption {name!r}: {len(levels)} levels, need "
                         f"{len(SEVERITIES)}")

    def decorator(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[kind].add(name, Corruption(kind, name, fn, parameter, tuple(levels),
                                               summary, source, on_input))
        return fn

    return decorator


def get_corruption(kind: str, name: str) -> Corruption:
    """The corruption ``name`` of ``kind``.

    Raises:
        ValueError: Unknown kind, or a name that ``kind`` does not have (the message lists the
            names it has).
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown modality kind {kind!r}; kinds: {list(MODALITY_KINDS)}")
    if name not in CORRUPTIONS[kind]:
        raise ValueError(f"unknown {kind} corruption {name!r}; {kind} corruptions: "
                         f"{', '.join(corruption_names(kind))}")
    return CORRUPTIONS[kind].get(name)


def corruption_names(kind: str) -> list[str]:
    """Names of ``kind``'s corruptions, sorted, ``"missing"`` last."""
    names = CORRUPTIONS[kind].names()
    return [n for n in names if n != MISSING] + [n for n in names if n == MISSING]


def list_corruptions(kind: str | None = None) -> list[Corruption]:
    """Every corruption (of ``kind``, or of every kind in :data:`MODALITY_KINDS` order)."""
    kinds = MODALITY_KINDS if kind is None else (kind,)
    for k in kinds:
        if k not in CORRUPTIONS:
            raise ValueError(f"unknown modality kind {k!r}; kinds: {list(MODALITY_KINDS)}")
    return [CORRUPTIONS[k].get(n) for k in kinds for n in corruption_names(k)]


def format_levels(corruption: Corruption) -> str:
    """The severity table as text: ``"0.08, 0.12, 0.18, 0.26, 0.38"`` (``"-"`` if ungraded)."""
    if not corruption.graded:
        return "-"
    return ", ".join(str(v).replace(" ", "") if isinstance(v, tuple) else f"{v:g}"
                     for v in corruption.levels)


def corruption_table(kind: str | None = None) -> str:
    """A text table of the corruptions (of ``kind``): kind, name, parameter, severities 1..5,
    source (``merdg list corruptions``)."""
    rows = [("kind", "name", "parameter", "severities 1..5", "source")]
    rows += [(c.kind, c.name, c.parameter, format_levels(c), c.source)
             for c in list_corruptions(kind)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join([*(v.ljust(w) for v, w in zip(r[:4], widths)), r[4]])
                     for r in rows)


def check_severity(severity: Any) -> int:
    """``severity`` as an int in 1..5.

    Raises:
        ValueError: Anything else (the message gives the value and the allowed range).
    """
    if isinstance(severity, bool) or not isinstance(severity, int) or \
            severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in {SEVERITIES[0]}..{SEVERITIES[-1]}, "
                         f"got {severity!r}")
    return severity


def _level(levels: Sequence[Any], severity: Any) -> Any:
    return levels[check_severity(severity) - 1]


def _randn(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws shaped like ``x``, in its (floating) dtype."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _spread(context: dict[str, Any], x: Tensor) -> Tensor:
    spread = context.get("spread", 1.0)
    return torch.as_tensor(spread, dtype=x.dtype)


def _snr_sigma(snr_db: float) -> float:
    """Noise std relative to the signal's scale for a signal-to-noise ratio in dB."""
    return 10.0 ** (-snr_db / 20.0)


# --- shared tables ------------------------------------------------------------------------
IMAGENET_C = "ImageNet-C, arXiv 1903.12261 (make_imagenet_c.py)"
GAUSSIAN_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)  # ImageNet-C gaussian_noise, [0, 1] scale
SNR_DB = (20.0, 15.0, 10.0, 5.0, 0.0)  # Aurora-2's SNR ladder (Hirsch & Pearce, ISCA ASR 2000)
AURORA = "SNRs of Aurora-2 (Hirsch & Pearce, ASR2000)"
UM_2017 = "Um et al. 2017, arXiv 1706.00527"
SCHIAPPA = "temporal perturbations of Schiappa et al., arXiv 2207.01398; ladder ours"


# --- video: (3, T, H, W) RGB in [0, 1] ----------------------------------------------------
@register("video", "gaussian_noise", "noise std ([0, 1] scale)", GAUSSIAN_NOISE_STD,
          "additive Gaussian noise per pixel, clipped to [0, 1]", IMAGENET_C)
def video_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator,
                         **context: Any) -> Tensor:
    """ImageNet-C ``gaussian_noise`` (arXiv 1903.12261, appendix; make_imagenet_c.py):
    ``clip(x + N(0, c^2), 0, 1)``."""
    c = _level(GAUSSIAN_NOISE_STD, severity)
    return (x + c * _randn(x, generator)).clamp(0.0, 1.0)


SHOT_PHOTONS = (60, 25, 12, 5, 3)


@register("video", "shot_noise", "photons per unit intensity", SHOT_PHOTONS,
          "Poisson (photon) noise, clipped to [0, 1]", IMAGENET_C)
def video_shot_noise(x: Tensor, severity: int, generator: torch.Generator,
                     **context: Any) -> Tensor:
    """ImageNet-C ``shot_noise`` (arXiv 1903.12261): ``clip(Poisson(x c) / c, 0, 1)``."""
    c = _level(SHOT_PHOTONS, severity)
    rate = (x.to(torch.float64) * c).clamp(min=0.0)
    return (torch.poisson(rate, generator=generator) / c).clamp(0.0, 1.0).to(x.dtype)


DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))


@register("video", "defocus_blur", "(disk radius px, anti-alias sigma px)", DEFOCUS,
          "each frame convolved with an anti-aliased disk", IMAGENET_C)
def video_defocus_blur(x: Tensor, severity: int, generator: torch.Generator,
                       **context: Any) -> Tensor:
    """ImageNet-C ``defocus_blur`` (arXiv 1903.12261): a disk kernel of the given radius
    (on a grid of at least 17 x 17), smoothed by a Gaussian of ``sigma`` (3 x 3 taps, 5 x 5
    above radius 8), applied to every frame. Radii are in pixels, as ImageNet-C's at 224 x 224
    (the paper's clips are 224 x 224). As in ImageNet-C, the smoothing reflects the disks of
    radius 8 and 10, which touch their grid's edge, so those kernels sum to 1.013 and 1.011 and
    brighten the frame by that factor. Borders: reflected where the frame is larger than the
    kernel (as OpenCV's default), else replicated."""
    radius, alias = _level(DEFOCUS, severity)
    kernel = _disk_kernel(radius, alias)
    h, w = x.shape[-2:]
    mode = "reflect" if kernel.shape[-1] // 2 < min(h, w) else "replicate"
    return correlate_frames(x, kernel, mode).clamp(0.0, 1.0)


def _disk_kernel(radius: int, alias_blur: float) -> Tensor:
    """ImageNet-C's ``disk``: normalized aliased disk, then a small Gaussian blur."""
    half = max(8, radius)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).to(torch.float64)
    disk /= disk.sum()
    taps = 3 if radius <= 8 else 5
    g = _gaussian_taps(taps, alias_blur)
    padded = F.pad(disk[None, None], (taps // 2,) * 4, mode="reflect")
    smooth = F.conv2d(padded, (g[:, None] * g[None, :])[None, None])
    return smooth[0, 0]


def _gaussian_taps(taps: int, sigma: float) -> Tensor:
    """OpenCV's ``getGaussianKernel(taps, sigma)``: normalized samples of a Gaussian."""
    k = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def correlate_frames(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Every (channel, frame) image of ``x`` (C, T, H, W) correlated with ``kernel`` (kh, kw),
    odd sizes, centered: ``out[y, x] = sum k[i, j] in[y + i - kh // 2, x + j - kw // 2]``, the
    borders padded by ``mode`` (``"reflect"``, ``"replicate"``). Computed with FFTs (blur kernels
    reach 41 taps; a direct convolution costs seconds per clip on a CPU core)."""
    c, t, h, w = x.shape
    kh, kw = kernel.shape
    images = F.pad(x.reshape(c * t, h, w).to(torch.float32)[:, None],
                   (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)[:, 0]  # (N, H', W')
    size = images.shape[-2:]
    flipped = kernel.flip(0, 1).to(torch.float32)
    spectrum = torch.fft.rfft2(images, s=size) * torch.fft.rfft2(flipped, s=size)
    full = torch.fft.irfft2(spectrum, s=size)  # circular; rows/cols kh-1.. are wrap-free
    return full[:, kh - 1:kh - 1 + h, kw - 1:kw - 1 + w].reshape(c, t, h, w).to(x.dtype)


MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))


@register("video", "motion_blur", "(radius px, sigma px); angle ~ U(-45, 45) deg per clip",
          MOTION, "one-sided Gaussian-weighted line blur along a random direction",
          IMAGENET_C + ", via ImageMagick's MotionBlurImage")
def video_motion_blur(x: Tensor, severity: int, generator: torch.Generator,
                      **context: Any) -> Tensor:
    """ImageNet-C ``motion_blur`` (arXiv 1903.12261), which calls ImageMagick's
    ``MotionBlurImage(radius, sigma, angle)`` with ``angle ~ U(-45, 45)``: ``2 ceil(radius) + 1``
    taps at offsets ``j (cos a, sin a)``, j = 0 .. 2 radius (rounded to pixels), weights
    ``exp(-j^2 / 2 sigma^2)`` normalized; pixels outside the frame repeat the edge (ImageMagick's
    default virtual pixels). One angle per clip (a camera shake lasting the clip)."""
    radius, sigma = _level(MOTION, severity)
    angle = math.radians(_uniform(generator, -45.0, 45.0))
    width = 2 * math.ceil(radius) + 1
    j = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(j**2) / (2 * sigma**2))
    weights /= weights.sum()
    dx = [math.ceil(k * math.cos(angle) - 0.5) for k in range(width)]
    dy = [math.ceil(k * math.sin(angle) - 0.5) for k in range(width)]
    px, py = max(abs(v) for v in dx), max(abs(v) for v in dy)
    kernel = torch.zeros(2 * py + 1, 2 * px + 1, dtype=torch.float64)
    for ox, oy, wj in zip(dx, dy, weights.tolist()):
        kernel[py + oy, px + ox] += wj  # out[y, x] = sum_j w_j in[y + dy_j, x + dx_j]
    return correlate_frames(x, kernel, "replicate").clamp(0.0, 1.0)


BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)


@register("video", "brightness", "added to HSV value", BRIGHTNESS,
          "HSV value (brightness) raised, clipped to [0, 1]", IMAGENET_C)
def video_brightness(x: Tensor, severity: int, generator: torch.Generator,
                     **context: Any) -> Tensor:
    """ImageNet-C ``brightness`` (arXiv 1903.12261): RGB -> HSV, ``V <- clip(V + c, 0, 1)``,
    -> RGB. Computed without the HSV round trip: with hue and saturation fixed, every RGB
    channel is proportional to V, so the pixel is scaled by ``V' / V`` (a black pixel, whose
    saturation is 0, becomes grey ``V'``)."""
    c = _level(BRIGHTNESS, severity)
    value = x.amax(dim=0, keepdim=True)  # (1, T, H, W): V = max(R, G, B)
    new = (value + c).clamp(0.0, 1.0)
    scaled = x * (new / value.clamp(min=1e-12))
    return torch.where(value > 0, scaled, new.expand_as(x)).clamp(0.0, 1.0)


CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)


@register("video", "contrast", "factor toward the frame's mean", CONTRAST,
          "pixels pulled toward each frame's per-channel mean", IMAGENET_C)
def video_contrast(x: Tensor, severity: int, generator: torch.Generator,
                   **context: Any) -> Tensor:
    """ImageNet-C ``contrast`` (arXiv 1903.12261): ``clip((x - m) c + m, 0, 1)`` with ``m`` the
    per-channel mean of each frame."""
    c = _level(CONTRAST, severity)
    mean = x.mean(dim=(-2, -1), keepdim=True)  # (3, T, 1, 1)
    return ((x - mean) * c + mean).clamp(0.0, 1.0)


JPEG_QUALITY = (25, 18, 15, 10, 7)


@register("video", "jpeg_compression", "JPEG quality (Pillow)", JPEG_QUALITY,
          "every frame JPEG-encoded and decoded (uint8 pixels, Pillow)", IMAGENET_C)
def video_jpeg_compression(x: Tensor, severity: int, generator: torch.Generator,
                           **context: Any) -> Tensor:
    """ImageNet-C ``jpeg_compression`` (arXiv 1903.12261): each frame, rounded to uint8, saved
    as JPEG with Pillow at the given quality and decoded. Needs Pillow (``merdg[media]``)."""
    quality = _level(JPEG_QUALITY, severity)
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - the media extra installs Pillow
        raise ImportError("the jpeg_compression corruption needs Pillow: "
                          "pip install 'merdg[media]'") from err
    pixels = (x.to(torch.float32) * 255.0).round().clamp(0, 255).to(torch.uint8)
    frames = pixels.permute(1, 2, 3, 0).contiguous().numpy()  # (T, H, W, 3)
    out = np.empty_like(frames)
    for k, frame in enumerate(frames):
        buffer = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[k] = np.asarray(decoded.convert("RGB"))
    return (torch.from_numpy(out).permute(3, 0, 1, 2) / 255.0).to(x.dtype)


FRAME_DROP = (0.1, 0.2, 0.3, 0.4, 0.5)


@register("video", "frame_drop", "share of frames dropped (frozen)", FRAME_DROP,
          "dropped frames repeat the last frame received", SCHIAPPA)
def video_frame_drop(x: Tensor, severity: int, generator: torch.Generator,
                     **context: Any) -> Tensor:
    """Frame drops: ``round(p (T - 1))`` of the frames 1 .. T-1, chosen at random, are replaced
    by the last frame received before them (a video stream that freezes); the first frame is
    always received. The "freeze" perturbation of Schiappa et al. (arXiv 2207.01398); the ladder
    is ours."""
    return _hold_dropped(x, _level(FRAME_DROP, severity), generator, time_dim=1)


TEMPORAL_JITTER = (1, 2, 3, 4, 6)


@register("video", "temporal_jitter", "max frame offset (clip frames)", TEMPORAL_JITTER,
          "each frame replaced by a frame up to k positions away", SCHIAPPA)
def video_temporal_jitter(x: Tensor, severity: int, generator: torch.Generator,
                          **context: Any) -> Tensor:
    """Temporal jitter: output frame ``t`` is input frame ``clamp(t + d_t, 0, T - 1)`` with
    ``d_t`` uniform on ``{-k, ..., k}`` (frames of the sampled clip), a local jumbling of the
    frame order as the temporal perturbations of Schiappa et al. (arXiv 2207.01398); the ladder
    is ours."""
    k = _level(TEMPORAL_JITTER, severity)
    t = x.shape[1]
    offsets = torch.randint(-k, k + 1, (t,), generator=generator)
    index = (torch.arange(t) + offsets).clamp(0, t - 1)
    return x[:, index]


def _hold_dropped(x: Tensor, share: float, generator: torch.Generator, time_dim: int) -> Tensor:
    """Drop ``round(share (T - 1))`` of the steps 1 .. T-1 along ``time_dim``; each dropped step
    takes the value of the last kept step before it (zero-order hold)."""
    t = x.shape[time_dim]
    n_drop = int(round(share * (t - 1)))
    if n_drop == 0:
        return x.clone()
    dropped = 1 + torch.randperm(t - 1, generator=generator)[:n_drop]
    kept = torch.ones(t, dtype=torch.bool)
    kept[dropped] = False
    positions = torch.arange(t)
    last_kept = torch.cummax(torch.where(kept, positions, torch.zeros_like(positions)), 0).values
    return x.index_select(time_dim, last_kept)


# --- flow: (2, T, H, W) in [-1, 127/128], 0 = no motion ------------------------------------
FLOW_MIN, FLOW_MAX = -1.0, 127.0 / 128.0  # the range of the 8-bit flow images
FLOW_STEP = 255.0 / 128.0  # one unit of ImageNet-C's [0, 1] pixel scale in flow values


@register("flow", "gaussian_noise", "noise std ([0, 1] scale of the 8-bit flow images)",
          GAUSSIAN_NOISE_STD, "additive Gaussian noise on u and v, clipped to the 8-bit range",
          IMAGENET_C + ", on the 8-bit flow images")
def flow_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator,
                        **context: Any) -> Tensor:
    """ImageNet-C ``gaussian_noise`` (arXiv 1903.12261) on the 8-bit flow images as stored:
    std ``c`` on their [0, 1] pixel scale, i.e. ``c * 255 / 128`` in flow values, clipped to
    the images' range."""
    c = _level(GAUSSIAN_NOISE_STD, severity) * FLOW_STEP
    return (x + c * _randn(x, generator)).clamp(FLOW_MIN, FLOW_MAX)


FLOW_SCALE = (1.25, 1.5, 2.0, 3.0, 4.0)


@register("flow", "magnitude_scaling", "factor on (u, v)", FLOW_SCALE,
          "motion magnified (as from a lower frame rate), clipped to the 8-bit range",
          "ours (frame-rate mismatch)")
def flow_magnitude_scaling(x: Tensor, severity: int, generator: torch.Generator,
                           **context: Any) -> Tensor:
    """Magnitude scaling: ``clip(s (u, v))``. Optical flow between frames ``s`` times farther
    apart is about ``s`` times larger, so this mimics a test video at a lower frame rate than
    training; clipped to the range of the 8-bit flow images as a flow encoder's bound would.
    Ladder ours."""
    s = _level(FLOW_SCALE, severity)
    return (x * s).clamp(FLOW_MIN, FLOW_MAX)


FLOW_DROPOUT = (0.1, 0.2, 0.3, 0.4, 0.5)


@register("flow", "dropout", "share of (t, y, x) positions set to no motion", FLOW_DROPOUT,
          "random positions lose their flow vector (u = v = 0)",
          "ours (flow estimation failures)")
def flow_dropout(x: Tensor, severity: int, generator: torch.Generator,
                 **context: Any) -> Tensor:
    """Flow dropout: each (frame, y, x) position independently loses its flow vector (both
    components set to 0, no motion) with probability ``p``. Ladder ours."""
    p = _level(FLOW_DROPOUT, severity)
    keep = torch.rand(x.shape[1:], generator=generator) >= p  # (T, H, W)
    return x * keep.to(x.dtype)


# --- audio: (n,) waveform in [-1, 1] ------------------------------------------------------
@register("audio", "gaussian_noise", "signal-to-noise ratio (dB)", SNR_DB,
          "white Gaussian noise at a given SNR relative to the clip's power", AURORA)
def audio_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator,
                         **context: Any) -> Tensor:
    """White Gaussian noise whose power is the clip's mean power divided by ``10^(SNR/10)``
    (SNRs of the Aurora-2 benchmark, Hirsch & Pearce 2000). A silent clip stays silent."""
    snr = _level(SNR_DB, severity)
    power = x.to(torch.float64).square().mean()
    sigma = float(power.sqrt()) * _snr_sigma(snr)
    return x + sigma * _randn(x, generator)


AUDIO_GAIN_DB = (-10.0, -20.0, -30.0, -40.0, -50.0)


@register("audio", "gain", "gain (dB)", AUDIO_GAIN_DB,
          "recording level lowered (quiet recording)",
          "ours")
def audio_gain(x: Tensor, severity: int, generator: torch.Generator, **context: Any) -> Tensor:
    """Gain: ``x 10^(g/20)`` with ``g < 0`` dB. The network's log spectrogram is standardized per
    clip, so a gain only changes it through the spectrogram's floor ``log(S + 1e-7)``, which
    acts as a gate at about -31 dBFS of white noise: quieter recordings sink into it. Ladder
    ours."""
    g = _level(AUDIO_GAIN_DB, severity)
    return x * 10.0 ** (g / 20.0)


CLIPPED_SHARE = (0.05, 0.1, 0.2, 0.3, 0.4)


@register("audio", "clipping", "share of samples clipped", CLIPPED_SHARE,
          "hard clipping at the percentiles that clip that share of samples",
          "audiomentations ClippingDistortion (0-40 %); ladder ours")
def audio_clipping(x: Tensor, severity: int, generator: torch.Generator,
                   **context: Any) -> Tensor:
    """Clipping distortion as audiomentations' ``ClippingDistortion``: the signal is clipped to
    its ``p/2`` and ``1 - p/2`` quantiles, so a share ``p`` of the samples is clipped."""
    p = _level(CLIPPED_SHARE, severity)
    values = x.to(torch.float64)
    low, high = torch.quantile(values, torch.tensor([p / 2, 1 - p / 2], dtype=torch.float64))
    return values.clamp(float(low), float(high)).to(x.dtype)


TIME_MASK_SHARE = (0.1, 0.2, 0.3, 0.4, 0.5)


@register("audio", "time_mask", "share of the clip silenced", TIME_MASK_SHARE,
          "one contiguous segment silenced (microphone dropout)",
          "SpecAugment time masking, arXiv 1904.08779, on the waveform as audiomentations "
          "TimeMask (up to 50 %); ladder ours")
def audio_time_mask(x: Tensor, severity: int, generator: torch.Generator,
                    **context: Any) -> Tensor:
    """Time masking (SpecAugment, arXiv 1904.08779, section 2) applied to the waveform as
    audiomentations' ``TimeMask``: ``round(p n)`` consecutive samples starting at a uniform
    position are set to 0. (SpecAugment masks log-mel frames with their mean; silencing the
    waveform is what a dropout of the microphone records.)"""
    p = _level(TIME_MASK_SHARE, severity)
    n = x.shape[-1]
    length = int(round(p * n))
    start = int(torch.randint(0, n - length + 1, (), generator=generator))
    out = x.clone()
    out[..., start:start + length] = 0.0
    return out


LOWPASS_HZ = (4000.0, 2000.0, 1000.0, 500.0, 250.0)


@register("audio", "band_limit", "low-pass cutoff (Hz)", LOWPASS_HZ,
          "frequencies above the cutoff removed (ideal low-pass)",
          "ours; severity 1: narrowband telephony's 4 kHz (ITU-T G.711)")
def audio_band_limit(x: Tensor, severity: int, generator: torch.Generator,
                     **context: Any) -> Tensor:
    """Band limiting: an ideal low-pass filter (the FFT bins above the cutoff set to 0).
    Severity 1 keeps the band of narrowband telephony (4 kHz); a cutoff at or above the Nyquist
    frequency changes nothing. Needs ``sample_rate``. Ladder ours."""
    cutoff = _level(LOWPASS_HZ, severity)
    rate = context.get("sample_rate")
    if rate is None:
        raise ValueError("the band_limit audio corruption needs the sample_rate")
    n = x.shape[-1]
    spectrum = torch.fft.rfft(x.to(torch.float64))
    freqs = torch.fft.rfftfreq(n, d=1.0 / float(rate), dtype=torch.float64)
    spectrum[..., freqs > cutoff] = 0.0
    return torch.fft.irfft(spectrum, n=n).to(x.dtype)


# --- time series: (T, C) in the dataset's units ------------------------------------------
@register("timeseries", "gaussian_noise", "SNR (dB) relative to the channel's spread", SNR_DB,
          "additive Gaussian noise per sample and channel (jittering)",
          "jittering of " + UM_2017 + "; " + AURORA)
def timeseries_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator,
                              **context: Any) -> Tensor:
    """Jittering (Um et al., arXiv 1706.00527, section 3): ``x + N(0, sigma^2)`` with ``sigma``
    the channel's source spread times ``10^(-SNR/20)``, SNR 20 .. 0 dB."""
    sigma = _snr_sigma(_level(SNR_DB, severity)) * _spread(context, x)
    return x + sigma * _randn(x, generator)


BIAS_DRIFT = (0.1, 0.25, 0.5, 1.0, 2.0)


@register("timeseries", "bias_drift", "final offset (channel spreads)", BIAS_DRIFT,
          "a linear offset growing from 0 to +-b spreads over the sequence, random sign per "
          "channel", "ours (drifting sensor bias)")
def timeseries_bias_drift(x: Tensor, severity: int, generator: torch.Generator,
                          **context: Any) -> Tensor:
    """Bias drift: channel ``c`` gets ``s_c b spread_c t / (T - 1)`` with a random sign ``s_c``,
    a bias that grows linearly over the recording (as an uncalibrated inertial sensor's).
    Ladder ours."""
    b = _level(BIAS_DRIFT, severity)
    t, c = x.shape
    signs = torch.randint(0, 2, (c,), generator=generator).to(x.dtype) * 2 - 1
    ramp = torch.linspace(0.0, 1.0, t, dtype=x.dtype)[:, None]  # (T, 1)
    return x + ramp * signs * b * _spread(context, x)


SPIKE_SHARE = (0.01, 0.02, 0.05, 0.1, 0.2)
SPIKE_SIZE = 5.0  # spreads


@register("timeseries", "spikes", f"share of values hit by a +-{SPIKE_SIZE:g}-spread spike",
          SPIKE_SHARE, "impulsive outliers on random (step, channel) values",
          "ours (impulse noise)")
def timeseries_spikes(x: Tensor, severity: int, generator: torch.Generator,
                      **context: Any) -> Tensor:
    """Spikes: each value is hit with probability ``p`` by an outlier of ``+-5`` channel spreads
    (random sign) added to it. Ladder ours."""
    return _spikes(x, _level(SPIKE_SHARE, severity), generator, _spread(context, x))


def _spikes(x: Tensor, share: float, generator: torch.Generator, spread: Tensor) -> Tensor:
    hit = torch.rand(x.shape, generator=generator) < share
    signs = torch.randint(0, 2, x.shape, generator=generator).to(x.dtype) * 2 - 1
    return x + hit.to(x.dtype) * signs * SPIKE_SIZE * spread


SAMPLE_DROPOUT = (0.1, 0.2, 0.3, 0.5, 0.7)


@register("timeseries", "sample_dropout", "share of time steps lost", SAMPLE_DROPOUT,
          "lost time steps repeat the last step received (zero-order hold)",
          "ours (sensor packet loss)")
def timeseries_sample_dropout(x: Tensor, severity: int, generator: torch.Generator,
                              **context: Any) -> Tensor:
    """Sample dropout: ``round(p (T - 1))`` of the steps 1 .. T-1 (all channels, as a lost packet)
    take the value of the last step received before them; step 0 is always received. Ladder
    ours."""
    return _hold_dropped(x, _level(SAMPLE_DROPOUT, severity), generator, time_dim=0)


WARP_SIGMA = (0.05, 0.1, 0.2, 0.3, 0.4)
WARP_KNOTS = 4


@register("timeseries", "time_warp", f"knot std ({WARP_KNOTS} knots)", WARP_SIGMA,
          "time axis distorted by a smooth random speed curve (endpoints kept)",
          "time warping of " + UM_2017 + "; severity 3 = their sigma, ladder ours")
def timeseries_time_warp(x: Tensor, severity: int, generator: torch.Generator,
                         **context: Any) -> Tensor:
    """Time warping (Um et al., arXiv 1706.00527, section 3): a speed curve, a cubic spline
    through ``knots + 2`` values ``~ N(1, sigma^2)`` evenly spaced over the sequence (natural
    boundary conditions; Um et al. use scipy's default), gives the time step between
    consecutive samples (clamped to >= 0.1 so time runs forward); its cumulative sum, scaled
    to end at ``T - 1``, is when each sample was taken, and the sequence is re-sampled linearly
    on the regular grid. One warp for all channels (they share the clock; Um et al. warp each
    axis separately). The first and last samples are kept."""
    sigma = _level(WARP_SIGMA, severity)
    t = x.shape[0]
    if t < 3:
        return x.clone()
    speed = _random_curve(t, 1, sigma, generator)[:, 0].clamp(min=0.1)  # (T,)
    times = torch.cat([torch.zeros(1, dtype=torch.float64), speed[1:].cumsum(0)])
    times *= (t - 1) / times[-1]  # when each sample was taken, 0 .. T-1
    return _interp_rows(torch.arange(t, dtype=torch.float64), times, x)


@register("timeseries", "magnitude_warp", f"knot std ({WARP_KNOTS} knots)", WARP_SIGMA,
          "each channel multiplied by a smooth random curve around 1",
          "magnitude warping of " + UM_2017 + "; severity 3 = their sigma, ladder ours")
def timeseries_magnitude_warp(x: Tensor, severity: int, generator: torch.Generator,
                              **context: Any) -> Tensor:
    """Magnitude warping (Um et al., arXiv 1706.00527, section 3): each channel times a cubic
    spline through ``knots + 2`` values ``~ N(1, sigma^2)`` evenly spaced over the sequence
    (natural boundary conditions)."""
    sigma = _level(WARP_SIGMA, severity)
    t, c = x.shape
    return x * _random_curve(t, c, sigma, generator).to(x.dtype)


def _random_curve(t: int, channels: int, sigma: float, generator: torch.Generator) -> Tensor:
    """(t, channels) float64: natural cubic splines through ``WARP_KNOTS + 2`` values
    ``~ N(1, sigma^2)`` at evenly spaced positions 0 .. t-1 (Um et al.'s GenerateRandomCurves)."""
    knots = torch.linspace(0.0, t - 1, WARP_KNOTS + 2, dtype=torch.float64)
    values = 1.0 + sigma * torch.randn(WARP_KNOTS + 2, channels, generator=generator,
                                       dtype=torch.float64)
    return natural_cubic_spline(knots, values, torch.arange(t, dtype=torch.float64))


def natural_cubic_spline(knots: Tensor, values: Tensor, at: Tensor) -> Tensor:
    """Natural cubic spline through ``(knots[i], values[i])`` evaluated at ``at``.

    Args:
        knots: (K,) increasing, evenly spaced, K >= 2.
        values: (K, C).
        at: (N,) points in ``[knots[0], knots[-1]]``.

    Returns:
        (N, C).
    """
    k = knots.shape[0]
    h = float(knots[1] - knots[0])
    second = torch.zeros_like(values)  # second derivatives, 0 at both ends (natural)
    if k > 2:
        # h (M[i-1] + 4 M[i] + M[i+1]) / 6 = (y[i+1] - 2 y[i] + y[i-1]) / h, i = 1 .. K-2
        system = torch.diag(torch.full((k - 2,), 4.0, dtype=values.dtype))
        system += torch.diag(torch.ones(k - 3, dtype=values.dtype), 1)
        system += torch.diag(torch.ones(k - 3, dtype=values.dtype), -1)
        rhs = 6.0 * (values[2:] - 2 * values[1:-1] + values[:-2]) / h**2
        second[1:-1] = torch.linalg.solve(system, rhs)
    seg = ((at - knots[0]) / h).floor().long().clamp(0, k - 2)  # (N,)
    left = (knots[seg + 1] - at)[:, None]  # distance to the segment's right knot
    right = (at - knots[seg])[:, None]
    m0, m1, y0, y1 = second[seg], second[seg + 1], values[seg], values[seg + 1]
    return (m0 * left**3 + m1 * right**3) / (6 * h) + (y0 / h - m0 * h / 6) * left \
        + (y1 / h - m1 * h / 6) * right


def _interp_rows(at: Tensor, times: Tensor, x: Tensor) -> Tensor:
    """Rows of ``x`` (T, C), observed at increasing ``times`` (T,), linearly interpolated at
    ``at`` (N,) (numpy's ``interp`` per column)."""
    hi = torch.searchsorted(times, at, right=True).clamp(1, times.shape[0] - 1)
    lo = hi - 1
    frac = ((at - times[lo]) / (times[hi] - times[lo])).clamp(0.0, 1.0)[:, None]
    rows = x.to(torch.float64)
    return (rows[lo] * (1 - frac) + rows[hi] * frac).to(x.dtype)


# --- arrays: any shape, in the dataset's units -------------------------------------------
@register("array", "gaussian_noise", "SNR (dB) relative to the entry's spread", SNR_DB,
          "additive Gaussian noise on every entry",
          "jittering of " + UM_2017 + "; " + AURORA)
def array_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator,
                         **context: Any) -> Tensor:
    """``x + N(0, sigma^2)`` with ``sigma`` the source spread times ``10^(-SNR/20)`` (Um et al.'s
    jittering, arXiv 1706.00527, at the Aurora-2 SNRs 20 .. 0 dB)."""
    sigma = _snr_sigma(_level(SNR_DB, severity)) * _spread(context, x)
    return x + sigma * _randn(x, generator)


ARRAY_DROPOUT = (0.1, 0.2, 0.3, 0.5, 0.7)


@register("array", "dropout", "share of entries set to 0", ARRAY_DROPOUT,
          "random entries zeroed (dead features, missing depth pixels)", "ours")
def array_dropout(x: Tensor, severity: int, generator: torch.Generator,
                  **context: Any) -> Tensor:
    """Each entry independently set to 0 (in the dataset's units: e.g. a depth sensor's
    invalid pixels) with probability ``p``. Ladder ours."""
    p = _level(ARRAY_DROPOUT, severity)
    keep = torch.rand(x.shape, generator=generator) >= p
    return x * keep.to(x.dtype)


@register("array", "spikes", f"share of entries hit by a +-{SPIKE_SIZE:g}-spread spike",
          SPIKE_SHARE, "impulsive outliers on random entries",
          "ours (impulse noise)")
def array_spikes(x: Tensor, severity: int, generator: torch.Generator,
                 **context: Any) -> Tensor:
    """Each entry is hit with probability ``p`` by an outlier of ``+-5`` spreads. Ladder ours."""
    return _spikes(x, _level(SPIKE_SHARE, severity), generator, _spread(context, x))


ARRAY_SCALE = (0.8, 0.6, 0.4, 0.2, 0.1)


@register("array", "scaling", "factor on the whole sample", ARRAY_SCALE,
          "the sample multiplied by a factor (a sensor's gain mismatch)",
          "scaling of " + UM_2017 + " (fixed factor); ladder ours")
def array_scaling(x: Tensor, severity: int, generator: torch.Generator,
                  **context: Any) -> Tensor:
    """Scaling (Um et al., arXiv 1706.00527, section 3, with a fixed rather than random factor):
    ``s x``. Ladder ours."""
    return x * _level(ARRAY_SCALE, severity)


# --- text: feature sequences (T, D), zero-padded at the end ----------------------------------
def valid_steps(x: Tensor) -> Tensor:
    """(T,) bool: the steps of a feature sequence (T, D) that are not padding (padding: every
    feature exactly 0)."""
    return x.abs().amax(dim=-1) > 0


@register("text", "gaussian_noise", "SNR (dB) relative to the feature's spread", SNR_DB,
          "additive Gaussian noise on the features of every token (padding untouched)",
          "feature noise; " + AURORA)
def text_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator,
                        **context: Any) -> Tensor:
    """Feature noise: ``x + N(0, sigma^2)`` on the valid steps, ``sigma`` the feature's source
    spread times ``10^(-SNR/20)`` (SNR 20 .. 0 dB); padded steps stay 0, so the padding mask is
    unchanged."""
    sigma = _snr_sigma(_level(SNR_DB, severity)) * _spread(context, x)
    noise = sigma * _randn(x, generator)
    return x + noise * valid_steps(x)[:, None].to(x.dtype)


TOKEN_DROP = (0.1, 0.2, 0.3, 0.5, 0.7)


@register("text", "token_drop", "share of tokens dropped", TOKEN_DROP,
          "tokens removed from the sequence (the first kept), the rest moved up, zeros after",
          "ours (word dropout as a test-time corruption)")
def text_token_drop(x: Tensor, severity: int, generator: torch.Generator,
                    **context: Any) -> Tensor:
    """Token drop: ``round(p (L - 1))`` of the valid steps 1 .. L-1 are removed (``L`` valid
    steps); the kept ones keep their order and move up, and the sequence is padded with zeros
    to its length. Step 0 is always kept: BERT's ``[CLS]`` token, the step that step-0 sequence
    encoders (MMDG-Bench's MMSA model) read. Ladder ours."""
    share = _level(TOKEN_DROP, severity)
    valid = torch.nonzero(valid_steps(x)).flatten()
    if len(valid) < 2:
        return x.clone()
    drop = int(round(share * (len(valid) - 1)))
    order = torch.randperm(len(valid) - 1, generator=generator)[:drop] + 1
    keep = torch.ones(len(valid), dtype=torch.bool)
    keep[order] = False
    out = torch.zeros_like(x)
    kept = valid[keep]
    out[:len(kept)] = x[kept]
    return out


# --- missing: every kind --------------------------------------------------------------------
def missing(x: Tensor, severity: int | None, generator: torch.Generator,
            **context: Any) -> Tensor:
    """The modality is missing: its network input is all zeros (any severity, which is then
    ignored, must still be valid). Evaluations should also pass the modality in ``zero=`` to
    ``Algorithm.evaluate`` so that the fusion zero-fills its embedding, as merdg's
    missing-modality evaluation does (``merdg.evaluation.zero_filled``)."""
    if severity is not None:
        check_severity(severity)
    return torch.zeros_like(x)


for _kind in MODALITY_KINDS:
    register(_kind, MISSING, "none (ungraded)", (), "the modality's input is all zeros and its "
             "embedding is zero-filled in the fusion", "merdg's --eval-missing (zero-filled)",
             on_input=True)(missing)
