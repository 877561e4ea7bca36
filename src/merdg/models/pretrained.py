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
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_state_dict"]

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
    """

    path: str
    entry: str | None
    loaded: int
    ignored: list[str] = field(default_factory=list)
    not_loaded: list[str] = field(default_factory=list)
    not_loaded_reason: str = ""
    tolerated_missing: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly digest for run records."""
        return {"path": self.path, "entry": self.entry, "loaded": self.loaded,
                "ignored": _prefix_counts(self.ignored),
                "not_loaded": _prefix_counts(self.not_loaded),
                "not_loaded_reason": self.not_loaded_reason,
                "tolerated_missing": len(self.tolerated_missing)}

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
        return "\n".join(lines)


def _prefix_counts(keys: Sequence[str], depth: int = 2) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        prefix = ".".join(key.split(".")[:depth]) + "."
        counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def read_state_dict(path: str, trust: bool = False) -> tuple[dict[str, Tensor], str | None]:
    """The tensors of a checkpoint file and the entry they came from.

    Accepts OpenMMLab files (``{"meta": ..., "state_dict": ...}``), VGGSound files
    (``{"model_state_dict": ...}``) and bare state dicts. Loads with ``weights_only=True``
    unless ``trust`` (only for files from a trusted source: unpickling can run code).
    A ``module.`` prefix on every key (saved from DataParallel) is removed.

    Raises:
        CheckpointError: The file is missing or unreadable, or holds no state dict.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {path} does not exist") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        hint = "" if trust else (" If the file comes from a trusted source, set the encoder "
                                 "option trust_checkpoint=true to unpickle it fully.")
        raise CheckpointError(f"cannot read checkpoint {path}: {err}.{hint}") from err
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
    skip = tuple(not_loaded)
    usable = {k: v for k, v in state.items()
              if k not in ignored and not (skip and k.startswith(skip))}
    unexpected = sorted(k for k in usable if k not in expected)
    missing = [k for k in expected if k not in usable and not (skip and k.startswith(skip))]
    tolerated = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in tolerated]
    mismatched = [f"{k}: file {tuple(v.shape)} vs module {tuple(expected[k].shape)}"
                  for k, v in usable.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(_mismatch_message(path, type(module).__name__, missing, unexpected,
                                                mismatched))
    module.load_state_dict(usable, strict=False)
    left = [k for k in expected if skip and k.startswith(skip)]
    return LoadReport(path, entry, len(usable), ignored, left, not_loaded_reason, tolerated)


def _mismatch_message(path: str, name: str, missing: list[str], unexpected: list[str],
                      mismatched: list[str]) -> str:
    parts = [f"checkpoint {path} does not match {name}; nothing was loaded."]
    for title, keys in (("missing from the file", missing),
                        ("unexpected in the file", unexpected),
                        ("shape mismatch", mismatched)):
        if keys:
            parts.append(f"{len(keys)} {title}: " + ", ".join(keys[:20])
                         + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else ""))
    parts.append("Check the encoder options (depth, width, input channels) and that the file "
                 "is the checkpoint this encoder expects (docs/paper-setting.md).")
    return "\n".join(parts)
