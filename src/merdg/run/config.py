"""The description of one run: :class:`RunConfig`, the only one in merdg.

Every setting of a run is one field of :class:`RunConfig`, declared once with its help text,
its command-line flag, its type and its allowed range (:class:`Option`). From those
declarations:

- ``merdg train``, ``merdg bench`` and ``merdg sweep`` build their options
  (:mod:`merdg.cli.options`), so a new run option is one new field here;
- :meth:`RunConfig.validate` checks every value before any work starts, naming the field, the
  value and what is allowed;
- :func:`config_identity` keeps the fields that change a run's results (the job hash of a
  sweep, and what a finished run or a checkpoint must match to be reused).

A bench or a sweep is a base :class:`RunConfig` plus axes (:mod:`merdg.experiments.plan`); its
runs are built with :func:`dataclasses.replace`. This module imports neither torch nor numpy,
so configs can be read and hashed anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["INIT_KINDS", "Option", "RunConfig", "check_init", "config_identity",
           "identity_differences", "init_kind", "option_default", "option_of", "run_options"]

KINDS = ("str", "int", "float", "bool", "list", "ints", "json", "pairs")
ALL = "all"  # the word a list option declared with ``all_word`` accepts for "every name"
DEVICE_PATTERN = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Option:
    """How one :class:`RunConfig` field is given and checked.

    Attributes:
        help: What the setting does (the command-line help text).
        flag: Its command-line flag.
        kind: ``"str"``, ``"int"``, ``"float"``, ``"bool"`` (a switch), ``"list"`` (of strings),
            ``"ints"`` (a list of integers), ``"json"`` (a JSON object) or ``"pairs"``
            (repeatable ``KEY=VALUE``).
        choices: Allowed values (None: any value of the kind).
        low / high: Inclusive bounds of numbers (of each integer of an ``"ints"`` list);
            ``low_open`` / ``high_open`` make them strict.
        nullable: None is allowed (meaning "not set"; the help says what that means).
        identity: The setting changes what the run computes, so it is part of the run's
            identity (:func:`config_identity`); False for where or how fast it computes.
        axis: The experiment option that sets this field per run in ``merdg bench`` and
            ``merdg sweep`` (e.g. ``"targets"``); None when the experiment passes it through.
        metavar: Placeholder in the help text.
        all_word: A ``"list"`` that may instead be the word ``"all"`` (given alone).
    """

    help: str
    flag: str
    kind: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    identity: bool = True
    axis: str | None = None
    metavar: str | None = None
    all_word: bool = False


def _setting(default: Any = dataclasses.MISSING, **option: Any) -> Any:
    """A dataclass field carrying its :class:`Option` (mutable defaults get a factory)."""
    meta = {"option": Option(**option)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything that defines one run (JSON-serializable).

    The fields and what each means are declared below with :class:`Option` (``merdg train
    --help`` prints the same texts). ``hparams`` are overrides; the values a run uses are
    resolved by :func:`merdg.run.hparams.resolve_run_hparams` (training defaults < dataset <
    algorithm < preset < random trial < overrides).
    """

    # legacy name kept for callers; the source of truth is Option.identity
    NON_IDENTITY: ClassVar[tuple[str, ...]] = ()

    dataset: str = _setting(
        help="registered dataset name (see `merdg list datasets`)", flag="--dataset", kind="str")
    target: str | None = _setting(
        None, help="held-out target domain", flag="--target", kind="str", nullable=True,
        axis="targets")
    algorithm: str = _setting(
        "ERM", help="algorithm name (`merdg list algorithms`); X+MER adds MER-DG to X",
        flag="--algorithm", kind="str", axis="algorithms")
    modalities: list[str] | None = _setting(
        None, help="modalities to use (default: all the dataset offers)", flag="--modalities",
        kind="list", nullable=True, axis="modality_sets", metavar="MODALITY")
    open_set: bool = _setting(
        False, help="open-set DG (MOOSA, arXiv 2407.01518): train on the known classes of the "
        "sources only; the target keeps every class and unknown ones must be rejected by a "
        "score threshold chosen on source validation (docs/settings.md)", flag="--open-set",
        kind="bool")
    known_classes: list[str] | None = _setting(
        None, help="known classes of --open-set, class names or indices (default: the "
        "dataset's published split)", flag="--known-classes", kind="list", nullable=True,
        metavar="CLASS")
    sources: list[str] | None = _setting(
        None, help="source domains (default: every domain but the target)", flag="--source",
        kind="list", nullable=True, axis="setting", metavar="DOMAIN")
    seed: int = _setting(
        0, help="seed of initialization, batch order and (unless --split-seed) the holdout",
        flag="--seed", kind="int", low=0, axis="seeds")
    hparams_seed: int = _setting(
        0, help="0: default hparams; k > 0: random hparam trial k", flag="--hparams-seed",
        kind="int", low=0, axis="trials")
    hparams: dict[str, Any] = _setting(
        {}, help='hparam overrides as a JSON object, e.g. \'{"lr": 1e-3, "epochs": 5}\' '
        "(`merdg list hparams` shows the resolved values)", flag="--hparams", kind="json")
    encoders: dict[str, dict[str, Any]] = _setting(
        {}, help='encoder options per modality as JSON, e.g. \'{"m0": {"hidden": 64}}\' '
        "(merged into the dataset's default spec; `merdg list encoders`)", flag="--encoders",
        kind="json")
    init: str = _setting(
        "scratch", help="encoder initialization: 'scratch' (random), 'unimodal' (first "
        "pretrain each encoder alone with a linear head on the sources' training split, epoch "
        "selected on their validation split; pretrain_* hparams), or PATH of encoder weights "
        "(a run's model.pt, a saved MultimodalNet, or a {'<modality>.<name>': tensor} file; "
        "names and shapes must match; docs/regimes.md)", flag="--init", kind="str",
        metavar="scratch|unimodal|PATH")
    freeze: str | None = _setting(
        None, help="freeze encoder parameters for fused training: 'all-but-last' (every "
        "encoder block but the last) or comma-separated parameter-name prefixes (e.g. "
        "'m0,m1.net.1'); default: nothing frozen", flag="--freeze", kind="str", nullable=True,
        metavar="all-but-last|PREFIX[,PREFIX...]")
    freeze_bn: str = _setting(
        "frozen", help="BatchNorm layers inside the frozen part: 'frozen' (normalize with "
        "their running statistics and never update them) or 'train' (batch statistics, "
        "running statistics keep updating)", flag="--freeze-bn", kind="str",
        choices=("frozen", "train"))
    preset: str | None = _setting(
        None, help="a paper configuration (`merdg list presets`): its hparams and encoder "
        "options apply between the algorithm's defaults and your overrides", flag="--preset",
        kind="str", nullable=True)
    checkpoint_dir: str | None = _setting(
        None, help="folder with the public checkpoints of the paper encoders "
        "(docs/paper-setting.md); 'none' starts them from random weights",
        flag="--checkpoint-dir", kind="str", nullable=True)
    data_root: str | None = _setting(
        None, help="dataset root directory (default: $MERDG_DATA_ROOT)", flag="--data-root",
        kind="str", nullable=True, identity=False)
    dataset_options: dict[str, Any] = _setting(
        {}, help="dataset constructor option, repeatable (e.g. shortcut_strength=0.5)",
        flag="--dataset-option", kind="pairs", metavar="KEY=VALUE")
    holdout_fraction: float = _setting(
        0.2, help="share of each source domain held out for model selection (datasets "
        "without official splits)", flag="--holdout-fraction", kind="float", low=0.0,
        high=1.0, low_open=True, high_open=True)
    split_seed: int | None = _setting(
        None, help="seed of the source train/val holdout (default: --seed); a sweep fixes it "
        "so that every trial is selected on the same validation data", flag="--split-seed",
        kind="int", low=0, nullable=True)
    out_dir: str | None = _setting(
        None, help="run directory (nothing is written without it)", flag="--out", kind="str",
        nullable=True, identity=False, axis="out_dir")
    device: str = _setting(
        "cpu", help="cpu, cuda, cuda:N, mps or auto", flag="--device", kind="str",
        identity=False)
    num_workers: int = _setting(
        0, help="DataLoader worker processes (0: load in the main process)",
        flag="--num-workers", kind="int", low=0, identity=False)
    eval_batch_size: int = _setting(
        256, help="batch size of evaluation passes (does not change the numbers)",
        flag="--eval-batch-size", kind="int", low=1, identity=False)
    save_model: bool = _setting(
        False, help="save the final weights to model.pt (needed by `merdg diagnose`)",
        flag="--save-model", kind="bool", identity=False)
    precision: str = _setting(
        "fp32", help="autocast precision of forward passes (MER-DG statistics stay float32)",
        flag="--precision", kind="str", choices=("fp32", "bf16", "fp16"))
    tensorboard: bool = _setting(
        False, help="also log scalars to TensorBoard under OUT/tensorboard "
        "(pip install 'merdg[tensorboard]')", flag="--tensorboard", kind="bool",
        identity=False)
    wandb: bool = _setting(
        False, help="also log scalars to Weights & Biases under OUT/wandb, offline unless "
        "WANDB_MODE=online (pip install 'merdg[wandb]')", flag="--wandb", kind="bool",
        identity=False)
    wandb_project: str | None = _setting(
        None, help="W&B project of --wandb (default: $WANDB_PROJECT, else merdg)",
        flag="--wandb-project", kind="str", nullable=True, identity=False)
    wandb_entity: str | None = _setting(
        None, help="W&B entity (user or team) of --wandb (default: $WANDB_ENTITY, else the "
        "default of the logged-in account)", flag="--wandb-entity", kind="str", nullable=True,
        identity=False)
    wandb_group: str | None = _setting(
        None, help="W&B group of --wandb (default: none for merdg train; bench and sweep group "
        "their runs by experiment, under the name of their --out directory)",
        flag="--wandb-group", kind="str", nullable=True, identity=False)
    eval_missing: str = _setting(
        "none", help="also evaluate the target with each modality missing (zero-filled; "
        "translated for SimMMDG/MOOSA) at the last or every epoch", flag="--eval-missing",
        kind="str", choices=("none", "last", "every"))
    corruptions: list[str] | str | None = _setting(
        None, help="also evaluate the target under these corruptions (`merdg list "
        "corruptions`; a name applies to every modality whose kind has it), or 'all' of each "
        "modality's kind (docs/robustness.md)", flag="--corruptions", kind="list",
        nullable=True, all_word=True, metavar="NAME")
    severities: list[int] = _setting(
        [1, 2, 3, 4, 5], help="severities of the graded corruptions (1 mild .. 5 severe; "
        "the mean corruption accuracy averages them, as ImageNet-C does)", flag="--severities",
        kind="ints", low=1, high=5, metavar="S")
    corruption_seed: int = _setting(
        0, help="seed of the corruptions' random draws; keep it fixed so that every algorithm "
        "and seed is scored on the same corrupted samples", flag="--corruption-seed",
        kind="int", low=0)
    eval_corruptions: str = _setting(
        "last", help="when to evaluate the corruptions: at the last epoch (tables then report "
        "the last epoch) or at every epoch (tables report the epoch source validation "
        "selects)", flag="--eval-corruptions", kind="str", choices=("last", "every"))
    encoder_probes: str = _setting(
        "none", help="measure each encoder alone: a linear probe on its embedding (fit on the "
        "sources' training split, epoch chosen on their validation split, accuracy on the "
        "target) and the effective rank of its target embeddings, at initialization (before "
        "fused training) and after the last or every epoch", flag="--encoder-probes",
        kind="str", choices=("none", "last", "every"))

    def __post_init__(self) -> None:
        self.hparams, self.encoders = _move_legacy_encoders(self.hparams, self.encoders)
        if self.corruptions == [ALL]:  # the command line's list form of the word
            self.corruptions = ALL
        if isinstance(self.severities, list) and all(_type_ok(s, "int") for s in self.severities):
            self.severities = sorted(self.severities)  # one spelling (and job hash) per set
        self.validate()

    # --- (de)serialization ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from its dict (``config.json``, ``job.json``); unknown keys raise."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown run settings {unknown} (written by a newer merdg?)")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """What defines the run's results (see :func:`config_identity`)."""
        return config_identity(self.to_dict())

    def holdout_seed(self) -> int:
        """Seed of the source train/val holdout."""
        return self.seed if self.split_seed is None else self.split_seed

    # --- validation -----------------------------------------------------------------------

    def validate(self) -> RunConfig:
        """Check every field's type and range; returns self.

        Raises:
            ValueError: One line naming the field (and its flag), the value and what is
                allowed.
        """
        for f in dataclasses.fields(self):
            _check(f.name, getattr(self, f.name), option_of(f.name))
        for m, spec in self.encoders.items():
            if not isinstance(spec, dict):
                raise ValueError(f"encoders[{m!r}] (--encoders) must be a JSON object of "
                                 f"encoder options, got {spec!r}")
        if self.known_classes is not None and not self.open_set:
            raise ValueError(f"known_classes (--known-classes) {self.known_classes} needs "
                             "--open-set")
        check_init(self.init)
        if self.freeze is not None and not [p for p in self.freeze.split(",") if p.strip()]:
            raise ValueError(f"freeze (--freeze) must be 'all-but-last' or parameter-name "
                             f"prefixes, got {self.freeze!r}")
        if self.freeze is None and self.freeze_bn != option_default("freeze_bn"):
            raise ValueError(f"freeze_bn (--freeze-bn) {self.freeze_bn!r} needs --freeze (it "
                             "sets what the BatchNorm layers of the frozen part do)")
        if self.target is not None and self.sources and self.target in self.sources:
            raise ValueError(f"target {self.target!r} is also a source domain (--source "
                             f"{' '.join(self.sources)})")
        if not self.wandb:
            unused = [option_of(n).flag for n in WANDB_OPTIONS if getattr(self, n) is not None]
            if unused:
                verb = "applies" if len(unused) == 1 else "apply"
                raise ValueError(f"{', '.join(unused)} only {verb} with --wandb (wandb is not "
                                 "set)")
        if self.corruptions is None:
            defaults = _defaults()
            unused = [option_of(n).flag for n in ("severities", "corruption_seed",
                                                  "eval_corruptions")
                      if getattr(self, n) != defaults[n]]
            if unused:
                raise ValueError(f"{', '.join(unused)} only apply with --corruptions "
                                 "(corruptions is not set)")
        return self


INIT_KINDS = ("scratch", "unimodal")
WANDB_OPTIONS = ("wandb_project", "wandb_entity", "wandb_group")


def init_kind(init: str) -> str:
    """``"scratch"``, ``"unimodal"`` or ``"file"`` (a path of encoder weights)."""
    return init if init in INIT_KINDS else "file"


def check_init(init: str) -> None:
    """Check ``--init``: a kind, or a readable file of encoder weights.

    Raises:
        ValueError: One line naming the option, the value and the problem.
    """
    if init_kind(init) != "file":
        return
    where = f"init (--init) {init!r}"
    if not os.path.exists(init):
        raise ValueError(f"{where}: no such file; give 'scratch', 'unimodal' or the path of "
                         "encoder weights (a run's model.pt, or `merdg pretrain --out`)")
    if not os.path.isfile(init):
        raise ValueError(f"{where} is not a file")
    try:
        with open(init, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise ValueError(f"{where} cannot be read ({err.strerror})") from err


def option_default(name: str) -> Any:
    """The default value of field ``name``."""
    for field_name, _, default in run_options():
        if field_name == name:
            return default
    raise KeyError(f"RunConfig has no field {name!r}")


def _move_legacy_encoders(hparams: Any, encoders: Any) -> tuple[Any, Any]:
    """Encoder options given inside ``hparams`` (the spelling before ``encoders`` was a field,
    still accepted) move to ``encoders``; field values win."""
    if not (isinstance(hparams, dict) and "encoders" in hparams):
        return hparams, encoders
    hparams = dict(hparams)
    moved = hparams.pop("encoders")
    if not isinstance(moved, dict) or not isinstance(encoders or {}, dict):
        raise ValueError(f"encoder options must be a JSON object, got {moved!r}")
    merged: dict[str, Any] = {}
    for layer in (moved, encoders or {}):
        for m, spec in layer.items():
            merged[m] = {**merged.get(m, {}), **(spec if isinstance(spec, dict) else {})}
    return hparams, merged


def option_of(name: str) -> Option:
    """The :class:`Option` of field ``name``."""
    for f in dataclasses.fields(RunConfig):
        if f.name == name:
            return f.metadata["option"]
    raise KeyError(f"RunConfig has no field {name!r}")


def run_options() -> list[tuple[str, Option, Any]]:
    """``(field name, option, default)`` for every field, in declaration order."""
    out = []
    for f in dataclasses.fields(RunConfig):
        default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else f.default)
        out.append((f.name, f.metadata["option"], default))
    return out


def _describe_range(opt: Option) -> str:
    if opt.choices is not None:
        return "one of " + ", ".join(map(repr, opt.choices))
    parts = []
    if opt.low is not None:
        parts.append(f"{'>' if opt.low_open else '>='} {opt.low:g}")
    if opt.high is not None:
        parts.append(f"{'<' if opt.high_open else '<='} {opt.high:g}")
    return " and ".join(parts)


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "ints":
        return (isinstance(value, list) and len(value) > 0
                and all(_type_ok(v, "int") for v in value))
    if kind == "str":
        return isinstance(value, str) and value != ""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return (isinstance(value, list) and len(value) > 0
                and all(isinstance(v, str) and v for v in value))
    return isinstance(value, dict)  # json, pairs


KIND_WORDS = {"str": "a non-empty string", "int": "an integer", "float": "a finite number",
              "bool": "true or false", "list": "a non-empty list of names",
              "ints": "a non-empty list of integers",
              "json": "a JSON object", "pairs": "KEY=VALUE pairs"}


def _check(name: str, value: Any, opt: Option) -> None:
    where = f"{name} ({opt.flag})"
    if value is None:
        if not opt.nullable:
            raise ValueError(f"{where} is required")
        return
    if opt.all_word and value == ALL:
        return
    if not _type_ok(value, opt.kind):
        words = KIND_WORDS[opt.kind] + (f" or {ALL!r}" if opt.all_word else "")
        raise ValueError(f"{where} must be {words}, got {value!r}")
    if opt.all_word and ALL in value:
        raise ValueError(f"{where}: {ALL!r} stands alone (it means every name), got {value}")
    if opt.kind in ("list", "ints") and len(set(value)) != len(value):
        raise ValueError(f"{where} lists a {'value' if opt.kind == 'ints' else 'name'} twice: "
                         f"{value}")
    if opt.choices is not None and value not in opt.choices:
        raise ValueError(f"{where} must be {_describe_range(opt)}, got {value!r}")
    numbers = value if opt.kind == "ints" else [value] if opt.kind in ("int", "float") else []
    for number in numbers:
        low_bad = opt.low is not None and (number <= opt.low if opt.low_open
                                           else number < opt.low)
        high_bad = opt.high is not None and (number >= opt.high if opt.high_open
                                              else number > opt.high)
        if low_bad or high_bad:
            each = " values" if opt.kind == "ints" else ""
            raise ValueError(f"{where}{each} must be {_describe_range(opt)}, got {value!r}")
    if name == "device" and not DEVICE_PATTERN.match(value):
        raise ValueError(f"{where} must be cpu, cuda, cuda:N, mps or auto, got {value!r}")


def _defaults() -> dict[str, Any]:
    return {name: default for name, _, default in run_options()}


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a :class:`RunConfig` dict that define a run's results.

    Drops the fields whose :attr:`Option.identity` is False, every field left at its default
    (so adding a field with a default keeps existing sweep hashes and checkpoints valid) and a
    ``split_seed`` equal to ``seed``. Works on the dicts of older ``config.json`` files (their
    ``hparams["encoders"]`` is read as the ``encoders`` field).
    """
    config = dict(config)
    if "hparams" in config:
        config["hparams"], config["encoders"] = _move_legacy_encoders(config["hparams"],
                                                                      config.get("encoders", {}))
    defaults = _defaults()
    skip = {name for name, opt, _ in run_options() if not opt.identity}
    identity = {k: v for k, v in config.items()
                if k not in skip and (k not in defaults or v != defaults[k])}
    if identity.get("split_seed") == config.get("seed", defaults["seed"]):
        del identity["split_seed"]
    return json.loads(json.dumps(identity, sort_keys=True))


RunConfig.NON_IDENTITY = tuple(name for name, opt, _ in run_options() if not opt.identity)


def identity_differences(saved: dict[str, Any], expected: dict[str, Any], prefix: str = "",
                         labels: tuple[str, str] = ("saved", "now")) -> list[str]:
    """``"name: a (saved) vs b (now)"`` for every entry that differs between two identity
    dicts (nested dicts give dotted names)."""
    canon = lambda x: json.loads(json.dumps(x, sort_keys=True, default=str))  # noqa: E731
    saved, expected = canon(saved), canon(expected)
    diffs = []
    for key in sorted(set(saved) | set(expected)):
        a, b = saved.get(key, _ABSENT), expected.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += identity_differences(a, b, f"{prefix}{key}.", labels)
        elif a != b:
            diffs.append(f"{prefix}{key}: {_shown(a, key, prefix, labels[0])} vs "
                         f"{_shown(b, key, prefix, labels[1])}")
    return diffs


_ABSENT = object()


def _shown(value: Any, key: str, prefix: str, label: str) -> str:
    """``"'ERM' (saved)"``; an entry the identity leaves out holds its default (a run
    field's default is shown, an hparam's depends on the algorithm and dataset)."""
    if value is not _ABSENT:
        return f"{value!r} ({label})"
    defaults = _defaults()
    if not prefix and key in defaults and key != "split_seed":
        return f"{defaults[key]!r} ({label}, the default)"
    return f"the default ({label})"
