"""UTD-MHAD: real inertial, skeleton and depth recordings of 27 actions by 8 subjects.

Reads the authors' release layout (MATLAB v5 ``.mat`` files, read with ``scipy.io.loadmat``)::

    Inertial/a{A}_s{S}_t{T}_inertial.mat   d_iner  (T_i, 6)         50 Hz acc xyz (g), gyro (deg/s)
    Skeleton/a{A}_s{S}_t{T}_skeleton.mat   d_skel  (20, 3, T_k)     30 Hz Kinect v1 joints (m)
    Depth/a{A}_s{S}_t{T}_depth.mat         d_depth (240, 320, T_k)  30 Hz depth (mm, uint16)

with action A = 1..27 (label A - 1), subject S = 1..8 and trial T = 1..4 (861 samples: three
are absent from the release). The file names record two candidate domain columns besides the
action: ``subject`` (values ``s1`` .. ``s8``) and ``trial`` (the repetition, ``t1`` .. ``t4``).
``domain_column`` chooses one (default ``subject``) and ``domains`` groups its values: by
default the four subject pairs ``s1+s2``, ``s3+s4``, ``s5+s6``, ``s7+s8`` (``domains="pairs"``),
or one domain per value (``domains="each"``; ``domains="subject"`` is the same for subjects),
or any grouping such as ``"1+5,2+6,3+7,4+8"``. ``where`` selects recordings by those columns
(``where=subject:s1,s2,s3,s4``, :mod:`merdg.datasets.columns`), so one set of subjects can
pretrain encoders and the others be the benchmark's domains.

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

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from merdg.datasets.arrays import ArrayDomainDataset
from merdg.datasets.base import DATASETS, CheckReport
from merdg.datasets.cache import ArrayCache, content_digest, default_cache_dir
from merdg.datasets.columns import (
    Where,
    check_enough_domains,
    describe_columns,
    parse_where,
    select_rows,
)
from merdg.datasets.preprocessing import DataError
from merdg.datasets.untrusted import check_flag, outside_root
from merdg.datasets.utd_mhad_release import (
    ACTIONS,
    LAYOUT,
    RELEASE_MISSING,
    ROOT_ENV,
    SUBJECTS,
    TRIALS,
    UTDPreprocessing,
    UTDSample,
    discover_samples,
    find_root,
    load_modality,
    preprocess,
    read_raw,
)
from merdg.hparams import HParam, training_default
from merdg.progress import progress_bar

__all__ = ["DOMAIN_COLUMNS", "ROOT_ENV", "UTDMHAD", "column_domains", "column_value"]

CACHE_FORMAT = 2  # bump when the preprocessing code changes what it writes (2: content keys)
HOLDOUT_GROUPS = ("recording", "subject_action")
# candidate domain column: (prefix of its values, the release's values); both are in the names
DOMAIN_COLUMNS = {"subject": ("s", SUBJECTS), "trial": ("t", TRIALS)}


def column_value(sample: UTDSample, column: str) -> str:
    """The value of a candidate domain column for ``sample``: ``s3`` (subject), ``t2`` (trial)."""
    return f"{DOMAIN_COLUMNS[column][0]}{getattr(sample, column)}"


def _domain_column(name: str | None) -> str:
    """The dataset option ``domain_column`` (default ``subject``), checked."""
    if name is None:
        return "subject"
    if not isinstance(name, str) or name not in DOMAIN_COLUMNS:
        raise ValueError(f"dataset option domain_column must be one of {list(DOMAIN_COLUMNS)} "
                         f"(what the release's file names record besides the action), got "
                         f"{name!r}")
    return name


def _grouping(column: str, spec: str | None) -> str:
    """The dataset option ``domains`` for ``column``: default ``pairs`` for subjects (the
    published benchmark) and ``each`` otherwise; ``subject`` is ``each`` for subjects."""
    if spec is None:
        return "pairs" if column == "subject" else "each"
    if spec == "subject":
        if column != "subject":
            raise ValueError(f"dataset option domains=subject makes each subject a domain, but "
                             f"domain_column is {column!r}: use domains=each")
        return "each"
    return str(spec)


def column_domains(column: str, spec: str | None, values: Sequence[int]) -> dict[int, str]:
    """Domain name of each value of ``column`` (``subject`` or ``trial``) present.

    Args:
        column: The domain column.
        spec: ``"each"`` (``s1`` .. ``s8``), ``"pairs"`` (``s1+s2``, ``s3+s4``, ...), explicit
            groups of the column's numbers such as ``"1+5,2+6,3+7,4+8"``, ``"subject"`` (each,
            for subjects), or None (``pairs`` for subjects, ``each`` for trials).
        values: The column's values present (numbers).

    Raises:
        ValueError: A spec that does not parse, or groups that leave a present value out or
            hold one twice.
    """
    spec = _grouping(column, spec)
    prefix, release = DOMAIN_COLUMNS[column]
    if spec == "each":
        return {v: f"{prefix}{v}" for v in values}
    text = (",".join(f"{a}+{b}" for a, b in zip(release[::2], release[1::2])) if spec == "pairs"
            else spec)
    try:
        groups = [[int(v) for v in g.split("+")] for g in text.split(",")]
    except ValueError as err:
        raise ValueError(f"dataset option domains must be 'pairs', 'each' or groups of {column} "
                         f"numbers like '1+2,3+4', got {spec!r}") from err
    mapping = {v: "+".join(f"{prefix}{x}" for x in g) for g in groups for v in g}
    unassigned = sorted(set(values) - set(mapping))
    if unassigned or sum(map(len, groups)) != len(mapping):
        raise ValueError(f"domains {spec!r}: every {column} must be in exactly one group "
                         f"(unassigned: {unassigned})")
    return {v: mapping[v] for v in values}


def _select_samples(samples: Sequence[UTDSample], where: Where) -> list[UTDSample]:
    """The recordings ``where`` selects (all without it).

    Raises:
        ValueError: An unknown column, a value no recording holds, or an empty selection.
    """
    if not where:
        return list(samples)
    table = {c: [column_value(s, c) for s in samples] for c in DOMAIN_COLUMNS}
    return [samples[i] for i in select_rows(table, where, row="sample")]


def _domains_of(samples: Sequence[UTDSample], column: str, spec: str | None, where: Where
                ) -> tuple[dict[int, str], list[str]]:
    """(domain of each present value of ``column``, the domain names in order), at least two
    when ``where`` selected the samples."""
    value_domain = column_domains(column, spec, sorted({getattr(s, column) for s in samples}))
    names = sorted(set(value_domain.values()), key=_domain_sort_key)
    if where:
        check_enough_domains(names, column, where)
    return value_domain, names


def _select(modalities: Sequence[str] | None) -> list[str]:
    chosen = sorted(set(modalities)) if modalities else sorted(LAYOUT)
    unknown = [m for m in chosen if m not in LAYOUT]
    if unknown:
        raise ValueError(f"unknown UTD-MHAD modalities {unknown}; available: {sorted(LAYOUT)}")
    return chosen


def _absent_from_release(samples: Sequence[UTDSample], where: Where | None = None) -> list[str]:
    """Ids of the official release's samples (those ``where`` selects) that have no file in any
    modality folder."""
    present = {s.id for s in samples} | set(RELEASE_MISSING)
    release = (UTDSample(s, a, t) for s in SUBJECTS for a in range(1, len(ACTIONS) + 1)
               for t in TRIALS)
    return [r.id for r in release if r.id not in present and all(
        column_value(r, c) in values for c, values in (where or {}).items())]


def _absent_problem(ids: Sequence[str]) -> str:
    return (f"{len(ids)} samples of the official release are absent from every modality folder "
            f"({', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}); pass --dataset-option "
            "partial_release=true to use a partial release")


@DATASETS.register("utd-mhad")
class UTDMHAD(ArrayDomainDataset):
    """UTD-MHAD (ICIP 2015): inertial, skeleton and depth; 27 actions; subject pairs as domains.

    Args:
        root: The release directory (or its parent); default ``$MERDG_UTD_MHAD_ROOT``.
        modalities: Subset of ``depth``, ``inertial``, ``skeleton`` (default: all).
        domains: How the values of ``domain_column`` form domains: ``"pairs"`` (the default for
            subjects: 4 domains ``s1+s2``, ``s3+s4``, ``s5+s6``, ``s7+s8``; see docs/utd-mhad.md
            for why), ``"each"`` (the default for trials; 8 subjects or 4 trials),
            ``"subject"`` (each subject, the earlier spelling) or explicit groups such as
            ``"1+5,2+6,3+7,4+8"``.
        cache_dir: Where preprocessed arrays are cached (default ``$MERDG_CACHE_DIR`` or
            ``~/.cache/merdg``).
        groups: What the source-validation holdout keeps together: ``"recording"`` (default:
            every recording on its own, the holdout of the published benchmark) or
            ``"subject_action"`` (the up to four trials of one subject performing one action
            stay on one side; see docs/utd-mhad.md).
        normalize: Standardize with source-domain statistics (see ``fit_normalization``).
        progress: Show a progress bar while preprocessing.
        partial_release: Accept a release lacking some of the official samples (e.g. a subset
            of subjects); by default a sample absent from every folder is an error.
        allow_outside_root: Read ``.mat`` files that resolve outside ``root`` (symlinks).
        domain_column: ``"subject"`` (default) or ``"trial"`` (the repetition): the candidate
            domain column whose values (grouped by ``domains``) are the domains.
        where: Keep only the recordings it selects by ``subject`` and ``trial``, e.g.
            ``"subject:s1,s2,s3,s4"`` or ``"subject:s5,s6;trial:t1,t2"`` (see
            :mod:`merdg.datasets.columns`); only their files are read, and only they must be
            complete.
        **preprocessing: Fields of :class:`UTDPreprocessing`.

    Raises:
        FileNotFoundError: No release under ``root``.
        ValueError: A bad ``domain_column``, ``domains`` or ``where`` (an unknown column, a
            value no recording holds, fewer than two domains left), before any file is read.
        DataError: Missing, truncated or corrupt files and absent samples (all of them listed,
            for every modality, in one error).
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = ("depth", "inertial", "skeleton")
    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": training_default("lr", 1e-3, "Adam learning rate for the small from-scratch "
                               "encoders"),
        "weight_decay": training_default("weight_decay", 1e-4, "Adam weight decay"),
        "batch_size": training_default("batch_size", 24, "global batch: 8 per source domain "
                                       "with the 3 source pairs (official: 16 = 8 x 2 sources); "
                                       "use 56 with domains=subject"),
        "epochs": training_default("epochs", 30, "training epochs (source validation saturates "
                                   "by ~20; sized for the 2-core CPU benchmark)"),
        "proj_hidden": training_default("proj_hidden", 256, "projection head hidden width "
                                        "(scaled down from 2048)"),
        "fusion_hidden": training_default("fusion_hidden", 128, "fusion classifier hidden width "
                                          "(scaled down from 512)"),
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
                 domains: str | None = None, cache_dir: str | None = None,
                 normalize: bool = True, progress: bool = True, groups: str = "recording",
                 partial_release: bool = False, allow_outside_root: bool = False,
                 domain_column: str | None = None,
                 where: str | Mapping[str, Any] | Sequence[str] | None = None,
                 **preprocessing: Any) -> None:
        self.groups = _check_groups(groups)
        self.domain_column = _domain_column(domain_column)
        _grouping(self.domain_column, domains)  # checked before any file is listed or read
        self.where = parse_where(where)
        self.root = find_root(root)
        self.modalities = _select(modalities)
        self.settings = UTDPreprocessing(**preprocessing)
        self.normalize = normalize
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        partial = check_flag("partial_release", partial_release)
        found, _ = discover_samples(self.root)
        if not found:
            raise DataError(f"no UTD-MHAD files for {self.modalities} under {self.root}")
        self.samples = _select_samples(found, self.where)
        value_domain, names = _domains_of(self.samples, self.domain_column, domains, self.where)
        absent = [] if partial else _absent_from_release(found, self.where)
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        x = self._load_all(cache, progress, [_absent_problem(absent)] if absent else [])
        self.set_samples(x, torch.tensor([s.action - 1 for s in self.samples]),
                         [value_domain[getattr(s, self.domain_column)] for s in self.samples],
                         names, ACTIONS)

    def _load_all(self, cache_dir: Path, progress: bool,
                  earlier: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """Every loaded modality; a modality that fails does not stop the others (each is
        cached as soon as it is built), and all failures, after the ``earlier`` ones, are
        raised together."""
        x, failures = {}, list(earlier)
        for m in self.modalities:
            try:
                x[m] = torch.from_numpy(self._cached(m, cache_dir, progress))
            except DataError as err:
                failures.append(str(err))
        if failures:
            raise DataError("\n".join(failures))
        return x

    def _readable(self, path: Path) -> bool:
        """An existing file inside the root (or anywhere, with ``allow_outside_root``)."""
        return path.is_file() and (self.allow_outside_root or not outside_root(self.root, path))

    def sample_name(self, index: int) -> str:
        return f"sample {self.samples[index].id}"

    def _cached(self, modality: str, cache_dir: Path, progress: bool) -> np.ndarray:
        """The preprocessed (n, ...) array of ``modality``, from the cache or built."""
        paths = [s.path(self.root, modality) for s in self.samples]
        if not all(self._readable(p) for p in paths):  # read all the others: one error lists all
            load_modality(self.root, self.samples, modality, self.settings, progress,
                          self.allow_outside_root)
        key = {"format": CACHE_FORMAT, "modality": modality,
               "files": content_digest(paths, self.root), **self.settings.for_modality(modality)}
        cache = ArrayCache(cache_dir / "utd-mhad", modality, key)
        ids = np.array([s.id for s in self.samples])
        arrays = cache.load_or_build(lambda: {
            "data": load_modality(self.root, self.samples, modality, self.settings, progress,
                                  self.allow_outside_root),
            "sample_ids": ids})
        if not np.array_equal(arrays["sample_ids"], ids):
            raise RuntimeError(f"cache {cache.path} lists other samples than {self.root}; "
                               "delete it")
        return arrays["data"]

    def domain_groups(self, domain: str) -> list[str] | None:
        """With ``groups="subject_action"``: ``s{subject}_a{action}`` of each sample of
        ``domain`` (its trials stay on one side of the holdout); else None."""
        if self.groups == "recording":
            return None
        return [f"s{self.samples[i].subject}_a{self.samples[i].action}"
                for i in self.domain_indices(domain).tolist()]

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              domains: str | None = None, progress: bool = True, cache_dir: str | None = None,
              normalize: bool = True, groups: str = "recording",
              partial_release: bool = False, allow_outside_root: bool = False,
              domain_column: str | None = None,
              where: str | Mapping[str, Any] | Sequence[str] | None = None,
              **preprocessing: Any) -> CheckReport:
        """Read and preprocess every file of the selected recordings (writing nothing); report
        counts, the candidate domain columns and every problem, one per bad file and one per
        sample of the official release (within the selection) absent from every folder (a note
        instead with ``partial_release``).

        ``cache_dir``, ``normalize`` and ``groups`` are accepted so that training options can
        be reused.
        """
        _check_groups(groups)
        column = _domain_column(domain_column)
        _grouping(column, domains)
        where = parse_where(where)
        root_path, mods = find_root(root), _select(modalities)
        settings = UTDPreprocessing(**preprocessing)
        allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        found, ignored = discover_samples(root_path)
        samples = _select_samples(found, where)
        value_domain, _ = _domains_of(samples, column, domains, where)
        problems, lengths, readable = [], defaultdict(list), []
        if not check_flag("partial_release", partial_release):
            problems += [f"sample {i}: absent from every modality folder (the official release "
                         "has it; --dataset-option partial_release=true accepts a partial "
                         "release)" for i in _absent_from_release(found, where)]
        for s in progress_bar(samples, desc="UTD-MHAD: checking", shown=progress):
            ok = True
            for m in mods:
                try:
                    raw = read_raw(root_path, s, m, allow_outside_root)
                    preprocess(raw, m, settings)
                    lengths[m].append(raw.shape[0 if m == "inertial" else 2])
                except DataError as err:
                    problems.append(str(err))
                    ok = False
            if ok:
                readable.append(s)
        counts = _counts(readable, column, value_domain)
        columns = describe_columns({c: [column_value(s, c) for s in readable]
                                    for c in DOMAIN_COLUMNS},
                                   [ACTIONS[s.action - 1] for s in readable], column, len(found),
                                   where)
        notes = _check_notes(root_path, mods, found, readable, lengths, ignored, settings,
                             columns)
        return CheckReport("utd-mhad", counts, problems, notes)


def _check_groups(groups: str) -> str:
    if groups not in HOLDOUT_GROUPS:
        raise ValueError(f"dataset option groups must be one of {list(HOLDOUT_GROUPS)}, got "
                         f"{groups!r}")
    return groups


def _domain_sort_key(name: str) -> int:
    return int(name.split("+")[0][1:])


def _counts(samples: Sequence[UTDSample], column: str, value_domain: dict[int, str]
            ) -> dict[str, dict[str, int]]:
    """``{domain: {action name: readable samples}}`` with every domain (of the values present)
    and action listed."""
    domains = sorted(set(value_domain.values()), key=_domain_sort_key)
    per = Counter((value_domain[getattr(s, column)], s.action) for s in samples)
    return {d: {name: per[(d, a)] for a, name in enumerate(ACTIONS, 1)} for d in domains}


def _check_notes(root: Path, mods: Sequence[str], samples: Sequence[UTDSample],
                 readable: Sequence[UTDSample], lengths: dict[str, list[int]],
                 ignored: Sequence[str], settings: UTDPreprocessing,
                 columns: Sequence[str]) -> list[str]:
    """``data check`` notes; ``columns`` are the lines of the candidate domain columns."""
    notes = [f"root: {root}", f"modalities: {', '.join(mods)}",
             f"preprocessing: {asdict(settings)}"]
    for m in mods:
        if lengths[m]:
            notes.append(f"  {m}: raw frames {min(lengths[m])}..{max(lengths[m])}")
    notes += columns
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
