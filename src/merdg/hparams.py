"""Hyperparameters: a default and a search space per name, declared next to what uses them.

Algorithms and datasets declare ``HPARAMS: dict[str, HParam]``. :func:`resolve_hparams` is the
one place that merges them, in this order (later layers win):

1. the declarations: :data:`TRAINING_HPARAMS`, then the dataset's, then the algorithm's;
2. a preset's values (:mod:`merdg.presets`: where a paper run differs from the defaults);
3. a random trial (``hparams_seed > 0``) draws every hparam that has a search space, with a
   generator seeded by ``(hparams_seed, name)``, so adding an hparam leaves the other sampled
   values unchanged (the DomainBed convention);
4. the user's overrides.

A run's values (these plus its encoder specs) come from
:func:`merdg.run.hparams.resolve_run_hparams`, which adds :data:`PRETRAIN_HPARAMS` to the
training declarations for runs with ``--init unimodal`` only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HParam", "PRETRAIN_HPARAMS", "TRAINING_HPARAMS", "seed_hash", "resolve_hparams",
           "describe_search"]


@dataclass(frozen=True)
class HParam:
    """One hyperparameter.

    Attributes:
        default: The published (or documented) default.
        help: What it is, with its source.
        search: ``None`` (fixed in random trials), ``("uniform", lo, hi)``,
            ``("loguniform", lo, hi)``, ``("int", lo, hi)`` (inclusive) or ``("choice", [values])``.
    """

    default: Any
    help: str
    search: tuple | None = None

    def sample(self, rng: np.random.RandomState) -> Any:
        if self.search is None:
            return self.default
        kind, *args = self.search
        if kind == "uniform":
            return float(rng.uniform(args[0], args[1]))
        if kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
        if kind == "int":
            return int(rng.randint(args[0], args[1] + 1))
        if kind == "choice":
            return args[0][rng.randint(len(args[0]))]
        raise ValueError(f"unknown search kind {kind!r}")


def describe_search(hp: HParam) -> str:
    """Human-readable search space, e.g. ``U[0, 3]``."""
    if hp.search is None:
        return "fixed"
    kind, *args = hp.search
    names = {"uniform": "U", "loguniform": "logU", "int": "int"}
    if kind == "choice":
        return "choice" + json.dumps(args[0])
    return f"{names[kind]}[{args[0]:g}, {args[1]:g}]"


def seed_hash(*args: Any) -> int:
    """A stable 31-bit integer from the arguments (same across processes and machines)."""
    digest = hashlib.md5(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest, 16) % (2**31)


TRAINING_HPARAMS: dict[str, HParam] = {
    "lr": HParam(1e-4, "Adam learning rate (official: 1e-4)"),
    "weight_decay": HParam(1e-4, "Adam weight decay (SimMMDG scripts: 1e-4)"),
    "batch_size": HParam(16, "global batch, split evenly over source domains (official: 16)"),
    "epochs": HParam(20, "training epochs (official run scripts: 20)"),
    "fusion_hidden": HParam(512, "hidden width of the fusion classifier (official: 512)"),
    "dropout": HParam(0.5, "dropout of the fusion classifier (official: 0.5)"),
    "proj_hidden": HParam(2048, "hidden width of the projection heads (official: 2048)"),
    "proj_dim": HParam(128, "output width of the projection heads (official: 128)"),
    "grad_clip": HParam(0.0, "clip the gradient norm to this value; 0 disables (official: off)"),
}

# The unimodal pretraining stage of ``--init unimodal`` (merdg.pretraining): declared for those
# runs only, so the resolved hparams of every other run stay as they were. None takes the fused
# training's value (resolved by merdg.run.hparams.resolve_run_hparams).
PRETRAIN_HPARAMS: dict[str, HParam] = {
    "pretrain_epochs": HParam(None, "epochs of unimodal pretraining (--init unimodal; None: "
                              "the run's epochs)"),
    "pretrain_lr": HParam(None, "Adam learning rate of unimodal pretraining (None: lr)"),
    "pretrain_weight_decay": HParam(None, "Adam weight decay of unimodal pretraining (None: "
                                    "weight_decay)"),
    "pretrain_batch_size": HParam(None, "batch size of unimodal pretraining (None: "
                                  "batch_size)"),
}


def resolve_hparams(
    *declarations: Mapping[str, HParam],
    preset: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    hparams_seed: int = 0,
    layer_names: tuple[str, ...] = (),
    provenance: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Merge declarations (later ones win), apply a preset, draw a trial, apply overrides.

    Args:
        *declarations: ``HPARAMS`` mappings in increasing priority.
        preset: A preset's values (they replace the declared defaults).
        overrides: User values.
        hparams_seed: 0 keeps the defaults (and preset); k > 0 draws every searchable hparam
            for trial k.
        layer_names: Names of the declarations (for ``provenance``).
        provenance: If given, filled with ``{name: where its value came from}``.

    Raises:
        KeyError: A preset or override names an hparam that nothing declares (typos fail fast).
    """
    merged: dict[str, HParam] = {}
    origin: dict[str, str] = {}
    for i, decl in enumerate(declarations):
        merged.update(decl)
        origin.update(dict.fromkeys(decl, layer_names[i] if i < len(layer_names) else str(i)))
    for layer, what in ((preset, "preset"), (overrides, "override")):
        for name in layer or {}:
            if name not in merged:
                raise KeyError(f"unknown hparam {name!r} ({what}); known: "
                               f"{', '.join(sorted(merged))}")
    values = {name: hp.default for name, hp in merged.items()}
    values.update(preset or {})
    origin.update(dict.fromkeys(preset or {}, "preset"))
    if hparams_seed > 0:
        drawn = {name: hp.sample(np.random.RandomState(seed_hash(hparams_seed, name)))
                 for name, hp in merged.items() if hp.search is not None}
        values.update(drawn)
        origin.update(dict.fromkeys(drawn, f"trial {hparams_seed}"))
    values.update(overrides or {})
    origin.update(dict.fromkeys(overrides or {}, "override"))
    if provenance is not None:
        provenance.update(origin)
    return values
