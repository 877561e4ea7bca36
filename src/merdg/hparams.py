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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["HParam", "KINDS", "OPTIONAL_HPARAMS", "PRETRAIN_HPARAMS", "TRAINING_HPARAMS",
           "check_hparams", "describe_search", "optional_default", "resolve_hparams", "seed_hash",
           "training_default"]


KINDS = ("float", "int", "str", "bool", "dict")
KIND_WORDS = {"float": "a finite number", "int": "an integer", "str": "a string",
              "bool": "true or false", "dict": "a JSON object of finite numbers"}


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its default, what it is, its search space, its type and its range.

    Every value a run uses (a default, a preset's value, a trial's draw, a user's override) is
    checked against the declared ``kind`` and range by :func:`resolve_hparams` before the run
    starts, and the declaration itself is checked when it is made (its default and search space
    must lie in its range), so a new hparam cannot skip its type.

    Attributes:
        default: The published (or documented) default.
        help: What it is, with its source.
        search: ``None`` (fixed in random trials), ``("uniform", lo, hi)``,
            ``("loguniform", lo, hi)``, ``("int", lo, hi)`` (inclusive) or ``("choice", [values])``.
        kind: ``"float"`` (a finite number; ints are accepted), ``"int"`` (an integer: 1.5 and
            true are refused), ``"str"``, ``"bool"`` or ``"dict"`` (a JSON object whose values
            are finite numbers; ``low``/``high`` bound each value). Required (keyword).
        low / high: Bounds of numbers (inclusive; ``low_open`` / ``high_open`` make them
            strict). None: unbounded.
        choices: Allowed values (``str`` hparams).
        nullable: None is allowed (the help says what it means).
    """

    default: Any
    help: str
    search: tuple | None = None
    kind: str = field(default="", kw_only=True)
    low: float | None = field(default=None, kw_only=True)
    high: float | None = field(default=None, kw_only=True)
    low_open: bool = field(default=False, kw_only=True)
    high_open: bool = field(default=False, kw_only=True)
    choices: tuple[Any, ...] | None = field(default=None, kw_only=True)
    nullable: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"HParam({self.default!r}, {self.help[:40]!r}...) declares kind "
                            f"{self.kind!r}; declare kind= one of {', '.join(KINDS)}")
        problem = self.problem(self.default)
        if problem:
            raise ValueError(f"HParam {self.help[:40]!r}...: default {problem}")
        for bound in self._search_values():
            if bound is not None and not self._in_closed_range(bound):
                raise ValueError(f"HParam {self.help[:40]!r}...: search space {self.search} "
                                 f"leaves the declared range ({self.describe()})")

    def with_default(self, default: Any, help: str) -> HParam:
        """The same hparam (kind, range, search) with another default and help (a dataset's
        training default)."""
        return replace(self, default=default, help=help)

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

    # --- validation ------------------------------------------------------------------------

    def describe(self) -> str:
        """The allowed values in words, e.g. ``a finite number >= 0``."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text = KIND_WORDS[self.kind] + (" " + " and ".join(bounds) if bounds else "")
        return text + (", or null" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else ``"must be ..., got ..."``."""
        if value is None and self.nullable:
            return None
        if not self._valid(value):
            return f"must be {self.describe()}, got {value!r}"
        return None

    def _valid(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and (self.choices is None or value in self.choices)
        if self.kind == "dict":
            return isinstance(value, dict) and all(
                isinstance(k, str) and _is_number(v) and self._in_range(v)
                for k, v in value.items())
        if self.kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        return _is_number(value) and self._in_range(value) and (
            self.choices is None or value in self.choices)

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None
                    and (value >= self.high if self.high_open else value > self.high))

    def _in_closed_range(self, value: Any) -> bool:
        """A search bound may touch an open bound (a draw exactly on it is still refused)."""
        if self.kind in ("float", "int") and _is_number(value):
            return ((self.low is None or value >= self.low)
                    and (self.high is None or value <= self.high))
        return self.problem(value) is None

    def _search_values(self) -> list[Any]:
        if self.search is None:
            return []
        kind, *args = self.search
        return list(args[0]) if kind == "choice" else list(args[:2])


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


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
    "lr": HParam(1e-4, "Adam learning rate (official: 1e-4; 0 leaves the weights unchanged)",
                 kind="float", low=0),
    "weight_decay": HParam(1e-4, "Adam weight decay (SimMMDG scripts: 1e-4)", kind="float",
                           low=0),
    "batch_size": HParam(16, "global batch, split evenly over source domains (official: 16)",
                         kind="int", low=1),
    "epochs": HParam(20, "training epochs (official run scripts: 20)", kind="int", low=1),
    "fusion_hidden": HParam(512, "hidden width of the fusion classifier (official: 512)",
                            kind="int", low=1),
    "dropout": HParam(0.5, "dropout of the fusion classifier (official: 0.5)", kind="float",
                      low=0, high=1, high_open=True),
    "proj_hidden": HParam(2048, "hidden width of the projection heads (official: 2048)",
                          kind="int", low=1),
    "proj_dim": HParam(128, "output width of the projection heads (official: 128)", kind="int",
                       low=1),
    "grad_clip": HParam(0.0, "clip the gradient norm to this value; 0 disables (official: off)",
                        kind="float", low=0),
}

# Training hparams that a run's resolved hparams hold only when its dataset declares them (with
# its own default, through optional_default) or the user sets them (--hparams, a preset), so the
# resolved hparams of every other run stay as they were; a run without one uses the default here.
OPTIONAL_HPARAMS: dict[str, HParam] = {
    "steps": HParam(0, "optimizer steps of the run; 0: epochs x the steps of one epoch. A step "
                    "budget replaces epochs (DomainBed's --steps; MMDG-Bench's iterations)",
                    kind="int", low=0),
    "eval_every": HParam(0, "evaluate on source validation and the target every this many "
                         "steps, one record each (selection picks among them); 0: after every "
                         "epoch (DomainBed's checkpoint_freq)", kind="int", low=0),
    "fusion": HParam("mlp", "fusion head on the concatenated embeddings: 'mlp' (the paper's "
                     "Linear-ReLU-Dropout-Linear), 'linear' (one Linear layer) or 'residual' "
                     "(Linear-ReLU, a residual block, Linear: MMDG-Bench's MMSA head)",
                     kind="str", choices=("mlp", "linear", "residual")),
    "lr_schedule": HParam("constant", "learning rate over the optimizer steps: 'constant' or "
                          "'inverse', lr / (1 + 10 i / I) ** 0.75 after i of I = "
                          "lr_decay_steps steps (MMDG-Bench's HUST scripts)", kind="str",
                          choices=("constant", "inverse")),
    "lr_decay_steps": HParam(None, "the step count I of the 'inverse' schedule (None: the step "
                             "budget, steps; MMDG-Bench HUST: its 10,000 iterations)",
                             kind="int", low=1, nullable=True),
}


def optional_default(name: str, default: Any, help: str) -> HParam:
    """A dataset's declaration of an :data:`OPTIONAL_HPARAMS` hparam (kind, range) with its
    default and help."""
    return OPTIONAL_HPARAMS[name].with_default(default, help)


# The unimodal pretraining stage of ``--init unimodal`` (merdg.run.pretraining): declared for those
# runs only, so the resolved hparams of every other run stay as they were. None takes the fused
# training's value (resolved by merdg.run.hparams.resolve_run_hparams).
PRETRAIN_HPARAMS: dict[str, HParam] = {
    "pretrain_epochs": HParam(None, "epochs of unimodal pretraining (--init unimodal; None: "
                              "the run's epochs)", kind="int", low=1, nullable=True),
    "pretrain_lr": HParam(None, "Adam learning rate of unimodal pretraining (None: lr)",
                          kind="float", low=0, nullable=True),
    "pretrain_weight_decay": HParam(None, "Adam weight decay of unimodal pretraining (None: "
                                    "weight_decay)", kind="float", low=0, nullable=True),
    "pretrain_batch_size": HParam(None, "batch size of unimodal pretraining (None: "
                                  "batch_size)", kind="int", low=1, nullable=True),
}


def training_default(name: str, default: Any, help: str) -> HParam:
    """A dataset's default of a training hparam: the declaration of
    :data:`TRAINING_HPARAMS` (kind, range) with another default and help."""
    return TRAINING_HPARAMS[name].with_default(default, help)


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
        ValueError: A value (default, preset, trial or override) of the wrong type or out of
            its declared range; one line naming the hparam, the value, where it came from and
            what is allowed (:func:`check_hparams`).
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
    check_hparams(values, merged, origin)
    return values


def check_hparams(values: Mapping[str, Any], declarations: Mapping[str, HParam],
                  origin: Mapping[str, str] | None = None) -> None:
    """Check every value against its declaration's kind and range.

    Raises:
        ValueError: ``hparam NAME (ORIGIN) must be <allowed values>, got <value>``.
    """
    for name, value in values.items():
        problem = declarations[name].problem(value) if name in declarations else None
        if problem:
            where = f" ({origin[name]})" if origin and name in origin else ""
            raise ValueError(f"hparam {name}{where} {problem}")
