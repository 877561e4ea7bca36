"""Strict loading of pretrained checkpoints into the paper's encoders, with a report.

A checkpoint either loads completely or not at all: every tensor the module expects must be in
the file with the right shape, and every tensor of the file must be used, except

- prefixes the caller declares *ignored* (the pretraining classifier, e.g. ``cls_head.`` of
  the Kinetics-400 models or ``audnet.fc.`` of VGGSound: the paper replaces it), and
- prefixes the caller declares *not loaded by choice* (e.g. the audio ``layer4`` when the user
  asks for the official release's behaviour, a random ``layer4``), and
- BatchNorm ``num_batches_tracked`` counters, absent from checkpoints saved by old torch
  versions (they do not affect the forward pass; they are listed in the report).

Anything else missing, unexpected or of the wrong shape raises :class:`CheckpointError` with the
full lists, so a wrong file or a wrong architecture option never loads partially in silence.

The same reading (:func:`read_state_dict`) and matching (:func:`match_state_dict`) serve the
encoders' own ``checkpoint`` option and :func:`merdg.models.transfer.load_encoder_weights`
(``--init PATH``): one mechanism for every pretrained weight a run starts from.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CheckpointError", "LoadReport", "StateMatch", "load_checkpoint", "match_state_dict",
           "read_state_dict", "torch_file_problem"]

STATE_DICT_ENTRIES = ("state_dict", "model_state_dict")  # OpenMMLab, VGGSound


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not match the module."""


@dataclass
class LoadReport:
    """What a checkpoint load did.

    Attributes:
        path: The file.
        entry: The dict entry holding the weights (``state_dict``, ``model_state_dict`` or None
            for a bare state dict).
        loaded: Number of tensors copied into the module.
        ignored: Checkpoint keys deliberately unused (e.g. the pretraining classifier).
        not_loaded: Module keys deliberately left at their initialization, with the reason.
        tolerated_missing: ``num_batches_tracked`` buffers absent from the file.
        missing / unexpected / mismatched: What a non-strict load skipped (a strict load
            raises instead, so these stay empty): module keys absent from the file, file keys
            the module lacks, and ``"key: file shape vs module shape"`` entries.
    """

    path: str
    entry: str | None
    loaded: int
    ignored: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    not_loaded_reason: str = ""
    tolerated_missing: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly digest for run records."""
        return {"path": self.path, "entry": self.entry, "loaded": self.loaded,
                "ignored": _prefix_counts(self.ignored),
                "not_loaded": _prefix_counts(self.not_loaded),
                "not_loaded_reason": self.not_loaded_reason,
                "tolerated_missing": len(self.tolerated_missing),
                "missing": list(self.missing), "unexpected": list(self.unexpected),
                "mismatched": list(self.mismatched)}

    def text(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.path}"
                 + (f" (entry '{self.entry}')" if self.entry else "")]
        for prefix, n in _prefix_counts(self.ignored).items():
            lines.append(f"  ignored {n} checkpoint tensors under {prefix}")
        for prefix, n in _prefix_counts(self.not_loaded).items():
            lines.append(f"  NOT loaded: {n} tensors under {prefix} keep their random "
                         f"initialization ({self.not_loaded_reason})")
        if self.tolerated_missing:
            lines.append(f"  {len(self.tolerated_missing)} BatchNorm num_batches_tracked "
                         "counters absent from the file (no effect on the forward pass)")
        for title, keys in (("missing from the file (left as they were)", self.missing),
                            ("unexpected in the file (unused)", self.unexpected),
                            ("shape mismatch (left as they were)", self.mismatched)):
            if keys:
                lines.append(f"  NOT strict: {len(keys)} {title}: {_first(keys)}")
        return "\n".join(lines)


def _prefix_counts(keys: Sequence[str], depth: int = 2) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:depth]) + "."
        counts[prefix] = counts.get(prefix, 0) + 1
    return counts


TRUST_HINT = ("If the file comes from a trusted source, set the encoder option "
              "trust_checkpoint=true to unpickle it fully.")


def _first(keys: Sequence[str], n: int = 20) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def read_state_dict(path: str, trust: bool = False,
                    trust_hint: str = TRUST_HINT) -> tuple[dict[str, Tensor], str | None]:
    """The tensors of a checkpoint file and the entry they came from.

    Accepts OpenMMLab files (``{"meta": ..., "state_dict": ...}``), VGGSound files
    (``{"model_state_dict": ...}``), merdg run files (``model.pt``: ``{"state_dict": ...,
    "run": ...}``) and bare state dicts. Loads with ``weights_only=True`` unless ``trust``
    (only for files from a trusted source: unpickling can run code). A ``module.`` prefix on
    every key (saved from DataParallel) is removed.

    Args:
        path: The file.
        trust: Unpickle arbitrary objects.
        trust_hint: How the user turns ``trust`` on (shown when a safe load fails).

    Raises:
        CheckpointError: The file is missing or unreadable, or holds no state dict.
    """
    try:
        problem = torch_file_problem(path)
        if problem is not None:
            raise CheckpointError(f"cannot read checkpoint {path}: {problem}")
        # merdg's run info records torch.__version__, a str subclass the safe unpickler must know
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {path} does not exist") from err
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:  # weights_only refused what the file holds
        hint = "" if trust else f" {trust_hint}"
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_sentence(err)}.{hint}"
                              ) from err
    except Exception as err:  # torch raises many types on files it cannot parse
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: "
                              f"{_first_sentence(err)}") from err
    entry = next((e for e in STATE_DICT_ENTRIES if isinstance(obj, Mapping) and e in obj), None)
    state = obj[entry] if entry else obj
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} holds no state dict (looked for {STATE_DICT_ENTRIES} or "
                              f"a dict of tensors; found {found})")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, entry


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
# the first bytes of torch's legacy (non-zip) format: a protocol-2 pickle of its magic number
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
NPY_MAGIC = b"\x93NUMPY"


def torch_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole file written by ``torch.save`` (None when it looks like one).

    Looked at before ``torch.load`` is called, so that each failure has its own words: an empty
    file, a zip archive cut short (no central directory) or with a damaged member (its CRC is
    checked, which reads the file once), a zip archive without torch's ``data.pkl``, a NumPy
    ``.npy`` array, a plain Python pickle, a text file, or other bytes. Files in torch's legacy
    format or in its older tar format are left to ``torch.load``.

    Raises:
        FileNotFoundError: No such file.
    """
    with open(path, "rb") as handle:
        start = handle.read(64)
    if not start:
        return "the file is empty (0 bytes)"
    if start.startswith(LEGACY_TORCH_MAGIC):
        return None
    if start.startswith(ZIP_MAGIC):
        return _zip_problem(path)
    if start.startswith(NPY_MAGIC):
        return "it is a NumPy .npy array, not a file written by torch.save"
    if start[:1] == b"\x80":
        return ("it is a Python pickle, not a file written by torch.save (merdg never "
                "unpickles arbitrary objects)")
    if tarfile.is_tarfile(path):  # torch's oldest format
        return None
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError:
        return f"it is not a file written by torch.save (it starts with {start[:16]!r})"
    return (f"it is a text file (it starts with {text[:32]!r}), not a file written by "
            "torch.save")


def _zip_problem(path: str | os.PathLike) -> str | None:
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except zipfile.BadZipFile:
        return (f"truncated or damaged: it starts as the zip archive torch.save writes, but the "
                f"archive's end cannot be found in its {size} bytes; copy or save it again")
    except (EOFError, OSError, ValueError, zlib.error) as err:
        return (f"truncated or damaged: the zip archive torch.save writes cannot be read to its "
                f"end ({size} bytes: {err}); copy or save it again")
    if damaged is not None:
        return (f"damaged: the checksum of its part {damaged!r} does not match; copy or save "
                "it again")
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "it is a zip archive that torch.save did not write (no data.pkl in it)"
    return None


def _first_sentence(err: BaseException) -> str:
    """The telling part of a (often many-line) torch error, on one line."""
    text = " ".join(str(err).split())
    if "WeightsUnpickler error:" in text:  # weights_only: what it refused
        reason = text.split("WeightsUnpickler error:", 1)[1].strip()
        for tail in (" Please use", " Check the documentation"):  # torch's own advice
            reason = reason.split(tail)[0]
        return f"it holds objects other than tensors and plain containers ({reason.rstrip('. ')})"
    return text[:300] + (" ..." if len(text) > 300 else "")


@dataclass
class StateMatch:
    """How a state dict fits a module's (see :func:`match_state_dict`).

    Attributes:
        usable: The file's tensors whose names and shapes the module expects.
        missing: Module keys the file lacks (``num_batches_tracked`` excepted).
        unexpected: File keys the module does not have.
        mismatched: ``"key: file shape vs module shape"`` for names present in both.
        tolerated: Module ``num_batches_tracked`` buffers the file lacks.
    """

    usable: dict[str, Tensor]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]
    tolerated: list[str]

    @property
    def exact(self) -> bool:
        """Nothing missing, unexpected or mis-shaped."""
        return not (self.missing or self.unexpected or self.mismatched)


def match_state_dict(expected: Mapping[str, Tensor], state: Mapping[str, Tensor],
                     skip: Sequence[str] = ()) -> StateMatch:
    """Compare a file's tensors with a module's ``state_dict`` name by name and shape.

    Args:
        expected: The module's ``state_dict()``.
        state: The file's tensors (already stripped of prefixes the caller ignores).
        skip: Key prefixes neither loaded nor required (left at their initialization).
    """
    skip = tuple(skip)
    skipped = (lambda k: k.startswith(skip)) if skip else (lambda k: False)  # noqa: E731
    present = {k: v for k, v in state.items() if not skipped(k)}
    unexpected = sorted(k for k in present if k not in expected)
    missing = [k for k in expected if k not in present and not skipped(k)]
    tolerated = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in tolerated]
    mismatched = [f"{k}: file {tuple(v.shape)} vs module {tuple(expected[k].shape)}"
                  for k, v in present.items() if k in expected and v.shape != expected[k].shape]
    usable = {k: v for k, v in present.items()
              if k in expected and v.shape == expected[k].shape}
    return StateMatch(usable, missing, unexpected, mismatched, tolerated)


def load_checkpoint(module: nn.Module, path: str, ignore: Sequence[str] = (),
                    not_loaded: Sequence[str] = (), not_loaded_reason: str = "",
                    trust: bool = False) -> LoadReport:
    """Copy a checkpoint into ``module`` strictly (see the module docstring).

    Args:
        module: The module whose ``state_dict`` names the checkpoint must match.
        path: The checkpoint file.
        ignore: Checkpoint key prefixes that are deliberately unused.
        not_loaded: Key prefixes deliberately left at their initialization.
        not_loaded_reason: Why (shown in the report).
        trust: Unpickle arbitrary objects (see :func:`read_state_dict`).

    Raises:
        CheckpointError: Missing, unexpected or mis-shaped tensors (all listed).
    """
    state, entry = read_state_dict(path, trust)
    expected = module.state_dict()
    ignored = [k for k in state if k.startswith(tuple(ignore))] if ignore else []
    match = match_state_dict(expected, {k: v for k, v in state.items() if k not in ignored},
                             skip=not_loaded)
    if not match.exact:
        raise CheckpointError(mismatch_message(path, type(module).__name__, match))
    module.load_state_dict(match.usable, strict=False)
    skip = tuple(not_loaded)
    left = [k for k in expected if skip and k.startswith(skip)]
    return LoadReport(path, entry, len(match.usable), ignored, left, not_loaded_reason,
                      match.tolerated)


PAPER_HINT = ("Check the encoder options (depth, width, input channels) and that the file is "
              "the checkpoint this encoder expects (docs/paper-setting.md).")


def mismatch_message(path: str, name: str, match: StateMatch, hint: str = PAPER_HINT) -> str:
    """The strict-load error: every missing, unexpected and mis-shaped key (first 20 each)."""
    parts = [f"checkpoint {path} does not match {name}; nothing was loaded."]
    for title, keys in (("missing from the file", match.missing),
                        ("unexpected in the file", match.unexpected),
                        ("shape mismatch", match.mismatched)):
        if keys:
            parts.append(f"{len(keys)} {title}: {_first(keys)}")
    parts.append(hint)
    return "\n".join(parts)
