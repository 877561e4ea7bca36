"""Video clips of the paper's pipeline: frame sampling, decoding, crops, normalization.

The pipeline is the one of the mmaction2 0.x configs the official code uses (SlowFast R101
``slowfast_r101_8x8x1_256e_kinetics400_rgb.py`` and SlowOnly R50
``slowonly_r50_8x8x1_256e_kinetics400_flow.py``), re-implemented with PyAV, Pillow and torch:

- ``SampleFrames(clip_len, frame_interval, num_clips=1)``: :func:`sample_clip_indices`;
- ``RawFrameDecode``: :func:`read_jpeg_frames` (frame folders) or :class:`VideoFile` (mp4);
- ``Resize(-1, 256)`` -> ``RandomResizedCrop`` -> ``Resize(224, 224)`` -> ``Flip(0.5)``
  (training) or ``Resize(-1, 256)`` -> ``CenterCrop`` (evaluation), then ``Normalize`` and
  ``FormatShape("NCTHW")``: :class:`ClipTransform`.

Resizing is bilinear (half-pixel centers, no antialiasing, rounded to uint8 like OpenCV's
``INTER_LINEAR`` on uint8 images); values can differ from OpenCV by one grey level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FLOW_MEAN_STD",
    "RGB_MEAN_STD",
    "ClipTransform",
    "FrameReadError",
    "VideoFile",
    "pixels_to_values",
    "random_resized_crop_box",
    "read_jpeg_frames",
    "rgb_to_gray",
    "sample_clip_indices",
    "values_to_pixels",
]

RGB_MEAN_STD = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))  # ImageNet, 0-255 scale
FLOW_MEAN_STD = ((128.0, 128.0), (128.0, 128.0))
FLOW_ZERO = 128.0  # the 8-bit flow images encode no motion as grey 128


def pixels_to_values(pixels: Tensor, flow: bool) -> Tensor:
    """0-255 pixel values -> the values corruptions work on (``docs/robustness.md``): RGB in
    [0, 1]; flow in [-1, 127/128] with 0 = no motion (``(p - 128) / 128``). Float32."""
    pixels = pixels.to(torch.float32)
    return (pixels - FLOW_ZERO) / FLOW_ZERO if flow else pixels / 255.0


def values_to_pixels(values: Tensor, flow: bool) -> Tensor:
    """Inverse of :func:`pixels_to_values` (float, not rounded)."""
    return values * FLOW_ZERO + FLOW_ZERO if flow else values * 255.0


class FrameReadError(OSError):
    """A frame image or video file is missing or cannot be decoded (the message names it)."""


def sample_clip_indices(total_frames: int, clip_len: int, interval: int, train: bool) -> Tensor:
    """Frame offsets of one clip, as mmaction2's ``SampleFrames(num_clips=1)``.

    Training: a random start in ``[0, total - clip_len * interval]`` (0 when the segment is
    shorter than the span); evaluation: the centered start ``int((total - span + 1) / 2)``.
    Offsets past the end loop around (``out_of_bound_opt="loop"``).

    Returns:
        (clip_len,) int64 offsets in ``[0, total_frames)`` (add the segment's first index).

    Raises:
        ValueError: ``total_frames < 1``.
    """
    if total_frames < 1:
        raise ValueError(f"cannot sample a clip from {total_frames} frames")
    room = total_frames - clip_len * interval + 1
    if train:
        start = int(torch.randint(0, room, (1,))) if room > 0 else 0
    else:
        start = int(room / 2.0) if room > 0 else 0
    return (start + torch.arange(clip_len) * interval) % total_frames


def read_jpeg_frames(paths: Sequence[str], gray: bool = False) -> Tensor:
    """Decode image files into a (T, H, W, C) uint8 tensor (C = 1 for ``gray``).

    Raises:
        FrameReadError: A file is missing or unreadable, or frames differ in size.
    """
    from PIL import Image

    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("L" if gray else "RGB")))
        except (OSError, ValueError, SyntaxError) as err:
            raise FrameReadError(f"cannot read frame {path}: {err}") from err
    if len({f.shape for f in frames}) > 1:
        raise FrameReadError(f"frames of different sizes in {paths[0]} ... {paths[-1]}")
    clip = torch.from_numpy(np.stack(frames))
    return clip.unsqueeze(-1) if gray else clip


def rgb_to_gray(rgb: Tensor) -> Tensor:
    """OpenCV's ``COLOR_RGB2GRAY`` on uint8 (fixed-point BT.601 luma), (..., 3) -> (..., 1)."""
    r, g, b = rgb.to(torch.int32).unbind(-1)
    return ((r * 4899 + g * 9617 + b * 1868 + 8192) >> 14).to(torch.uint8).unsqueeze(-1)


class VideoFile:
    """An mp4 (or any PyAV-readable) video, decoding only the frames asked for.

    Opening demultiplexes the video stream once (compressed packets, no decoding) to learn the
    number of frames and where the keyframes are. :meth:`frames` then starts decoding at the
    last keyframe at or before the first requested frame, skips the non-reference frames
    (e.g. H.264 B-frames no other frame depends on) that were not requested, stops once every
    requested frame is out, and converts only those frames to RGB. Frames are numbered in
    presentation order; the decoded pixels are those of a full decode (tested).

    Use as a context manager, or call :meth:`close`.

    Raises:
        FrameReadError: The file is missing, has no video stream, or cannot be demuxed.
    """

    def __init__(self, path: str) -> None:
        import av

        self.path = path
        try:
            self.container = av.open(path)
            self.stream = self.container.streams.video[0]
            self.packets = [p for p in self.container.demux(self.stream) if p.size > 0]
        except (OSError, IndexError, av.error.FFmpegError) as err:
            self.close()
            raise FrameReadError(f"cannot open video {path}: {err}") from err
        if not self.packets or any(p.pts is None for p in self.packets):
            self.close()
            raise FrameReadError(f"video {path} has no decodable frames with timestamps")
        self.rank = {pts: r for r, pts in enumerate(sorted(p.pts for p in self.packets))}

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            container.close()
            self.container = None

    @property
    def num_frames(self) -> int:
        return len(self.packets)

    def frames(self, indices: Sequence[int], gray: bool = False) -> Tensor:
        """Frames at ``indices`` (presentation order, repeats allowed) as (T, H, W, C) uint8
        (C = 1 for ``gray``: RGB decoded, then OpenCV's RGB-to-gray, as the HAC reference).

        Raises:
            FrameReadError: An index is out of range or the decoder fails.
        """
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0 or wanted[-1] >= self.num_frames:
            raise FrameReadError(f"frames {wanted[0]}..{wanted[-1]} requested from {self.path}, "
                                 f"which has {self.num_frames}")
        decoded = self._decode(wanted, self._start_packet(wanted[0]))
        if len(decoded) < len(wanted):  # e.g. leading pictures dropped after a mid-stream seek
            decoded = self._decode(wanted, 0)
        missing = [i for i in wanted if i not in decoded]
        if missing:
            raise FrameReadError(f"decoding {self.path} did not produce frames {missing[:5]}")
        clip = torch.from_numpy(np.stack([decoded[int(i)] for i in indices]))
        return rgb_to_gray(clip) if gray else clip

    def _start_packet(self, first: int) -> int:
        """Index (decode order) of the last keyframe packet shown at or before frame ``first``."""
        start = 0
        for j, packet in enumerate(self.packets):
            if packet.is_keyframe and self.rank[packet.pts] <= first:
                start = j
        return start

    def _decode(self, wanted: list[int], start: int) -> dict[int, np.ndarray]:
        import av
        from av.video.reformatter import VideoReformatter

        want, out = set(wanted), {}
        reformatter = VideoReformatter()  # one conversion context for all frames (much faster)
        codec = av.CodecContext.create(self.stream.codec_context.name, "r")
        codec.extradata = self.stream.codec_context.extradata
        codec.thread_count = 1  # the skip setting below must apply to the packet being sent
        try:
            for packet in [*self.packets[start:], None]:
                # frames nobody references and nobody asked for need not be decoded
                wanted_here = packet is None or self.rank[packet.pts] in want
                codec.skip_frame = "DEFAULT" if wanted_here else "NONREF"
                for frame in codec.decode(packet):
                    index = self.rank.get(frame.pts)
                    if index in want:
                        out[index] = reformatter.reformat(frame, format="rgb24").to_ndarray()
                if len(out) == len(want):
                    break
        except av.error.FFmpegError as err:
            raise FrameReadError(f"cannot decode {self.path}: {err}") from err
        return out


@dataclass(frozen=True)
class ClipTransform:
    """Spatial pipeline of a clip: (T, H, W, C) uint8 -> (C, T, size, size) float32.

    Args:
        train: Random resized crop + flip (training) or center crop (evaluation).
        short_side: Short side after the first resize (official 256).
        crop_size: Output size in training (official 224) ...
        eval_crop_size: ... and in evaluation (official 224 for RGB, 256 for flow).
        mean / std: Per-channel normalization on the 0-255 scale.
        flow: Frames are (x, y) optical flow: a horizontal flip also inverts x (255 - x).
    """

    train: bool
    short_side: int = 256
    crop_size: int = 224
    eval_crop_size: int = 224
    mean: tuple[float, ...] = RGB_MEAN_STD[0]
    std: tuple[float, ...] = RGB_MEAN_STD[1]
    flow: bool = False

    @property
    def out_size(self) -> int:
        return self.crop_size if self.train else self.eval_crop_size

    def __call__(self, frames: Tensor,
                 corrupt: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``frames`` (T, H, W, C) uint8 -> (C, T, size, size) float32.

        Args:
            corrupt: Applied to the cropped clip, (C, T, size, size) in the values of
                :func:`pixels_to_values`, before normalization (robustness evaluation,
                :mod:`merdg.evaluation`); None: the clean pipeline.
        """
        clip = frames.permute(0, 3, 1, 2)  # (T, C, H, W) uint8, a view
        clip = _resize_short_side(clip, self.short_side)
        if self.train:
            x0, y0, x1, y1 = random_resized_crop_box(clip.shape[-2], clip.shape[-1])
            clip = _resize(clip[..., y0:y1, x0:x1], (self.crop_size, self.crop_size))
            clip = self._random_flip(clip)
        else:
            clip = _center_crop(clip, self.eval_crop_size)
        clip = clip.permute(1, 0, 2, 3)  # (C, T, H, W)
        if corrupt is not None:
            values = corrupt(pixels_to_values(clip, self.flow))
            clip = values_to_pixels(values, self.flow)
        return self._normalize(clip)

    def _normalize(self, clip: Tensor) -> Tensor:
        """(x - mean) * (1 / std) per channel, as mmcv's ``imnormalize`` (the uint8 layout
        change first: it is the cheaper copy)."""
        out = clip.contiguous().to(torch.float32)
        shape = (-1,) + (1,) * (clip.dim() - 1)
        out.sub_(torch.tensor(self.mean).view(shape))
        return out.mul_(1.0 / torch.tensor(self.std, dtype=torch.float64).view(shape).float())

    def _random_flip(self, clip: Tensor) -> Tensor:
        if float(torch.rand(())) >= 0.5:
            return clip
        clip = clip.flip(-1)
        if self.flow:  # the x component changes sign under a horizontal flip
            clip[:, 0] = 255 - clip[:, 0]
        return clip


def _scaled_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """mmcv ``rescale_size`` for ``Resize(scale=(-1, short_side))``: (new_h, new_w)."""
    factor = short_side / min(h, w)
    return int(h * factor + 0.5), int(w * factor + 0.5)


def _resize(clip: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a (T, C, H, W) uint8 clip to ``size`` = (h, w), rounded to uint8."""
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    out = F.interpolate(clip.to(torch.float32), size=size, mode="bilinear", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _resize_short_side(clip: Tensor, short_side: int) -> Tensor:
    return _resize(clip, _scaled_size(clip.shape[-2], clip.shape[-1], short_side))


def _center_crop(clip: Tensor, size: int) -> Tensor:
    h, w = clip.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot center-crop {size}x{size} from frames of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return clip[..., top:top + size, left:left + size]


def random_resized_crop_box(h: int, w: int, area_range: tuple[float, float] = (0.08, 1.0),
                            ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
                            attempts: int = 10) -> tuple[int, int, int, int]:
    """mmaction2's ``RandomResizedCrop.get_crop_bbox``: ``(x0, y0, x1, y1)``.

    Draws ``attempts`` (area share, log aspect ratio) pairs and takes the first crop that fits;
    if none fits, the centered square of side ``min(h, w)``.
    """
    log_ratios = torch.empty(attempts, dtype=torch.float64).uniform_(
        math.log(ratio_range[0]), math.log(ratio_range[1]))
    areas = torch.empty(attempts, dtype=torch.float64).uniform_(*area_range) * (h * w)
    widths = torch.sqrt(areas * log_ratios.exp()).round().long().tolist()
    heights = torch.sqrt(areas / log_ratios.exp()).round().long().tolist()
    for cw, ch in zip(widths, heights):
        if ch <= h and cw <= w:
            x0 = int(torch.randint(0, w - cw + 1, (1,)))
            y0 = int(torch.randint(0, h - ch + 1, (1,)))
            return x0, y0, x0 + cw, y0 + ch
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return x0, y0, x0 + side, y0 + side
