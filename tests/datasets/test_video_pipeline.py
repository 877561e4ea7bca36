"""Frame sampling, crops and decoding against transcriptions of the reference pipeline."""

import av
import numpy as np
import pytest
import torch

from merdg.datasets.video import (
    ClipTransform,
    FrameReadError,
    VideoFile,
    random_resized_crop_box,
    read_jpeg_frames,
    rgb_to_gray,
    sample_clip_indices,
)
from merdg.testing import synthetic_frames, write_jpegs, write_mp4


def mmaction_test_offsets(total, clip_len, interval):
    """mmaction2 0.x ``SampleFrames._get_test_clips`` (num_clips=1) + loop, transcribed."""
    span = clip_len * interval
    avg = (total - span + 1) / 1.0
    start = int(avg / 2.0) if total > span - 1 else 0
    return np.mod(start + np.arange(clip_len) * interval, total)


@pytest.mark.parametrize("total", [1, 5, 30, 63, 64, 65, 100, 3379])
def test_eval_sampling_matches_mmaction(total):
    for clip_len, interval in [(32, 2), (8, 4)]:
        ours = sample_clip_indices(total, clip_len, interval, train=False).numpy()
        assert np.array_equal(ours, mmaction_test_offsets(total, clip_len, interval))


def test_train_sampling_range_and_loop():
    torch.manual_seed(0)
    starts = {int(sample_clip_indices(100, 32, 2, True)[0]) for _ in range(300)}
    assert min(starts) == 0 and max(starts) == 100 - 64  # randint over [0, total - span]
    short = sample_clip_indices(20, 8, 4, True)  # shorter than the span: start 0, loop
    assert short.tolist() == [0, 4, 8, 12, 16, 0, 4, 8]
    with pytest.raises(ValueError):
        sample_clip_indices(0, 8, 4, True)


def test_random_resized_crop_box():
    torch.manual_seed(0)
    for _ in range(50):
        x0, y0, x1, y1 = random_resized_crop_box(256, 341)
        assert 0 <= x0 < x1 <= 341 and 0 <= y0 < y1 <= 256
        area = (x1 - x0) * (y1 - y0) / (256 * 341)
        assert 0.07 <= area <= 1.0
    # a crop that can never fit falls back to the centered square
    assert random_resized_crop_box(10, 40, area_range=(5.0, 5.0)) == (15, 0, 25, 10)


def test_eval_transform_is_center_crop_and_normalize():
    frames = torch.randint(0, 256, (4, 30, 50, 3), dtype=torch.uint8)
    out = ClipTransform(train=False, short_side=30, eval_crop_size=20)(frames)
    assert out.shape == (3, 4, 20, 20)
    crop = frames[:, 5:25, 15:35].permute(3, 0, 1, 2).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1, 1)
    assert torch.allclose(out, (crop - mean) / std, atol=1e-5)


def test_short_side_resize_and_train_shapes():
    frames = torch.randint(0, 256, (3, 40, 60, 3), dtype=torch.uint8)
    out = ClipTransform(train=False, short_side=20, eval_crop_size=20)(frames)
    assert out.shape == (3, 3, 20, 20)  # 40x60 -> 20x30, center crop 20
    torch.manual_seed(0)
    train = ClipTransform(train=True, short_side=20, crop_size=16)(frames)
    assert train.shape == (3, 3, 16, 16)


def test_flow_flip_inverts_x():
    frames = torch.zeros(2, 8, 8, 2, dtype=torch.uint8)
    frames[..., 0] = 100  # x flow
    frames[..., 1] = 50   # y flow
    transform = ClipTransform(train=True, short_side=8, crop_size=8, mean=(128.0, 128.0),
                              std=(128.0, 128.0), flow=True)
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        out = transform(frames)
        seen.add(round(float(out[0].mean()) * 128 + 128))
        assert torch.allclose(out[1], torch.full_like(out[1], (50 - 128) / 128))
    assert seen == {100, 155}  # unflipped x, and 255 - x after a horizontal flip


def test_rgb_to_gray_is_opencv_formula():
    rgb = torch.tensor([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [12, 200, 99]]], dtype=torch.uint8)
    expected = [76, 150, 29, round(0.299 * 12 + 0.587 * 200 + 0.114 * 99)]
    assert rgb_to_gray(rgb)[0, :, 0].tolist() == expected


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(path, synthetic_frames(60, 32, 48, label=3), fps=24, gop=20)
    return path


def test_partial_decoding_equals_full_decoding(mp4):
    with av.open(str(mp4)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with VideoFile(str(mp4)) as video:
        assert video.num_frames == len(full) == 60
        assert sum(p.is_keyframe for p in video.packets) >= 3  # several GOPs: seeking is used
        for idx in ([0, 2, 4], [25, 27, 29, 31], [59, 3, 59, 40], list(range(20, 60, 4))):
            assert np.array_equal(video.frames(idx).numpy(), full[idx]), idx
        gray = video.frames([10, 11], gray=True)
        assert torch.equal(gray, rgb_to_gray(torch.from_numpy(full[[10, 11]])))
        with pytest.raises(FrameReadError, match="60"):
            video.frames([60])


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(FrameReadError, match="missing.mp4"):
        VideoFile(str(tmp_path / "missing.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(FrameReadError, match="bad.mp4"):
        VideoFile(str(bad))
    write_jpegs(tmp_path / "f", synthetic_frames(2, 8, 8), first_index=1)
    (tmp_path / "f" / "frame_0000000002.jpg").write_bytes(b"\xff\xd8 truncated")
    ok = read_jpeg_frames([str(tmp_path / "f" / "frame_0000000001.jpg")])
    assert ok.shape == (1, 8, 8, 3) and ok.dtype == torch.uint8
    with pytest.raises(FrameReadError, match="frame_0000000002.jpg"):
        read_jpeg_frames([str(tmp_path / "f" / f"frame_000000000{i}.jpg") for i in (1, 2)])
