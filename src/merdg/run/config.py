"""The description of one run: :class:`RunConfig`, the only one in merdg.

Every setting of a run is one field of :class:`RunConfig`, declared once with its help text,
its command-line flag, its type and its allowed range (:class:`merdg.options.Option`). From
those declarations:

- ``merdg train``, ``merdg bench`` and ``merdg sweep`` build their options
  (:mod:`merdg.cli.options`), so a new run option is one new field here;
- :meth:`RunConfig.validate` checks every value before any work starts, naming the field, the
  value and what is allowed;
- :func:`config_identity` keeps the fields that change a run's results (the job hash of a
  sweep, and what a finished run or a checkpoint must match to be reused).

What a run evaluates beyond clean accuracy is the ``evaluations`` field: the settings of each
requested evaluator, outside the run's identity, so that evaluating a trained run more never
retrains it. :mod:`merdg.evaluators` declares and checks them
(:func:`~merdg.evaluators.canonical_evaluations`, called by the commands and by
:func:`~merdg.run.training.train` before any work), so that this module imports neither torch
nor numpy, and configs can be read and hashed anywhere.

A bench or a sweep is a base :class:`RunConfig` plus axes (:mod:`merdg.experiments.plan`); its
runs are built with :func:`dataclasses.replace`. Configs written by earlier versions (the
evaluation fields ``eval_missing``, ``corruptions``, ``severities``, ``corruption_seed``,
``eval_corruptions``, ``encoder_probes``, and a boolean ``save_model``) are read through
:func:`migrate_config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from merdg.options import Option, Settings
from merdg.options import setting as _setting

__all__ = ["INIT_KINDS", "Option", "RunConfig", "SAVE_MODEL", "check_init", "config_identity",
           "identity_differences", "init_kind", "migrate_config", "option_default",
           "option_of", "run_options"]

# which weights a run saves (the models its post-training evaluations and `merdg evaluate` use)
SAVE_MODEL = ("selected", "selected+last", "none")

@dataclass
class RunConfig(Settings):
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
    save_model: str = _setting(
        "selected", help="weights to save: 'selected' (model.pt, the epoch source validation "
        "selects: the one the tables report), 'selected+last' (also model.last.pt, the last "
        "epoch's) or 'none'; `merdg evaluate` and `merdg diagnose` need them (docs/evaluation.md "
        "gives the disk cost)", flag="--save-model", kind="str", choices=SAVE_MODEL,
        identity=False)
    checkpoint_every: float = _setting(
        60.0, help="seconds of training between checkpoints: one is written after the first "
        "evaluation that ends at least this long after the previous one (0: after every "
        "evaluation); a killed run resumes from the last, exactly as if it had not stopped",
        flag="--checkpoint-every", kind="float", low=0.0, identity=False, metavar="SECONDS")
    log_every: int = _setting(
        0, help="log a line (step, loss, samples per second) every this many training steps "
        "(0: every 30 seconds or so, at least once an epoch)", flag="--log-every", kind="int",
        low=0, identity=False, metavar="STEPS")
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
    evaluations: dict[str, dict[str, Any]] = _setting(
        {}, help="settings of the evaluators beyond clean accuracy, {evaluator: {setting: "
        "value}} (set by their own flags: --eval-missing, --corruptions, --encoder-probes, "
        "--ood-dataset, ...; docs/evaluation.md)", flag="--evaluations", kind="json",
        identity=False, cli=False)

    def __post_init__(self) -> None:
        self.hparams, self.encoders = _move_legacy_encoders(self.hparams, self.encoders)
        self.validate()

    # --- (de)serialization ----------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from its dict (``config.json``, ``job.json``; an earlier version's is
        migrated, :func:`migrate_config`); unknown keys raise."""
        data = migrate_config(data)
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
        super().validate()
        for m, spec in self.encoders.items():
            if not isinstance(spec, dict):
                raise ValueError(f"encoders[{m!r}] (--encoders) must be a JSON object of "
                                 f"encoder options, got {spec!r}")
        for name, settings in self.evaluations.items():  # their own checks: merdg.evaluators
            if not isinstance(settings, dict):
                raise ValueError(f"evaluations[{name!r}] must be a JSON object of the "
                                 f"evaluator's settings, got {settings!r}")
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
    return RunConfig.option_of(name)


def run_options() -> list[tuple[str, Option, Any]]:
    """``(field name, option, default)`` for every field, in declaration order."""
    return RunConfig.options()


def _defaults() -> dict[str, Any]:
    return RunConfig.defaults()


# the evaluation settings of earlier versions (RunConfig fields then) and their defaults
LEGACY_EVALUATION_FIELDS = {"eval_missing": "none", "corruptions": None,
                            "severities": [1, 2, 3, 4, 5], "corruption_seed": 0,
                            "eval_corruptions": "last", "encoder_probes": "none"}


def migrate_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an earlier version in today's form (a copy; today's dicts unchanged).

    The evaluation fields of earlier versions become ``evaluations`` entries (``eval_missing``
    ``last|every`` -> ``missing``; ``corruptions``, ``severities`` and ``corruption_seed`` ->
    ``corruptions``; ``encoder_probes`` ``last|every`` -> ``encoder_probes``; the epoch at
    which they ran is now the selected one, :mod:`merdg.evaluators`), and a boolean
    ``save_model`` (the final weights) becomes ``"selected+last"`` (True) or ``"selected"``.
    """
    if not any(k in config for k in LEGACY_EVALUATION_FIELDS) and not isinstance(
            config.get("save_model"), bool):
        return config
    config = dict(config)
    legacy = {k: config.pop(k, default) for k, default in LEGACY_EVALUATION_FIELDS.items()}
    evaluations = dict(config.get("evaluations") or {})
    if legacy["eval_missing"] not in (None, "none"):
        evaluations.setdefault("missing", {})
    if legacy["corruptions"] is not None:
        evaluations.setdefault("corruptions", {"corruptions": legacy["corruptions"],
                                               "severities": legacy["severities"],
                                               "corruption_seed": legacy["corruption_seed"]})
    if legacy["encoder_probes"] not in (None, "none"):
        evaluations.setdefault("encoder_probes", {})
    if evaluations:
        config["evaluations"] = evaluations
    if isinstance(config.get("save_model"), bool):
        config["save_model"] = "selected+last" if config["save_model"] else "selected"
    return config


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a :class:`RunConfig` dict that define a run's results.

    Drops the fields whose :attr:`Option.identity` is False, every field left at its default
    (so adding a field with a default keeps existing sweep hashes and checkpoints valid) and a
    ``split_seed`` equal to ``seed``. Works on the dicts of older ``config.json`` files (their
    ``hparams["encoders"]`` is read as the ``encoders`` field).
    """
    config = migrate_config(dict(config))
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
