"""The UTD-MHAD release: its file layout, reading and validating one file, and preprocessing.

The authors' layout (MATLAB v5 ``.mat`` files, read with ``scipy.io.loadmat``)::

    Inertial/a{A}_s{S}_t{T}_inertial.mat   d_iner  (T_i, 6)         50 Hz acc xyz (g), gyro (deg/s)
    Skeleton/a{A}_s{S}_t{T}_skeleton.mat   d_skel  (20, 3, T_k)     30 Hz Kinect v1 joints (m)
    Depth/a{A}_s{S}_t{T}_depth.mat         d_depth (240, 320, T_k)  30 Hz depth (mm, uint16)

with action A = 1..27 (label A - 1), subject S = 1..8 and trial T = 1..4. The dataset built on
it is :class:`merdg.datasets.utd_mhad.UTDMHAD`; see ``docs/utd-mhad.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from merdg.datasets.preprocessing import DataError, raise_problems, resample_time
from merdg.datasets.untrusted import OPT_OUT, one_line, outside_root
from merdg.progress import progress_bar

__all__ = [
    "ACTIONS", "LAYOUT", "RELEASE_MISSING", "ROOT_ENV", "UTDPreprocessing", "UTDSample",
    "discover_samples", "find_root", "load_modality", "preprocess", "read_raw",
]

ROOT_ENV = "MERDG_UTD_MHAD_ROOT"

# modality: (directory, file-name suffix, MATLAB variable)
LAYOUT = {
    "depth": ("Depth", "depth", "d_depth"),
    "inertial": ("Inertial", "inertial", "d_iner"),
    "skeleton": ("Skeleton", "skeleton", "d_skel"),
}
_FILE_NAME = re.compile(r"^a(\d+)_s(\d+)_t(\d+)_(depth|inertial|skeleton)\.mat$")

ACTIONS = (
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave",
    "two hand front clap", "right arm throw", "cross arms in the chest", "basketball shoot",
    "right hand draw x", "right hand draw circle (clockwise)",
    "right hand draw circle (counter clockwise)", "draw triangle", "bowling (right hand)",
    "front boxing", "baseball swing from right", "tennis right hand forehand swing",
    "arm curl (two arms)", "tennis serve", "two hand push", "right hand knock on door",
    "right hand catch an object", "right hand pick up and throw", "jogging in place",
    "walking in place", "sit to stand", "stand to sit", "forward lunge (left foot forward)",
    "squat (two arms stretch out)",
)
SUBJECTS = tuple(range(1, 9))
TRIALS = tuple(range(1, 5))
RELEASE_MISSING = ("a8_s1_t4", "a23_s6_t4", "a27_s8_t4")  # absent from the authors' release
HIP_CENTER = 3  # row of "hip_center" in Skeleton/Skeleton_joint_order.txt (0-based)
DEPTH_FRAME = (240, 320)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, order=True)
class UTDSample:
    """One recording, identified by subject, action and trial (sorted in that order)."""

    subject: int
    action: int
    trial: int

    @property
    def id(self) -> str:
        return f"a{self.action}_s{self.subject}_t{self.trial}"

    def path(self, root: Path, modality: str) -> Path:
        directory, suffix, _ = LAYOUT[modality]
        return root / directory / f"{self.id}_{suffix}.mat"


@dataclass(frozen=True)
class UTDPreprocessing:
    """Preprocessing settings (they key the on-disk cache).

    Attributes:
        inertial_length: Frames of the resampled inertial sequence (raw: 107..326 at 50 Hz).
        skeleton_length: Frames of the resampled skeleton sequence (raw: 41..125 at 30 Hz).
        skeleton_origin: ``"first_hip"`` (joints relative to the first frame's hip centre:
            keeps the body's motion, removes where the subject stood), ``"hip"`` (relative to
            every frame's hip centre) or ``"none"`` (camera coordinates).
        depth_frames: Frames of the depth clip.
        depth_height: Rows of the area-averaged depth frame (raw 240).
        depth_width: Columns of the area-averaged depth frame (raw 320).
    """

    inertial_length: int = 128
    skeleton_length: int = 64
    skeleton_origin: str = "first_hip"
    depth_frames: int = 8
    depth_height: int = 30
    depth_width: int = 40

    def __post_init__(self) -> None:
        if self.skeleton_origin not in ("first_hip", "hip", "none"):
            raise ValueError(f"skeleton_origin must be 'first_hip', 'hip' or 'none', got "
                             f"{self.skeleton_origin!r}")
        sizes = {k: v for k, v in asdict(self).items() if k != "skeleton_origin"}
        bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < 1}
        if bad or self.depth_height > DEPTH_FRAME[0] or self.depth_width > DEPTH_FRAME[1]:
            raise ValueError(f"invalid UTD-MHAD preprocessing sizes {bad or sizes} (positive "
                             f"integers; depth at most {DEPTH_FRAME})")

    def for_modality(self, modality: str) -> dict[str, Any]:
        """The settings that ``modality``'s preprocessed arrays depend on."""
        return {k: v for k, v in asdict(self).items() if k.startswith(modality)}


def find_root(root: str | os.PathLike | None) -> Path:
    """The release directory: ``root`` or ``root/utd-mhad`` (so a parent data directory
    works), else ``$MERDG_UTD_MHAD_ROOT``.

    Raises:
        FileNotFoundError: No candidate holds an ``Inertial``, ``Skeleton`` or ``Depth`` folder.
    """
    env = os.environ.get(ROOT_ENV)
    candidates = [Path(root), Path(root) / "utd-mhad"] if root else []
    if not root and env:
        candidates.append(Path(env))
    for c in candidates:
        if any((c / d).is_dir() for d, _, _ in LAYOUT.values()):
            return c
    tried = ", ".join(str(c) for c in candidates) or "nothing"
    raise FileNotFoundError(
        f"UTD-MHAD release not found (tried {tried}): pass --data-root DIR (or set "
        f"$MERDG_DATA_ROOT or ${ROOT_ENV}) where DIR holds Inertial/, Skeleton/ and Depth/")


def discover_samples(root: Path) -> tuple[list[UTDSample], list[str]]:
    """Samples with a file in any modality's folder, sorted; and the ignored ``.mat`` names.

    A sample found in one folder must have its file in every folder a dataset loads, so a
    missing file is reported instead of silently dropping the sample.
    """
    found, ignored = set(), []
    for m in LAYOUT:
        folder = root / LAYOUT[m][0]
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            match = _FILE_NAME.match(name)
            if match and match[4] == m and 1 <= int(match[1]) <= len(ACTIONS):
                found.add(UTDSample(int(match[2]), int(match[1]), int(match[3])))
            elif name.endswith(".mat"):
                ignored.append(f"{LAYOUT[m][0]}/{name}")
    return sorted(found), ignored


def _scipy_loadmat():
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise RuntimeError("reading UTD-MHAD needs scipy: pip install 'merdg[utd]'") from err
    return loadmat


def _shape_error(modality: str, shape: tuple[int, ...]) -> str | None:
    """Why a raw array of ``modality`` has the wrong shape, or None."""
    if modality == "inertial" and (len(shape) != 2 or shape[1] != 6 or shape[0] < 2):
        return f"expected shape (T >= 2, 6), got {shape}"
    if modality == "skeleton" and (len(shape) != 3 or shape[:2] != (20, 3) or shape[2] < 2):
        return f"expected shape (20, 3, T >= 2), got {shape}"
    if modality == "depth" and (len(shape) != 3 or shape[:2] != DEPTH_FRAME or shape[2] < 1):
        return f"expected shape (240, 320, T >= 1), got {shape}"
    return None


def read_raw(root: Path, sample: UTDSample, modality: str,
             allow_outside_root: bool = False) -> np.ndarray:
    """One validated raw array, as stored in the release.

    Raises:
        DataError: The file is missing, resolves outside ``root`` (a symlink; unless
            ``allow_outside_root``), is unreadable (truncated, corrupt), lacks its variable, has
            the wrong shape, complex or non-finite values, or values that float32 (what
            training reads) cannot hold; the message names the file and sample.
    """
    path = sample.path(root, modality)
    where = f"sample {sample.id} ({modality}): {one_line(path)}"
    refused = None if allow_outside_root else outside_root(root, path)
    if refused:
        raise DataError(f"{where}: {refused} ({OPT_OUT})")
    if not path.is_file():
        raise DataError(f"{where}: file missing")
    variable, loadmat = LAYOUT[modality][2], _scipy_loadmat()
    try:
        content = loadmat(path, variable_names=[variable])
    except Exception as err:  # scipy raises many types on damaged files; name the file
        raise DataError(f"{where}: unreadable, truncated or corrupt ({err!r})") from err
    if variable not in content:
        from scipy.io import whosmat

        found = sorted(name for name, _, _ in whosmat(path))
        raise DataError(f"{where}: no variable {variable!r} (found {found})")
    array = np.asarray(content[variable])
    problem = _shape_error(modality, array.shape)
    if problem is None and not np.issubdtype(array.dtype, np.number):
        problem = f"non-numeric dtype {array.dtype}"
    if problem is None and np.iscomplexobj(array):
        problem = f"complex values (dtype {array.dtype})"
    if problem is None and not np.isfinite(array).all():
        problem = f"{int((~np.isfinite(array)).sum())} NaN/Inf values"
    if problem is None and np.abs(array).max() > FLOAT32_MAX:
        problem = (f"{int((np.abs(array) > FLOAT32_MAX).sum())} values beyond the float32 range "
                   f"(|x| > {FLOAT32_MAX:.3g}); training reads float32, where they become inf")
    if problem:
        raise DataError(f"{where}: {problem}")
    return array


def preprocess(raw: np.ndarray, modality: str, settings: UTDPreprocessing) -> np.ndarray:
    """A raw array of ``modality`` turned into the fixed-size float32 model input."""
    if modality == "inertial":
        out = resample_time(raw.astype(np.float64), settings.inertial_length)  # (L, 6)
    elif modality == "skeleton":
        joints = np.moveaxis(raw.astype(np.float64), 2, 0)  # (T, 20, 3)
        if settings.skeleton_origin == "first_hip":
            joints = joints - joints[0, HIP_CENTER]
        elif settings.skeleton_origin == "hip":
            joints = joints - joints[:, HIP_CENTER : HIP_CENTER + 1]
        out = resample_time(joints.reshape(len(joints), -1), settings.skeleton_length)  # (L, 60)
    else:
        clip = resample_time(np.moveaxis(raw, 2, 0), settings.depth_frames) / 1000.0  # (D, H, W)
        frames = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
        size = (settings.depth_height, settings.depth_width)
        out = F.adaptive_avg_pool2d(frames, size).numpy()  # (D, h, w), area average
    return np.asarray(out, dtype=np.float32)


def load_modality(root: Path, samples: Sequence[UTDSample], modality: str,
                  settings: UTDPreprocessing, progress: bool = True,
                  allow_outside_root: bool = False) -> np.ndarray:
    """Every sample's preprocessed ``modality``, stacked to (n, ...).

    Raises:
        DataError: Listing every missing, unreadable or invalid file (with its sample).
    """
    out, problems = [], []
    for s in progress_bar(samples, desc=f"UTD-MHAD {modality}: preprocessing", shown=progress):
        try:
            out.append(preprocess(read_raw(root, s, modality, allow_outside_root), modality,
                                  settings))
        except DataError as err:
            problems.append(str(err))
    raise_problems(problems, f"UTD-MHAD {modality} files under {root}")
    return np.stack(out)
