"""How a run's encoders start: ``--init scratch|unimodal|PATH`` and ``--freeze``.

The regime of MER-DG's paper (Yarici & AlRegib, ICML 2026, arXiv 2605.01967, Section 5): the
encoders start pretrained alone (Kinetics-400, VGGSound), their lower blocks are frozen, and the
network is then trained fused. :func:`prepare_encoders` sets this up for every algorithm, on
the freshly built encoders and *before* the network and the algorithm are built around them
(MBCD's and CMRF's teachers copy the network when the algorithm is constructed, and every
optimizer takes the parameters that require gradients):

1. initialization (``config.init``):

   - ``scratch``: the random initialization of the run's seed (nothing to do);
   - a path: :func:`merdg.models.transfer.load_encoder_weights`, strict (every tensor of every
     encoder, names and shapes matched, or nothing is loaded); the file's sha256 is part of the
     run's identity (:func:`init_file_digest`), so a checkpoint written with other weights at
     the same path is not resumed;
   - ``unimodal``: the unimodal pretraining stage (:class:`merdg.run.pretraining.
     UnimodalPretraining`): each encoder alone with its own linear head, cross-entropy, Adam
     (``pretrain_*`` hparams), on the sources' training split, each encoder's epoch chosen on
     the sources' validation split. The stage saves its state after every epoch
     (``pretraining.pt``, :class:`~merdg.run.directory.RunDir`), so a run killed during the
     stage resumes it and ends bit-identical to an uninterrupted one on CPU. It draws its
     randomness from its own generators, so the fusion classifier and the heads that are built
     after it start exactly as in a run from scratch with the same seed. Under ``torchrun``
     rank 0 runs the stage and sends the selected encoders to the other ranks.

2. freezing (``config.freeze``, ``config.freeze_bn``): :func:`merdg.models.transfer.freeze`.

What was loaded, pretrained and frozen is returned for the run's ``config.json`` and records.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from merdg import dist as mdist
from merdg.datasets import DomainDataset
from merdg.models import build_encoder
from merdg.models.transfer import freeze, load_encoder_weights
from merdg.run.config import RunConfig, init_kind
from merdg.run.directory import RunDir
from merdg.run.pretraining import UnimodalPretraining

__all__ = ["check_initialization", "init_file_digest", "prepare_encoders"]

log = logging.getLogger(__name__)


def init_file_digest(path: str) -> dict[str, Any]:
    """``{"path", "sha256", "bytes"}`` of an ``--init`` file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"path": path, "sha256": digest.hexdigest(), "bytes": size}


def check_initialization(config: RunConfig, hparams: Mapping[str, Any],
                         dataset: DomainDataset) -> None:
    """Check ``config.init`` (a file) and ``config.freeze`` against the encoders the
    run will build, before anything is written: the encoders are built here once (the global
    random state is left as it was) and the file is loaded into them strictly, as
    :func:`prepare_encoders` will.

    Raises:
        CheckpointError: The file is unreadable, truncated, not written by ``torch.save``, or
            does not fit the encoders (every mismatch listed).
        ValueError: A freeze prefix that matches no encoder parameter, or an encoder that
            cannot say its blocks for ``all-but-last``.
    """
    file = init_kind(config.init) == "file"
    if not (file or config.freeze is not None):
        return
    with torch.random.fork_rng(devices=[]):
        encoders = {m: build_encoder(hparams["encoders"][m], dataset.input_shape(m))
                    for m in dataset.modalities}
    if file:
        load_encoder_weights(encoders, config.init, strict=True)
    if config.freeze is not None:
        freeze(encoders, config.freeze.strip(), bn=config.freeze_bn)


def prepare_encoders(encoders: Mapping[str, nn.Module], config: RunConfig,
                     hparams: Mapping[str, Any], dataset: DomainDataset, sources: Sequence[str],
                     device: torch.device, out: RunDir | None = None,
                     identity: Mapping[str, Any] | None = None,
                     resume: bool = True) -> dict[str, Any]:
    """Initialize and freeze the run's encoders in place (module docstring).

    Args:
        encoders: ``{modality: encoder}`` just built (random weights of the run's seed).
        config: The run (``init``, ``freeze``, ``freeze_bn``, data settings).
        hparams: Its resolved hparams (``pretrain_*`` for ``init="unimodal"``).
        dataset: Its dataset, normalized on ``sources``.
        sources: The source domains.
        device: Where the encoders train.
        out: The run directory, where the pretraining stage keeps its state (None: nowhere).
        identity: The run's identity (what a saved stage state must match).
        resume: Continue a saved pretraining stage; False starts it over.

    Returns:
        ``{"init": {...}, "freeze": {...}}`` entries for the run info (absent when there is
        nothing to say: scratch, nothing frozen).

    Raises:
        CheckpointError: ``init`` is a file that does not match the encoders (all mismatches
            listed) or cannot be read.
        ValueError: A freeze prefix that matches no encoder parameter.
        CheckpointMismatchError: A saved pretraining stage of a different run.
    """
    info: dict[str, Any] = {}
    kind = init_kind(config.init)
    encoders = dict(encoders)
    if kind == "file":
        report = load_encoder_weights(encoders, config.init, strict=True)
        log.info("%s", report.text())
        info["init"] = {"kind": "file", **init_file_digest(config.init), "load": report.summary()}
    elif kind == "unimodal":
        info["init"] = _pretrain(encoders, config, hparams, dataset, sources, device, out,
                                 identity or {}, resume)
    if config.freeze is not None:
        report = freeze(encoders, config.freeze.strip(), bn=config.freeze_bn)
        log.info("%s", report.text())
        info["freeze"] = report.summary()
    return info


def _pretrain(encoders: dict[str, nn.Module], config: RunConfig, hparams: Mapping[str, Any],
              dataset: DomainDataset, sources: Sequence[str], device: torch.device,
              out: RunDir | None, identity: Mapping[str, Any], resume: bool) -> dict[str, Any]:
    """The unimodal stage on rank 0, its selected encoders loaded on every rank; returns its
    summary."""
    result = None
    if mdist.is_main_process():
        stage = _run_stage(encoders, config, hparams, dataset, sources, device, out, identity,
                           resume)
        result = {"state": {k: v.cpu() for k, v in stage.selected_state_dict().items()},
                  "summary": _summary(stage)}
    result = mdist.broadcast_object(result)
    load_encoder_weights(encoders, result["state"], strict=True)
    return result["summary"]


def _run_stage(encoders: dict[str, nn.Module], config: RunConfig, hparams: Mapping[str, Any],
               dataset: DomainDataset, sources: Sequence[str], device: torch.device,
               out: RunDir | None, identity: Mapping[str, Any],
               resume: bool) -> UnimodalPretraining:
    split = config.holdout_seed()
    train = [dataset.split(d, "train", split, config.holdout_fraction) for d in sources]
    val = [dataset.split(d, "val", split, config.holdout_fraction) for d in sources]
    stage = UnimodalPretraining(
        encoders, dataset.num_classes, train, val, epochs=int(hparams["pretrain_epochs"]),
        lr=float(hparams["pretrain_lr"]), weight_decay=float(hparams["pretrain_weight_decay"]),
        batch_size=int(hparams["pretrain_batch_size"]), seed=config.seed, device=device,
        eval_batch_size=config.eval_batch_size, num_workers=config.num_workers)
    saved = out.read_pretraining(dict(identity)) if out is not None and resume else None
    if saved is not None:
        stage.load_state_dict(saved["stage"])
        log.info("unimodal pretraining: resuming after epoch %d of %d", stage.epochs_done,
                 stage.epochs)
    while stage.epochs_done < stage.epochs:
        record = stage.run_epoch()
        if out is not None:
            out.write_pretraining({"identity": dict(identity), "stage": stage.state_dict()})
        accs = ", ".join(f"{k[4:]} {v:.4f}" for k, v in record["val"].items()
                         if k.startswith("acc/"))
        log.info("unimodal pretraining epoch %d/%d: val acc %s", record["epoch"],
                 stage.epochs, accs)
    return stage


def _summary(stage: UnimodalPretraining) -> dict[str, Any]:
    """What the run records about its pretraining stage."""
    return {"kind": "unimodal", "hparams": dict(stage.hparams), "epochs": stage.epochs,
            "selected": stage.selection(),
            "records": [{"epoch": r["epoch"], "train": r["train"], "val": r["val"],
                         "time_s": r["time_s"]} for r in stage.records]}
