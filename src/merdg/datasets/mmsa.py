"""Multimodal sentiment analysis across data sets as MMDG-Bench runs it: MOSI, MOSEI and CH-SIMS
as three domains, text + audio + vision feature sequences, a regression target
(lihongzhao99/MMDG_Benchmark, ``MMSA/``; the benchmark: arXiv 2605.06643).

Reads ``mosi.pkl``, ``mosei.pkl`` and ``sims.pkl`` in ``root`` (``MMSA/utils/dataloader.py``):
each ``{"train", "valid", "test"}``, each split a dict with ``text``, ``audio`` and ``vision``
(N, seq_len, dim) and ``regression_labels`` (N,); the other keys of thuiar/MMSA's pickles
(``text_bert``, ``*_lengths``, ``id``, ``classification_labels``, ...) are not used, as by the
benchmark. The pickles are untrusted: they are read with a restricted unpickler that builds
numpy arrays, lists, dicts, strings and numbers only (:func:`merdg.datasets.safe_pickle
.load_arrays`); a crafted pickle runs nothing.

- Labels: sentiment in [-3, 3]; CH-SIMS' [-1, 1] labels are multiplied by 3, as the benchmark
  does. Each sample's ``y`` is the label's sign class (negative, zero, positive), which the
  class-based terms of the baselines use; the target is the label itself (a regression task:
  L1 loss, one output; :mod:`merdg.evaluation.regression` for the metrics).
- Domains: ``mosei``, ``mosi``, ``sims`` (the benchmark's global domain ids 0, 1, 2). A source
  domain trains on its ``train`` split and is validated on its ``valid`` split; the target is
  evaluated on its ``test`` split. ``merdg bench --setting`` runs the benchmark's tasks only:
  multi-source ``mosi+mosei -> sims`` and ``mosi+sims -> mosei``, single-source ``mosei ->
  sims``, ``mosi -> sims``, ``mosi -> mosei``, ``sims -> mosi`` and ``sims -> mosei``
  (``MMSA/run_all_cross_domain.sh``: no task has mosi as its target with mosei as a source).
- Feature sizes must be the same in the three files (one consistent extraction, such as the
  benchmark's distributed files): thuiar/MMSA's standard pickles have per-data-set sizes
  (audio 5 / 74 / 33, vision 20 / 35 / 709 for MOSI / MOSEI / CH-SIMS), which stop the reader
  with one line naming each size.
- Sequences: each file's sequences are zero-padded to one length per data set; merdg pads every
  modality to the longest of the files read (the benchmark pads each batch to its longest).
  The all-zero steps are padding, which the ``sequence_transformer`` encoder masks (the
  benchmark passes no mask: ``docs/mmdg-bench.md``). The features are used as read (the
  benchmark standardizes nothing); ``nonfinite="zero"`` sets NaN/Inf features to 0 (thuiar/MMSA
  sets MOSI's -inf audio values to 0), which by default stop the reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from merdg.datasets.arrays import ArrayDomainDataset
from merdg.datasets.base import DATASETS, ROLES, SIGN_CLASSES, CheckReport, sign_classes
from merdg.datasets.preprocessing import DataError, raise_problems
from merdg.datasets.untrusted import check_flag, outside_root
from merdg.hparams import HParam, optional_default, training_default

__all__ = ["FILES", "MMSA", "SPLITS", "feature_size_problem", "read_mmsa_file"]

DOMAINS = ("mosei", "mosi", "sims")
FILES = {d: f"{d}.pkl" for d in DOMAINS}
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # merdg role -> the file's key
MODALITIES = ("audio", "text", "vision")
FUSION_ORDER = ("text", "audio", "vision")  # Latefusion's concatenation
LABEL_SCALE = {"mosei": 1.0, "mosi": 1.0, "sims": 3.0}
NONFINITE = ("error", "zero")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _split_problems(name: str, split: str, part: Any, modalities: Sequence[str]
                    ) -> list[str]:
    """Why one split of a file cannot be used (missing keys, shapes, sizes), one line each."""
    if not isinstance(part, Mapping):
        return [f"{name}[{split!r}] is a {type(part).__name__}, not a dict of arrays"]
    problems, counts = [], {}
    for key in (*modalities, "regression_labels"):
        if key not in part:
            problems.append(f"{name}[{split!r}] has no key {key!r} (keys: "
                            f"{sorted(map(str, part))})")
            continue
        value = part[key]
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.number):
            problems.append(f"{name}[{split!r}][{key!r}] is {type(value).__name__}"
                            f"{'' if not isinstance(value, np.ndarray) else ' ' + str(value.dtype)}"
                            ", not a numeric numpy array")
            continue
        if key == "regression_labels":
            if value.ndim not in (1, 2) or (value.ndim == 2 and value.shape[1] != 1):
                problems.append(f"{name}[{split!r}]['regression_labels'] has shape "
                                f"{value.shape}, expected (N,) or (N, 1)")
                continue
        elif value.ndim != 3 or value.shape[1] < 1 or value.shape[2] < 1:
            problems.append(f"{name}[{split!r}][{key!r}] has shape {value.shape}, expected "
                            "(N, seq_len, dim)")
            continue
        counts[key] = value.shape[0]
    if len(set(counts.values())) > 1:
        problems.append(f"{name}[{split!r}]: different sample counts "
                        + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return problems


def read_mmsa_file(path: Path, modalities: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """One pickle's splits (``{"train": {...}, "valid": {...}, "test": {...}}``) and its
    problems (one line each; the file is read with the restricted unpickler).

    Raises:
        UnsafePickleError: The pickle refers to anything but numpy arrays and plain containers
            (nothing of it was run).
    """
    from merdg.datasets.safe_pickle import UnsafePickleError, load_arrays

    try:
        data = load_arrays(path)
    except UnsafePickleError:
        raise
    except DataError as err:
        return {}, [str(err)]
    if not isinstance(data, Mapping):
        return {}, [f"{path}: holds a {type(data).__name__}, not a dict of splits"]
    problems = [f"{path}: no split {split!r} (keys: {sorted(map(str, data))})"
                for split in SPLITS.values() if split not in data]
    for split in SPLITS.values():
        if split in data:
            problems += _split_problems(str(path), split, data[split], modalities)
    return dict(data), problems


def feature_size_problem(sizes: Mapping[str, Mapping[str, int]]) -> str | None:
    """One line naming every feature size when the files' sizes differ for some modality
    (``sizes``: ``{domain: {modality: dim}}``), else None."""
    modalities = sorted({m for per in sizes.values() for m in per})
    differing = [m for m in modalities if len({per[m] for per in sizes.values() if m in per}) > 1]
    if not differing:
        return None
    listed = "; ".join(f"{m} " + ", ".join(f"{d} {per[m]}" for d, per in sizes.items() if m in per)
                       for m in differing)
    return (f"feature sizes differ across the data sets ({listed}): a cross-data-set run needs "
            "one extraction with the same sizes for every data set (thuiar/MMSA's standard "
            "pickles extract each data set its own way; MMDG-Bench distributes consistent files)")


@DATASETS.register("mmsa")
class MMSA(ArrayDomainDataset):
    """MOSI, MOSEI and CH-SIMS as domains of one sentiment regression task (module docstring).

    Args:
        root: The folder with ``mosi.pkl``, ``mosei.pkl`` and ``sims.pkl``.
        modalities: Subset of ``audio``, ``text``, ``vision`` (default: all three).
        domains: The data sets to read (default: all three; a run needs its target and
            sources).
        nonfinite: ``"error"`` (default: NaN/Inf features stop the reader, naming the file,
            split and modality) or ``"zero"`` (set them to 0, as thuiar/MMSA does with -inf
            audio).
        allow_outside_root: Read pickles that resolve outside ``root`` (symlinks).
        normalize: Accepted for the common interface; the features are used as read.

    Raises:
        FileNotFoundError: A file is missing (all named).
        UnsafePickleError: A pickle asks for more than arrays and containers.
        DataError: Missing splits or keys, bad shapes, different feature sizes across the
            files, non-finite values (all listed in one error).
    """

    ALL_MODALITIES: ClassVar[tuple[str, ...]] = MODALITIES
    TASK: ClassVar[str] = "regression"
    HAS_OFFICIAL_SPLITS: ClassVar[bool] = True
    OMITTED_TASKS: ClassVar[tuple[tuple[tuple[str, ...], str], ...]] = (
        (("mosei",), "mosi"), (("mosei", "sims"), "mosi"))
    HPARAMS: ClassVar[dict[str, HParam]] = {
        "lr": training_default("lr", 1e-4, "Adam learning rate (MMDG-Bench MMSA --lr 1e-4)"),
        "weight_decay": training_default("weight_decay", 0.0, "Adam weight decay (MMDG-Bench "
                                         "MMSA: none)"),
        "batch_size": training_default("batch_size", 24, "global batch (MMDG-Bench MMSA "
                                       "--batch_size 24)"),
        "epochs": training_default("epochs", 15, "training epochs (MMDG-Bench MMSA "
                                   "--num_epochs 15)"),
        "grad_clip": training_default("grad_clip", 0.8, "gradient-norm clip (MMDG-Bench MMSA "
                                      "--clip 0.8)"),
        "fusion_hidden": training_default("fusion_hidden", 40, "width of the residual fusion "
                                          "head (MMDG-Bench proj_dim 40)"),
        "dropout": training_default("dropout", 0.0, "dropout inside the residual block "
                                    "(MMDG-Bench out_dropout 0.0)"),
        "proj_hidden": training_default("proj_hidden", 256, "projection head hidden width (the "
                                        "heads only serve MER-DG and add-on terms; scaled down "
                                        "from 2048)"),
        "fusion": optional_default("fusion", "residual", "fusion head: MMDG-Bench's Latefusion "
                                   "head (concat 120 -> Linear 40 + ReLU -> residual block -> "
                                   "Linear 1)"),
    }
    ENCODERS: ClassVar[dict[str, dict[str, Any]]] = {
        m: {"name": "sequence_transformer", "dim": 40, "layers": 5, "heads": 8,
            "embed_dropout": 0.25, "dropout": 0.1, "mask_padding": True} for m in MODALITIES}
    normalization: ClassVar[dict[str, str]] = {m: "none" for m in MODALITIES}

    def __init__(self, root: str | None = None, modalities: Sequence[str] | None = None,
                 domains: Sequence[str] | str | None = None, nonfinite: str = "error",
                 allow_outside_root: bool = False, normalize: bool = True) -> None:
        self.modalities = self.select_modalities(modalities)
        self.read_domains = _domains_option(domains)
        if nonfinite not in NONFINITE:
            raise ValueError(f"dataset option nonfinite must be one of {list(NONFINITE)}, got "
                             f"{nonfinite!r}")
        self.nonfinite = nonfinite
        self.allow_outside_root = check_flag("allow_outside_root", allow_outside_root)
        self.normalize = check_flag("normalize", normalize)
        self.root = _find_root(root)
        files, problems = _read_files(self.root, self.read_domains, self.modalities,
                                      self.allow_outside_root)
        raise_problems(problems, f"the MMSA files in {self.root}")
        self._install(files)

    def _install(self, files: dict[str, dict[str, Any]]) -> None:
        """Stack every sample (domains in order, then train / valid / test) into one float32
        array per modality, zero-padded to the longest sequence of the files (filled in
        place: the files' arrays are copied once)."""
        problems = []
        parts = [(d, role, split, files[d][split]) for d in DOMAINS if d in files
                 for role, split in SPLITS.items()]
        total = sum(len(part["regression_labels"]) for *_, part in parts)
        stacked = {m: np.zeros((total, max(p[m].shape[1] for *_, p in parts),
                                parts[0][3][m].shape[2]), np.float32) for m in self.modalities}
        targets, domains, roles, start = [], [], [], 0
        for domain, role, split, part in parts:
            labels = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
            rows = slice(start, start + len(labels))
            for m in self.modalities:
                block = stacked[m][rows, :part[m].shape[1]]
                block[...] = part[m]
                bad = ~np.isfinite(block)
                if bad.any() and self.nonfinite == "error":
                    problems.append(f"{FILES[domain]}[{split!r}][{m!r}]: {int(bad.sum())} "
                                    "NaN/Inf values (dataset option nonfinite=zero sets "
                                    "them to 0, as thuiar/MMSA does)")
                block[bad] = 0.0
            start += len(labels)
            if not np.isfinite(labels).all():
                problems.append(f"{FILES[domain]}[{split!r}]['regression_labels']: "
                                f"{int((~np.isfinite(labels)).sum())} NaN/Inf labels")
            targets.append(labels * LABEL_SCALE[domain])
            domains += [domain] * len(labels)
            roles += [role] * len(labels)
        raise_problems(problems, f"the MMSA files in {self.root}")
        x = {m: torch.from_numpy(v) for m, v in stacked.items()}
        lengths = {m: _valid_lengths(v) for m, v in x.items()}
        target = torch.from_numpy(np.concatenate(targets)).float()
        self._role = np.asarray(roles)
        self.set_samples(x, sign_classes(target), domains,
                         [d for d in DOMAINS if d in files], SIGN_CLASSES, lengths, target)

    def modality_kind(self, modality: str) -> str:
        return "text"

    def fusion_order(self) -> list[str]:
        return [m for m in FUSION_ORDER if m in self.modalities]

    def split(self, domain: str, role: str, seed: int, holdout_fraction: float) -> Dataset:
        """The domain's official split: ``train``, ``valid`` (role ``"val"``) or ``test``
        (``seed`` and ``holdout_fraction`` do not apply)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        idx = self.domain_indices(domain).numpy()
        return self.samples_at(torch.from_numpy(idx[self._role[idx] == role]))

    def preprocessing(self) -> dict[str, Any]:
        return {"sequence_length": {m: int(v.shape[1]) for m, v in self._raw.items()},
                "feature_size": {m: int(v.shape[2]) for m, v in self._raw.items()},
                "label_scale": {d: LABEL_SCALE[d] for d in self.domains},
                "nonfinite": self.nonfinite}

    @classmethod
    def check(cls, root: str | None, modalities: Sequence[str] | None = None,
              **options: Any) -> CheckReport:
        """Read the three pickles (writing nothing): samples per data set, split and sign
        class, their feature sizes and sequence lengths, and every problem, one per bad file,
        split, key or shape (and one line when the feature sizes differ)."""
        domains = _domains_option(options.pop("domains", None))
        nonfinite = options.pop("nonfinite", "error")
        if nonfinite not in NONFINITE:
            raise ValueError(f"dataset option nonfinite must be one of {list(NONFINITE)}, got "
                             f"{nonfinite!r}")
        allow = check_flag("allow_outside_root", options.pop("allow_outside_root", False))
        check_flag("normalize", options.pop("normalize", True))
        if options:
            raise ValueError(f"dataset option(s) {sorted(options)} are not MMSA's")
        mods = sorted(set(modalities)) if modalities else list(MODALITIES)
        unknown = sorted(set(mods) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown MMSA modalities {unknown}; available: {list(MODALITIES)}")
        path = _find_root(root)
        files, problems = _read_files(path, domains, mods, allow)
        counts, notes = {}, [f"root: {path}", f"modalities: {', '.join(mods)} (kind text)"]
        for domain, data in files.items():
            for split in SPLITS.values():
                part = data.get(split)
                if not isinstance(part, Mapping) or "regression_labels" not in part:
                    continue
                labels = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
                scaled = labels * LABEL_SCALE[domain]
                classes = sign_classes(torch.from_numpy(np.nan_to_num(scaled)))
                counts[f"{domain}/{split}"] = {c: int((classes == k).sum())
                                               for k, c in enumerate(SIGN_CLASSES)}
                if nonfinite == "error":
                    for m in mods:
                        if m in part and isinstance(part[m], np.ndarray) and \
                                np.issubdtype(part[m].dtype, np.number) and \
                                not np.isfinite(part[m]).all():
                            problems.append(f"{FILES[domain]}[{split!r}][{m!r}]: "
                                            f"{int((~np.isfinite(part[m])).sum())} NaN/Inf "
                                            "values (dataset option nonfinite=zero sets them "
                                            "to 0)")
            shapes = {m: data["train"][m].shape[1:] for m in mods
                      if isinstance(data.get("train"), Mapping)
                      and isinstance(data["train"].get(m), np.ndarray)
                      and data["train"][m].ndim == 3}
            notes.append(f"{domain}: " + ", ".join(f"{m} (seq_len, dim) {tuple(s)}"
                                                   for m, s in shapes.items())
                         + f"; labels x{LABEL_SCALE[domain]:g}")
        return CheckReport("mmsa", counts, problems, notes, row_kind="data set/split parts")


def _domains_option(domains: Sequence[str] | str | None) -> list[str]:
    if domains is None:
        return list(DOMAINS)
    chosen = domains.split(",") if isinstance(domains, str) else list(domains)
    unknown = sorted(set(chosen) - set(DOMAINS))
    if unknown or not chosen:
        raise ValueError(f"dataset option domains must name some of {list(DOMAINS)}, got "
                         f"{domains!r}")
    return [d for d in DOMAINS if d in chosen]


def _find_root(root: str | None) -> Path:
    if not root:
        raise FileNotFoundError("MMSA: pass --data-root DIR (or set $MERDG_DATA_ROOT), where DIR "
                                "holds mosi.pkl, mosei.pkl and sims.pkl")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"MMSA: {path} is not a directory (it should hold mosi.pkl, "
                                "mosei.pkl and sims.pkl)")
    return path


def _read_files(root: Path, domains: Sequence[str], modalities: Sequence[str],
                allow_outside_root: bool) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The pickles of ``domains`` and every problem; feature sizes compared across files."""
    files, problems, sizes = {}, [], {}
    for domain in domains:
        path = root / FILES[domain]
        if not path.is_file():
            problems.append(f"{path}: file missing")
            continue
        reason = None if allow_outside_root else outside_root(root, path)
        if reason:
            problems.append(f"{path}: {reason} (dataset option allow_outside_root=true reads "
                            "it anyway)")
            continue
        data, found = read_mmsa_file(path, modalities)
        problems += found
        if found:
            continue
        files[domain] = data
        per_split = {s: {m: int(data[s][m].shape[2]) for m in modalities}
                     for s in SPLITS.values()}
        inner = {s: d for s, d in per_split.items() if d != per_split["train"]}
        if inner:
            problems.append(f"{path}: feature sizes differ between its splits ("
                            + "; ".join(f"{s} {d}" for s, d in per_split.items()) + ")")
        sizes[domain] = per_split["train"]
    problem = feature_size_problem(sizes)
    if problem:
        problems.append(problem)
    return files, problems


def _valid_lengths(x: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """(N,) steps up to the last one with a non-zero feature (the rest is zero padding), read
    ``rows`` samples at a time."""
    steps = torch.arange(1, x.shape[1] + 1)
    return torch.cat([((chunk != 0).any(dim=2) * steps).amax(dim=1)
                      for chunk in x.split(rows)])
