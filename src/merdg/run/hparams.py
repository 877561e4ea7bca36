"""A run's resolved hyperparameters: the one function that computes them.

:func:`resolve_run_hparams` is what ``merdg train``, ``merdg bench``, ``merdg sweep`` and
``merdg list hparams`` use. The scalar hparams merge, in order (later wins; see
:func:`merdg.hparams.resolve_hparams`): training defaults, the dataset's defaults, the
algorithm's declared ``HPARAMS``, the preset, the trial's random draw, the user's overrides.
The encoder spec of each modality merges the dataset's default spec, the preset's encoder
options and the config's ``encoders``, key by key; ``checkpoint_dir`` then fills in the paths
of the paper encoders' public checkpoints.

The result is what a run records as ``hparams`` in ``config.json`` (encoder specs under
``"encoders"``), so a run can be rebuilt from its records alone.
"""

from __future__ import annotations

from typing import Any

from merdg.algorithms import get_algorithm_class
from merdg.datasets import DomainDataset
from merdg.hparams import OPTIONAL_HPARAMS, PRETRAIN_HPARAMS, TRAINING_HPARAMS, resolve_hparams
from merdg.models.encoders import check_encoder_spec
from merdg.presets import CHECKPOINT_FILES, Preset, get_preset, resolve_checkpoints
from merdg.run.config import RunConfig, init_kind

__all__ = ["resolve_encoders", "resolve_run_hparams"]


def _preset_of(config: RunConfig, dataset: DomainDataset) -> Preset | None:
    if config.preset is None:
        return None
    preset = get_preset(config.preset)
    if config.dataset != preset.dataset:
        raise ValueError(f"preset {preset.name} is for --dataset {preset.dataset}, not "
                         f"{config.dataset}")
    if sorted(dataset.modalities) != sorted(preset.modalities):
        raise ValueError(f"preset {preset.name} fixes the modalities to "
                         f"{'+'.join(preset.modalities)}; pick the preset of the modality set")
    if preset.checkpoints and config.checkpoint_dir is None and init_kind(config.init) != "file":
        raise ValueError("presets load the public pretrained checkpoints: pass --checkpoint-dir "
                         "DIR (docs/paper-setting.md lists the files), or --checkpoint-dir none "
                         "to start from random weights")
    return preset


def resolve_encoders(config: RunConfig, dataset: DomainDataset,
                     preset: Preset | None = None) -> dict[str, dict[str, Any]]:
    """``{modality: encoder spec}``: dataset default < preset < ``config.encoders``, plus the
    public checkpoints found in ``config.checkpoint_dir``. Options for a modality the dataset
    has but the run does not use are ignored (one ``--encoders`` can serve several modality
    sets).

    Raises:
        KeyError: ``config.encoders`` names a modality the dataset does not have, or an
            unknown encoder.
        ValueError: An encoder option the encoder does not take (the valid ones listed).
        FileNotFoundError: A checkpoint is missing from ``checkpoint_dir`` (all are listed).
    """
    specs = {m: dict(dataset.encoder_spec(m)) for m in dataset.modalities}
    for m, spec in (preset.encoders if preset else {}).items():
        if m in specs:
            specs[m].update(spec)
    for m, spec in config.encoders.items():
        if m in specs and "name" in spec and spec["name"] != specs[m].get("name"):
            # another encoder: the default's options are not its options; keep the masking
            # of padded sequences (a property of the data, not of the encoder)
            keep = {k: specs[m][k] for k in ("mask_padding",) if k in specs[m]}
            specs[m] = {**keep, **spec}
        elif m in specs:
            specs[m].update(spec)
        elif m not in dataset.ALL_MODALITIES:  # options for unused modalities may be shared
            raise KeyError(f"encoder options for {m!r}, which this dataset does not have "
                           f"(modalities: {list(dataset.ALL_MODALITIES)})")
    for m in dataset.modalities:
        check_encoder_spec(specs[m], f"encoders[{m!r}]")
    if config.checkpoint_dir is not None and config.checkpoint_dir.lower() != "none":
        wanted = [m for m in dataset.modalities if m in CHECKPOINT_FILES
                  and "checkpoint" not in specs[m]]
        if not wanted and not any("checkpoint" in s for s in specs.values()):
            raise ValueError(f"--checkpoint-dir applies to the paper encoders of modalities "
                             f"{sorted(CHECKPOINT_FILES)}; this run uses {dataset.modalities}")
        for m, path in resolve_checkpoints(config.checkpoint_dir, wanted).items():
            specs[m]["checkpoint"] = path
    return specs


def resolve_run_hparams(config: RunConfig, dataset: DomainDataset,
                        provenance: dict[str, str] | None = None) -> dict[str, Any]:
    """The hparams a run uses (``"encoders"``: its encoder specs).

    Args:
        config: The run.
        dataset: Its dataset, built with the run's modalities and options (the default encoder
            specs may depend on the data's shapes).
        provenance: If given, filled with where each hparam's value came from (``training``,
            ``dataset``, ``algorithm``, ``preset``, ``trial k``, ``override``).

    Raises:
        KeyError: Unknown algorithm, preset or hparam name (the message lists the known ones).
        ValueError: A preset that does not fit the run, a value of the wrong type or out of its
            declared range (:func:`merdg.hparams.check_hparams`), or a batch smaller than the
            algorithm needs.
    """
    algorithm_cls = get_algorithm_class(config.algorithm)
    preset = _preset_of(config, dataset)
    training = dict(TRAINING_HPARAMS)
    # an optional hparam is resolved when the user or the preset sets it (or the dataset
    # declares it, below): other runs' resolved hparams stay as they were
    chosen = {**(preset.hparams_for(config.algorithm) if preset else {}), **config.hparams}
    training.update({k: hp for k, hp in OPTIONAL_HPARAMS.items() if k in chosen})
    unimodal = init_kind(config.init) == "unimodal"
    if unimodal:
        training.update(PRETRAIN_HPARAMS)
    else:
        stray = sorted(k for k in config.hparams if k in PRETRAIN_HPARAMS)
        if stray:
            raise ValueError(f"hparams {stray} (--hparams) set the unimodal pretraining stage, "
                             f"which runs with --init unimodal only (this run: --init "
                             f"{config.init})")
    hparams = resolve_hparams(training, dataset.HPARAMS, algorithm_cls.HPARAMS,
                              preset=preset.hparams_for(config.algorithm) if preset else None,
                              overrides=config.hparams, hparams_seed=config.hparams_seed,
                              layer_names=("training", "dataset", "algorithm"),
                              provenance=provenance)
    if unimodal:
        for name in PRETRAIN_HPARAMS:
            if hparams[name] is None:
                hparams[name] = hparams[name[len("pretrain_"):]]
                if provenance is not None:
                    provenance[name] += f" (= {name[len('pretrain_'):]})"
    _check_batch(config.algorithm, algorithm_cls, hparams["batch_size"])
    _check_budget(config.hparams, hparams, provenance)
    _check_schedule(hparams)
    hparams["encoders"] = resolve_encoders(config, dataset, preset)
    return hparams


def _check_budget(overrides: dict[str, Any], hparams: dict[str, Any],
                  provenance: dict[str, str] | None = None) -> None:
    """A run is as long as its epochs or its step budget, not both: epochs given by the user
    do not apply when a step budget is set (by the user, or by the dataset: ``hust``)."""
    if overrides.get("steps") and "epochs" in overrides:
        raise ValueError(f"hparams epochs = {overrides['epochs']} and steps = "
                         f"{overrides['steps']} (--hparams) both set the run's length; set one "
                         "(steps > 0 replaces epochs)")
    if "epochs" in overrides and "steps" not in overrides and hparams.get("steps"):
        raise ValueError(f"hparams epochs = {overrides['epochs']} (--hparams) does not apply: "
                         f"this run has a step budget, steps = {hparams['steps']} (its "
                         "dataset's or preset's); set steps instead, or steps = 0 with epochs")


def _check_schedule(hparams: dict[str, Any]) -> None:
    """The 'inverse' learning-rate schedule needs its length: lr_decay_steps or a step
    budget."""
    if hparams.get("lr_schedule") == "inverse" and not (hparams.get("lr_decay_steps")
                                                        or hparams.get("steps")):
        raise ValueError("hparam lr_schedule = 'inverse' needs its length: set lr_decay_steps, "
                         "or a step budget (steps)")


def _check_batch(name: str, algorithm_cls: type, batch_size: int) -> None:
    """Algorithms whose terms are batch statistics need more than one sample per batch."""
    if batch_size < algorithm_cls.MIN_BATCH:
        raise ValueError(f"hparam batch_size = {batch_size}: {name} needs a global batch of at "
                         f"least {algorithm_cls.MIN_BATCH} ({algorithm_cls.MIN_BATCH_REASON})")
