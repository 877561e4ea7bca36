"""UTD-MHAD: real inertial, skeleton and depth recordings of 27 actions by 8 subjects.

Reads the authors' release layout (MATLAB v5 ``.mat`` files, read with ``scipy.io.loadmat``)::

    Inertial/a{A}_s{S}_t{T}_inertial.mat   d_iner  (T_i, 6)         50 Hz acc xyz (g), gyro (deg/s)
    Skeleton/a{A}_s{S}_t{T}_skeleton.mat   d_skel  (20, 3, T_k)     30 Hz Kinect v1 joints (m)
    Depth/a{A}_s{S}_t{T}_depth.mat         d_depth (240, 320, T_k)  30 Hz depth (mm, uint16)

with action A = 1..27 (label A - 1), subject S = 1..8 and trial T = 1..4 (861 samples: three
are absent from the release). Domains are groups of subjects: by default the four pairs
``s1+s2``, ``s3+s4``, ``s5+s6``, ``s7+s8`` (``domains="pairs"``), or the eight subjects
(``domains="subject"``), or any grouping such as ``"1+5,2+6,3+7,4+8"``.

Preprocessing (cached on disk, keyed by these settings; see :mod:`merdg.datasets.cache`):

- ``inertial``: (T_i, 6) resampled linearly to (``inertial_length``, 6);
- ``skeleton``: joints (T_k, 20, 3) expressed relative to the hip centre of the first frame
  (``skeleton_origin``), flattened to (T_k, 60) and resampled to (``skeleton_length``, 60);
- ``depth``: metres, resampled to ``depth_frames`` frames and area-averaged to
  (``depth_height``, ``depth_width``) pixels.

Standardization statistics (per channel for the sequences, one scalar for depth) come from the
source domains only (:meth:`~merdg.datasets.arrays.ArrayDomainDataset.fit_normalization`).

References:
    C. Chen, R. Jafari, N. Kehtarnavaz, "UTD-MHAD: A Multimodal Dataset for Human Action
    Recognition Utilizing a Depth Camera and a Wearable Inertial Sensor", IEEE ICIP 2015,
    https://doi.org/10.1109/ICIP.2015.7350781. See ``docs/utd-mhad.md``.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from merdg.datasets.arrays import ArrayDomainDataset
from merdg.datasets.base import DATASETS, CheckReport
from merdg.datasets.cache import ArrayCache, default_cache_dir, file_fingerprint
from merdg.datasets.preprocessing import DataError, raise_problems, resample_time
from merdg.hparams import HParam

__all__ = ["ACTIONS", "ROOT_ENV", "UTDMHAD", "UTDPreprocessing", "UTDSample", "find_root"]

ROOT_ENV = "MERDG_UTD_MHAD_ROOT"
CACHE_FORMAT = 1  # bump when the preprocessing code changes what it writes

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


def read_raw(root: Path, sample: UTDSample, modality: str) -> np.ndarray:
    """One validated raw array, as stored in the release.

    Raises:
        DataError: The file is missing, unreadable (truncated, corrupt), lacks its variable, has
            the wrong shape or holds non-finite values; the message names the file and sample.
    """
    path = sample.path(root, modality)
    where = f"sample {sample.id} ({modality}): {path}"
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
    if problem is None and not np.isfinite(array).all():
        problem = f"{int((~np.isfinite(array)).sum())} NaN/Inf values"
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
                  settings: UTDPreprocessing, progress: bool = True) -> np.ndarray:
    """Every sample's preprocessed ``modality``, stacked to (n, ...).

    Raises:
        DataError: Listing every missing, unreadable or invalid file (with its sample).
    """
    out, problems = [], []
    for s in tqdm(samples, desc=f"UTD-MHAD {modality}: preprocessing", disable=not progress):
        try:
            out.append(preprocess(read_raw(root, s, modality), modality, settings))
        except DataError as err:
            problems.append(str(err))
    raise_problems(problems, f"UTD-MHAD {modality} files under {root}")
    return np.stack(out)


def subject_domains(spec: str, subjects: Sequence[int]) -> dict[int, str]:
    """Domain name of each subject: ``"subject"`` (``s1`` .. ``s8``), ``"pairs"`` (``s1+s2``,
    ``s3+s4``, ...) or explicit groups such as ``"1+5,2+6,3+7,4+8"``."""
    if spec == "subject":
        return {s: f"s{s}" for s in subjects}
    text = "1+2,3+4,5+6,7+8" if spec == "pairs" else str(spec)
    try:
        groups = [[int(s) for s in g.split("+")] for g in text.split(",")]
    except ValueError as err:
        raise ValueError(f"domains must be 'subject', 'pairs' or groups like '1+2,3+4', got "
                         f"{spec!r}") from err
    mapping = {s: "+".join(f"s{x}" for x in g) for g in groups for s in g}
    unassigned = sorted(set(subjects) - set(mapping))
    if unassigned or sum(map(len, groups)) != len(mapping):
        raise ValueError(f"domains {spec!r}: every subject must be in exactly one group "
                         f"(unassigned: {unassigned})")
    return {s: mapping[s] for s in subjects}


def _select(modalities: Sequence[str] | None) -> list[str]:
    chosen = sorted(set(modalities)) if modalities else sorted(LAYOUT)
    unknown = [m for m in chosen if m not in LAYOUT]
    if unknown:
        raise ValueError(f"unknown UTD-MHAD modalities {unknown}; available: {sorted(LAYOUT)}")
    return chosen


def _missing_files(root: Path, samples: Sequence[UTDSample], modality: str) -> list[str]:
    return [f"sample {s.id} ({modality}): {s.path(root, modality)}: file missing"
            for s in samples if not s.path(root, modality).is_file()]


@DATASETS.register("utd-mhad")
class UTDMHAD(ArrayDomainDataset):
    """UTD-MHAD (ICIP 2015): inertial, skeleton and depth; 27 actions; subject pairs as domains.

    Args:
        root: The release directory (or its parent); default ``$MERDG_UTD_MHAD_ROOT``.
        modalities: Subset of ``depth``, ``inertial``, ``skeleton`` (default: all).
        domains: ``"pairs"`` (default: 4 domains ``s1+s2``, ``s3+s4``, ``s5+s6``, ``s7+s8``;
            see docs/utd-mhad.md for why), ``"subject"`` (8 domains) or explicit groups such as
            ``"1+5,2+6,3+7,4+8"``.
        cache_dir: Where preprocessed arrays are cached (default ``$MERDG_CACHE_DIR`` or
            ``~/.cache/merdg``).
        normalize: Standardize with source-domain statistics (see ``fit_normalization``).
        progress: Show a progress bar while preprocessing.
        **preprocessing: Fields of :class:`UTDPreprocessing`.

    Raises:
        FileNotFoundError: No release under ``root``.
        DataError: Missing, truncated or corrupt files (all of them are listed).
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = ("depth", "inertial", "skeleton")
    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": HParam(1e-3, "Adam learning rate for the small from-scratch encoders"),
        "weight_decay": HParam(1e-4, "Adam weight decay"),
        "batch_size": HParam(24, "global batch: 8 per source domain with the 3 source pairs "
                             "(official: 16 = 8 x 2 sources); use 56 with domains=subject"),
        "epochs": HParam(30, "training epochs (source validation saturates by ~20; sized for "
                         "the 2-core CPU benchmark)"),
        "proj_hidden": HParam(256, "projection head hidden width (scaled down from 2048)"),
        "fusion_hidden": HParam(128, "fusion classifier hidden width (scaled down from 512)"),
    }
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = {
        "inertial": {"name": "tcn", "channels": [32, 64, 64], "kernel_size": 5},
        "skeleton": {"name": "tcn", "channels": [32, 64, 64], "kernel_size": 5},
        "depth": {"name": "cnn3d", "channels": [8, 16, 32]},
    }
    BENCH_MODALITY_SETS: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("inertial", "skeleton"), ("depth", "inertial", "skeleton"))
    normalization: ClassVar[dict[str, str]] = {
        "inertial": "channel", "skeleton": "channel", "depth": "global"}

    def __init__(self, root: str | None = None, modalities: Sequence[str] | None = None,
                 domains: str = "pairs", cache_dir: str | None = None, normalize: bool = True,
                 progress: bool = True, **preprocessing: Any) -> None:
        self.root = find_root(root)
        self.modalities = _select(modalities)
        self.settings = UTDPreprocessing(**preprocessing)
        self.normalize = normalize
        self.samples, _ = discover_samples(self.root)
        if not self.samples:
            raise DataError(f"no UTD-MHAD files for {self.modalities} under {self.root}")
        raise_problems([p for m in self.modalities
                        for p in _missing_files(self.root, self.samples, m)],
                       f"UTD-MHAD under {self.root}")
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        x = self._load_all(cache, progress)
        subject_domain = subject_domains(domains, sorted({s.subject for s in self.samples}))
        names = sorted({subject_domain[s.subject] for s in self.samples}, key=_domain_sort_key)
        self.set_samples(x, torch.tensor([s.action - 1 for s in self.samples]),
                         [subject_domain[s.subject] for s in self.samples], names, ACTIONS)

    def _load_all(self, cache_dir: Path, progress: bool) -> dict[str, torch.Tensor]:
        """Every loaded modality; a modality that fails does not stop the others (each is
        cached as soon as it is built), and all failures are raised together."""
        x, failures = {}, []
        for m in self.modalities:
            try:
                x[m] = torch.from_numpy(self._cached(m, cache_dir, progress))
            except DataError as err:
                failures.append(str(err))
        if failures:
            raise DataError("\n".join(failures))
        return x

    def _cached(self, modality: str, cache_dir: Path, progress: bool) -> np.ndarray:
        """The preprocessed (n, ...) array of ``modality``, from the cache or built."""
        paths = [s.path(self.root, modality) for s in self.samples]
        key = {"format": CACHE_FORMAT, "modality": modality,
               "files": file_fingerprint(paths, self.root), **self.settings.for_modality(modality)}
        cache = ArrayCache(cache_dir / "utd-mhad", modality, key)
        ids = np.array([s.id for s in self.samples])
        arrays = cache.load_or_build(lambda: {
            "data": load_modality(self.root, self.samples, modality, self.settings, progress),
            "sample_ids": ids})
        if not np.array_equal(arrays["sample_ids"], ids):
            raise RuntimeError(f"cache {cache.path} lists other samples than {self.root}; "
                               "delete it")
        return arrays["data"]

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              domains: str = "pairs", progress: bool = True, cache_dir: str | None = None,
              normalize: bool = True, **preprocessing: Any) -> CheckReport:
        """Read and preprocess every file (writing nothing); report counts and every problem.

        ``cache_dir`` and ``normalize`` are accepted so that training options can be reused.
        """
        root_path, mods = find_root(root), _select(modalities)
        settings = UTDPreprocessing(**preprocessing)
        samples, ignored = discover_samples(root_path)
        subject_domain = subject_domains(domains, sorted({s.subject for s in samples}))
        problems, lengths, readable = [], defaultdict(list), []
        for s in tqdm(samples, desc="UTD-MHAD: checking", disable=not progress):
            ok = True
            for m in mods:
                try:
                    raw = read_raw(root_path, s, m)
                    preprocess(raw, m, settings)
                    lengths[m].append(raw.shape[0 if m == "inertial" else 2])
                except DataError as err:
                    problems.append(str(err))
                    ok = False
            if ok:
                readable.append(s)
        counts = _counts(readable, subject_domain)
        notes = _check_notes(root_path, mods, samples, readable, lengths, ignored, settings)
        return CheckReport("utd-mhad", counts, problems, notes)


def _domain_sort_key(name: str) -> int:
    return int(name.split("+")[0][1:])


def _counts(samples: Sequence[UTDSample], subject_domain: dict[int, str]
            ) -> dict[str, dict[str, int]]:
    """``{domain: {action name: readable samples}}`` with every domain and action listed."""
    domains = sorted(set(subject_domain.values()), key=_domain_sort_key)  # present subjects only
    per = Counter((subject_domain[s.subject], s.action) for s in samples)
    return {d: {name: per[(d, a)] for a, name in enumerate(ACTIONS, 1)} for d in domains}


def _check_notes(root: Path, mods: Sequence[str], samples: Sequence[UTDSample],
                 readable: Sequence[UTDSample], lengths: dict[str, list[int]],
                 ignored: Sequence[str], settings: UTDPreprocessing) -> list[str]:
    notes = [f"root: {root}", f"modalities: {', '.join(mods)}",
             f"preprocessing: {asdict(settings)}"]
    for m in mods:
        if lengths[m]:
            notes.append(f"  {m}: raw frames {min(lengths[m])}..{max(lengths[m])}")
    per_subject = Counter(s.subject for s in readable)
    notes.append("readable samples per subject: " + ", ".join(
        f"s{k}: {per_subject[k]}" for k in sorted({s.subject for s in samples})))
    release = {UTDSample(s, a, t) for s in SUBJECTS for a in range(1, len(ACTIONS) + 1)
               for t in TRIALS if UTDSample(s, a, t).id not in RELEASE_MISSING}
    absent = [s.id for s in sorted(release - set(samples))]
    notes.append(f"official release: {len(release)} samples; "
                 + (f"{len(absent)} absent here: {', '.join(absent[:20])}"
                    + (" ..." if len(absent) > 20 else "") if absent else "all present"))
    if ignored:
        notes.append(f"ignored {len(ignored)} files with unexpected names: "
                     + ", ".join(ignored[:10]) + (" ..." if len(ignored) > 10 else ""))
    return notes
