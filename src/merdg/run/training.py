"""One training run under the leave-one-domain-out protocol.

A run trains on every domain but the target (multi-source) or on the domains of
``config.sources`` (e.g. one: single-source), holds out a seeded part of each source domain for
model selection (or uses the dataset's official validation split), evaluates source-val and
target accuracy, the selective-prediction metrics and, in open-set runs (``config.open_set``:
known classes only in the sources, every class in the target), the open-set metrics after
every epoch (:mod:`merdg.run.evaluation`), starts its encoders as ``config.init`` and
``config.freeze`` say (:mod:`merdg.run.initialization`: from scratch, pretrained alone on the
sources, or loaded from a file; partly frozen), and writes its run directory
(:class:`~merdg.run.directory.RunDir`: ``config.json``, ``records.jsonl``, ``checkpoint.pt``,
``summary.json``, ``model.pt``, ``done``).

Resume: started again with the same config, an incomplete run continues from its checkpoint
(and ends with the same records as an uninterrupted run on CPU); a finished one returns its
stored summary. A directory holding a run of another config, or files merdg did not write, is
refused unless ``overwrite`` is set; a checkpoint written with other resolved hparams is refused
(:mod:`merdg.run.checkpoint`).

Data parallelism: under ``torchrun`` (``WORLD_SIZE > 1``) every rank trains on its share of
each global batch, the algorithm is wrapped in ``DistributedDataParallel``, MER-DG statistics
use the batch gathered from every rank, evaluation sums correct counts and losses over ranks,
and only rank 0 writes files (``docs/distributed.md``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from merdg import dist as mdist
from merdg.algorithms import Algorithm, NonFiniteLossError, get_algorithm_class
from merdg.datasets import BalancedDomainBatchSampler, DomainDataset, build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.datasets.open_set import known_class_part, open_set_part
from merdg.evaluation import CorruptionSpec
from merdg.evaluation.chance import near_chance_probes
from merdg.evaluation.open_set import resolve_known_classes
from merdg.hparams import seed_hash
from merdg.models import MultimodalNet, build_encoder
from merdg.run.checkpoint import epoch_payload, restore_training_state
from merdg.run.config import RunConfig, init_kind
from merdg.run.data_parallel import enable_data_parallel, mean_over_ranks, setup_distributed
from merdg.run.directory import RunDir, RunDirConflictError
from merdg.run.encoder_probes import probe_due, probe_encoders
from merdg.run.evaluation import (
    OPEN_SET_KEYS,
    check_corruption_names,
    corruptions_due,
    evaluate_corruptions,
    evaluate_missing,
    merge_evaluations,
    missing_due,
    open_set_scores,
    plan_corruptions,
    pool,
    predict,
    selective_metrics,
    split_metrics,
)
from merdg.run.hparams import resolve_run_hparams
from merdg.run.initialization import check_initialization, init_file_digest, prepare_encoders
from merdg.run.records import run_metadata
from merdg.run.selection import SELECTION_RULES, select_epoch
from merdg.run.wandb import check_wandb

__all__ = ["build_algorithm", "check_open_set", "resolve_device", "run_hparams", "summarize",
           "train"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def run_hparams(config: RunConfig, dataset: DomainDataset) -> dict[str, Any]:
    """The run's resolved hparams (:func:`merdg.run.hparams.resolve_run_hparams`)."""
    return resolve_run_hparams(config, dataset)


def build_algorithm(dataset: DomainDataset, algorithm: str, num_domains: int,
                    hparams: dict[str, Any], device: torch.device | str = "cpu",
                    num_classes: int | None = None,
                    prepare: Callable[[dict[str, nn.Module]], Any] | None = None) -> Algorithm:
    """Encoders from ``hparams["encoders"]``, the network, the algorithm on ``device``, and its
    optimizer.

    Args:
        num_classes: Outputs (default: the dataset's classes; an open-set run has one per known
            class).
        prepare: Called with the freshly built ``{modality: encoder}`` before the network and
            the algorithm are built around them: where a run loads, pretrains and freezes its
            encoders (:func:`merdg.run.initialization.prepare_encoders`).
    """
    encoders = {m: build_encoder(hparams["encoders"][m], dataset.input_shape(m))
                for m in dataset.modalities}
    if prepare is not None:
        prepare(encoders)
    net = MultimodalNet(encoders, num_classes or dataset.num_classes,
                        order=dataset.fusion_order(),
                        fusion_hidden=int(hparams["fusion_hidden"]),
                        dropout=float(hparams["dropout"]),
                        proj_hidden=int(hparams["proj_hidden"]), proj_dim=int(hparams["proj_dim"]))
    algo = get_algorithm_class(algorithm)(net, num_domains, hparams).to(device)
    algo.configure_optimizer()
    return algo


def check_open_set(config: RunConfig, dataset: DomainDataset) -> tuple[int, ...] | None:
    """The known classes of an open-set run (None for a closed-set one), checked.

    Raises:
        ValueError: One line: no published split and no ``--known-classes``, a bad class list,
            or an algorithm that needs ``--open-set`` (MOOSA-OS) in a closed-set run.
    """
    algorithm = get_algorithm_class(config.algorithm)
    if not config.open_set:
        if algorithm.OPEN_SET_ONLY:
            raise ValueError(f"{config.algorithm} is an open-set method; run it with "
                             "--open-set (or use its closed-set variant)")
        return None
    return resolve_known_classes(dataset, config.known_classes, config.dataset)


def _source_part(dataset: DomainDataset, domain: str, role: str, config: RunConfig,
                 known: tuple[int, ...] | None) -> Dataset:
    part = dataset.split(domain, role, config.holdout_seed(), config.holdout_fraction)
    if known is None:
        return part
    try:
        return known_class_part(part, known)
    except ValueError as err:
        raise ValueError(f"open-set source {domain} ({role}): {err}") from err


def source_splits(dataset: DomainDataset, config: RunConfig, sources: Sequence[str],
                  batch_size: int, known: tuple[int, ...] | None = None
                  ) -> tuple[list[Dataset], dict[str, Dataset], Dataset]:
    """The train part of each source, the val part of each source and the target's test part
    (open set: the sources' known classes only; the target with unknowns marked), checked
    before any training step.

    Raises:
        ValueError: One line naming the domain whose part is empty or smaller than its share
            of a batch, and what to change.
    """
    fraction = config.holdout_fraction
    train_parts = [_source_part(dataset, d, "train", config, known) for d in sources]
    val_sets = {d: _source_part(dataset, d, "val", config, known) for d in sources}
    target_set = dataset.split(config.target, "test", config.holdout_seed(), fraction)
    if known is not None:
        target_set = open_set_part(target_set, known)
    for d, train_part in zip(sources, train_parts):
        n_val = len(val_sets[d])
        if len(train_part) == 0:
            raise ValueError(f"source domain {d!r} has no training samples ({n_val} held out "
                             f"for validation with --holdout-fraction {fraction}); leave it "
                             "out (merdg train --source)")
        if n_val == 0 and len(train_part) < 2:
            raise ValueError(f"source domain {d!r} has {_samples(len(train_part))}: too few "
                             "for a training and a validation split; leave it out (merdg "
                             "train --source)")
        if n_val == 0:
            raise ValueError(
                f"source domain {d!r} has no validation samples (--holdout-fraction {fraction} "
                f"of its {_samples(len(train_part))} rounds to 0); raise --holdout-fraction, or "
                "leave the domain out (merdg train --source)")
    if len(target_set) == 0:
        raise ValueError(f"target domain {config.target!r} has no test samples")
    # the sampler's checks (one sample of each domain per batch, each domain's share of a
    # batch), naming the domains, before the model is built
    BalancedDomainBatchSampler([len(p) for p in train_parts], batch_size, config.seed,
                               names=sources)
    return train_parts, val_sets, target_set


def _samples(n: int) -> str:
    return f"{n} sample" + ("" if n == 1 else "s")


def _train_loader(parts: Sequence[Dataset], sources: Sequence[str], config: RunConfig,
                  batch_size: int) -> tuple[DataLoader, BalancedDomainBatchSampler]:
    sampler = BalancedDomainBatchSampler([len(p) for p in parts], batch_size, config.seed,
                                         rank=mdist.rank(), world_size=mdist.world_size(),
                                         names=sources)
    loader = DataLoader(DomainConcat(parts), batch_sampler=sampler, collate_fn=collate,
                        num_workers=config.num_workers,
                        persistent_workers=config.num_workers > 0)
    return loader, sampler


def epoch_plan(sampler: BalancedDomainBatchSampler, sources: Sequence[str]) -> dict[str, Any]:
    """What one epoch of the balanced sampler does: steps, the global batch and each source
    domain's share of it, each domain's training samples and how many of them an epoch sees
    (the domain with the fewest samples per batch share sets the epoch's length)."""
    steps = len(sampler)
    share = dict(zip(sources, sampler.per_domain))
    sizes = dict(zip(sources, sampler.sizes))
    limiting = min(sources, key=lambda d: sizes[d] // share[d])
    return {"steps_per_epoch": steps, "batch_size": sum(sampler.per_domain),
            "per_domain_batch": share, "train_samples": sizes,
            "seen_per_epoch": {d: steps * share[d] for d in sources}, "limiting_domain": limiting}


def describe_epoch_plan(plan: dict[str, Any]) -> str:
    """One line for the log and the report."""
    seen = ", ".join(f"{d} {plan['seen_per_epoch'][d]} of {plan['train_samples'][d]}"
                     for d in plan["train_samples"])
    return (f"an epoch is {plan['steps_per_epoch']} steps of {plan['batch_size']} samples "
            f"({', '.join(f'{d} {k}' for d, k in plan['per_domain_batch'].items())} per step); "
            f"samples seen per epoch: {seen} (the smallest domain, {plan['limiting_domain']}, "
            "sets the epoch length)")


def _mean_logs(logs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for entry in logs for k in entry})
    return {k: float(np.mean([entry[k] for entry in logs if k in entry])) for k in keys}


@dataclass
class _Run:
    """Everything :func:`train` sets up before the first epoch."""

    config: RunConfig
    device: torch.device
    hparams: dict[str, Any]
    dataset: DomainDataset
    sources: list[str]
    train_parts: list[Dataset]
    loader: DataLoader
    sampler: BalancedDomainBatchSampler
    val_sets: dict[str, Dataset]
    target_set: Dataset
    run_info: dict[str, Any]
    identity: dict[str, Any]  # what a checkpoint must match to be resumed
    out: RunDir | None  # where this process writes (None on ranks > 0 and without out_dir)
    known_classes: tuple[int, ...] | None = None  # dataset labels of the known classes (open set)
    algorithm: Algorithm | None = None  # built under the run directory's lock (_build)
    tensorboard: Any = None  # TensorBoardLogger on the writing rank when config.tensorboard
    wandb: Any = None  # WandbLogger on the writing rank when config.wandb
    corruption_specs: list[CorruptionSpec] = field(default_factory=list)  # config.corruptions


def _tensorboard_logger(config: RunConfig, out: RunDir | None):
    """The run's TensorBoard logger on the writing rank, or None (``config.tensorboard`` off,
    or a rank > 0)."""
    if not config.tensorboard or not mdist.is_main_process():
        return None
    if out is None:
        raise ValueError("tensorboard logging needs an out_dir to write to")
    from merdg.run.tensorboard import TensorBoardLogger

    return TensorBoardLogger(out.tensorboard_dir)


def _wandb_logger(config: RunConfig, out: RunDir | None):
    """The run's W&B logger on the writing rank (files under ``OUT/wandb``, offline unless
    ``WANDB_MODE`` says otherwise), or None (``config.wandb`` off, or a rank > 0)."""
    if not config.wandb or not mdist.is_main_process():
        return None
    if out is None:
        raise ValueError("W&B logging (--wandb) needs an out_dir to write to")
    from merdg.run.wandb import WandbLogger

    mods = "+".join(config.modalities or ["all"])
    sources = "+".join(config.sources) + "->" if config.sources else ""
    trial = f" trial{config.hparams_seed}" if config.hparams_seed else ""
    name = f"{config.algorithm} {mods} {sources}{config.target}{trial} seed{config.seed}"
    return WandbLogger(out.path, config=config.to_dict(), name=name,
                       project=config.wandb_project, entity=config.wandb_entity,
                       group=config.wandb_group)


def _loggers(run: _Run) -> list[Any]:
    return [logger for logger in (run.tensorboard, run.wandb) if logger is not None]


def train(config: RunConfig, progress: bool = True, resume: bool = True,
          overwrite: bool = False) -> dict[str, Any]:
    """Run one training job; returns the summary (also written to ``summary.json``).

    Under ``torchrun`` the process group is initialized here (nccl on CUDA, gloo on CPU) and
    torn down at the end; a process group the caller initialized is used as is.

    Args:
        config: The run.
        progress: Show a progress bar.
        resume: Continue an unfinished run from its checkpoint, and return the stored summary
            of a finished one; False starts an unfinished run over.
        overwrite: Replace whatever ``out_dir`` holds (a finished run, a run of another
            config, or files merdg did not write). Without it such a directory is refused.

    Raises:
        ValueError: Unknown domains or modalities, an empty split, or a setting out of range.
        RunDirConflictError: ``out_dir`` holds another run (or foreign files).
        CheckpointMismatchError: ``out_dir`` holds a checkpoint of a different run.
        RunDirBusyError: Another process is writing ``out_dir``.
        NonFiniteLossError: The training loss became NaN/Inf; the message names the terms,
            the step and the epoch (the records and checkpoint of the epochs before are kept).
        CheckpointDamagedError: The checkpoint to resume from is damaged and no intact
            previous one is kept.
        WriteFailedError: A run file could not be written (a full disk); what was written
            before is intact.
    """
    config.validate()
    if config.target is None:
        raise ValueError("target (--target) is required")
    check_corruption_names(config.corruptions)
    if config.wandb:
        check_wandb()  # the package and, online, credentials: before any data is read
    device, owns_group = setup_distributed(resolve_device(config.device))
    try:
        summary = _run_on_this_rank(config, device, progress, resume, overwrite)
    except BaseException:
        if owns_group:  # no barrier: another rank may be stuck in a collective
            mdist.destroy()
        raise
    if owns_group:
        # The run's modules (DDP holds the process group) are gone with the frame of
        # _run_on_this_rank; every rank waits until all are done, then the group is torn
        # down while the interpreter is whole (a gloo group freed at interpreter exit can
        # abort the process, pytorch/pytorch#190489).
        mdist.barrier()
        mdist.destroy()
    return summary


def _run_on_this_rank(config: RunConfig, device: torch.device, progress: bool, resume: bool,
                      overwrite: bool) -> dict[str, Any]:
    """`train` after the process group is set up: the decision on ``out_dir``, then the run."""
    out = RunDir(config.out_dir) if config.out_dir and mdist.is_main_process() else None
    early = mdist.broadcast_object(_early_decision(out, config, resume, overwrite))
    if early["kind"] == "error":
        raise RunDirConflictError(early["message"])
    if early["kind"] == "finished":
        log.info("%s: already finished; returning its summary", config.out_dir)
        return early["summary"]
    seed_everything(config.seed)
    run = _setup_run(config, device, out)
    if out is None:
        return _train(run, progress, resume, overwrite)
    with out.lock():  # nothing is written to out_dir before this
        return _train(run, progress, resume, overwrite)


def _early_decision(out: RunDir | None, config: RunConfig, resume: bool,
                    overwrite: bool) -> dict[str, Any]:
    """Before any data is loaded (main process): refuse an unwritable or conflicting
    directory, or return the summary of a finished run."""
    if out is None:
        return {"kind": "continue"}
    out.check_writable()
    status = out.status(config)
    if status == "running":
        return {"kind": "continue"}  # the lock reports it, with the standard message
    if overwrite:
        return {"kind": "continue"}
    if status == "foreign" and (out.saved_config() is None or out.has_finished_run()):
        return {"kind": "error", "message": out.conflict_message(config)}
    # an unfinished run of another config: its checkpoint (if any) refuses to be resumed
    # (CheckpointMismatchError, naming the differences); --restart discards it
    if status == "finished":
        if resume:
            return {"kind": "finished", "summary": out.read_summary()}
        return {"kind": "error", "message": f"{out.path} holds a finished run of this config; "
                "--restart only restarts unfinished runs; use --overwrite to replace it"}
    return {"kind": "continue"}


def _train(run: _Run, progress: bool, resume: bool, overwrite: bool) -> dict[str, Any]:
    config, out = run.config, run.out
    records = _start(run, resume, overwrite)
    if isinstance(records, dict):  # the run had already finished: its summary
        return records
    run.tensorboard = _tensorboard_logger(config, out)
    try:
        run.wandb = _wandb_logger(config, out)
        return _train_epochs(run, records, progress)
    finally:
        for logger in _loggers(run):
            logger.close()


def _train_epochs(run: _Run, records: list[dict[str, Any]], progress: bool) -> dict[str, Any]:
    config, device, out = run.config, run.device, run.out
    for logger in _loggers(run):  # a resumed run: the logs restart from the records
        for record in records:
            logger.log_record(record)
    enable_data_parallel(run.algorithm, device, run.sampler.per_domain)
    epochs = int(run.hparams["epochs"])
    if not records:
        log.info("%s -> %s: %s", config.algorithm, config.target,
                 describe_epoch_plan(run.run_info["epoch_plan"]))
    bar = tqdm(range(len(records), epochs), desc=f"{config.algorithm} -> {config.target}",
               leave=False, initial=len(records), total=epochs,
               disable=not progress or not mdist.is_main_process())
    for epoch in bar:
        records.append(_run_epoch(run, epoch))
        if config.out_dir is not None:
            _save_epoch(run, records)
        _log_epoch(run, records[-1])  # after the checkpoint: logged epochs are never redone
        for logger in _loggers(run):
            logger.log_record(records[-1])
        bar.set_postfix(val=f"{records[-1]['val']['acc']:.3f}",
                        target=f"{records[-1]['target']['acc']:.3f}")
    summary = summarize(records, run.run_info)
    if run.dataset.data_issues():
        summary["data_issues"] = run.dataset.data_issues()
    if out is not None:
        out.finish(summary, run.algorithm.state_dict() if config.save_model else None,
                   run.run_info)
    return summary


def _save_epoch(run: _Run, records: list[dict[str, Any]]) -> None:
    """Checkpoint after an epoch, then append the epoch's record (every rank calls this).

    The order makes a kill at any moment harmless: the checkpoint (which holds every record so
    far) is replaced atomically first; on resume the records file is rewritten from it, so a
    line written after the checkpoint, or half a line, never survives.
    """
    payload = epoch_payload(run.identity, run.algorithm, run.device, records)
    if run.out is not None:
        run.out.write_checkpoint(payload)
        run.out.append_record(records[-1])


def _setup_run(config: RunConfig, device: torch.device, out: RunDir | None) -> _Run:
    """Data, hparams, algorithm, loaders and the run's identity, for this rank."""
    dataset = build_dataset(config.dataset, config.data_root, config.modalities,
                            **config.dataset_options)
    dataset.check_domains([config.target, *(config.sources or [])])
    sources = config.sources or [d for d in dataset.domains if d != config.target]
    if config.target in sources:
        raise ValueError(f"target {config.target!r} is also a source domain")
    known = check_open_set(config, dataset)
    corruption_specs = plan_corruptions(dataset, config.corruptions, config.severities)
    dataset.fit_normalization(sources)
    hparams = resolve_run_hparams(config, dataset)
    batch_size = int(hparams["batch_size"])
    train_parts, val_sets, target_set = source_splits(dataset, config, sources, batch_size,
                                                      known)
    check_initialization(config, hparams, dataset)  # --init FILE, --freeze: before any write
    loader, sampler = _train_loader(train_parts, sources, config, batch_size)
    run_info = {"config": config.to_dict(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities, "domains": list(dataset.domains),
                **run_metadata()}
    if known is not None:
        run_info["known_classes"] = [dataset.class_names[k] for k in known]
    run_info["num_classes"] = len(known) if known is not None else dataset.num_classes
    run_info["epoch_plan"] = epoch_plan(sampler, sources)
    if dataset.preprocessing():
        run_info["preprocessing"] = dataset.preprocessing()
    if corruption_specs:
        run_info["corruptions"] = {
            "names": config.corruptions, "severities": config.severities,
            "seed": config.corruption_seed, "when": config.eval_corruptions,
            "plan": [str(spec) for spec in corruption_specs]}
    identity = {"config": config.identity(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities}
    if init_kind(config.init) == "file":  # other weights at the same path: another run
        identity["init_sha256"] = init_file_digest(config.init)["sha256"]
    return _Run(config, device, hparams, dataset, sources, train_parts, loader, sampler,
                val_sets, target_set, run_info, identity, out, known,
                corruption_specs=corruption_specs)


def _build(run: _Run, resume: bool) -> None:
    """Build the run's algorithm: encoders, their initialization and freezing
    (:func:`merdg.run.initialization.prepare_encoders`), network, algorithm, optimizer; then
    measure the encoders at initialization when asked (``encoder_probes``)."""
    config = run.config

    def prepare(encoders: dict[str, nn.Module]) -> None:
        run.run_info.update(prepare_encoders(encoders, config, run.hparams, run.dataset,
                                             run.sources, run.device, run.out, run.identity,
                                             resume))

    seed_everything(config.seed)
    known = run.known_classes
    run.algorithm = build_algorithm(run.dataset, config.algorithm, len(run.sources), run.hparams,
                                    run.device, num_classes=len(known) if known else None,
                                    prepare=prepare)
    run.algorithm.set_precision(config.precision)
    run.run_info.update(_load_reports(run.algorithm, run.dataset))
    if config.encoder_probes != "none" and mdist.is_main_process():
        run.run_info["encoders_at_init"] = _probe_encoders(run)


def _probe_encoders(run: _Run) -> dict[str, dict[str, float]]:
    """Probe accuracy and effective rank of every encoder (:mod:`merdg.run.encoder_probes`)."""
    config, target, classes = run.config, run.target_set, run.dataset.num_classes
    if run.known_classes is not None:  # open set: the probes see the known classes only
        classes = len(run.known_classes)
        target = known_class_part(run.dataset.split(config.target, "test", config.holdout_seed(),
                                                    config.holdout_fraction), run.known_classes)
    return probe_encoders(dict(run.algorithm.net.encoders.items()), run.train_parts,
                          list(run.val_sets.values()), target, classes,
                          run.device, config.seed, config.eval_batch_size, config.num_workers)


def _start(run: _Run, resume: bool, overwrite: bool) -> list[dict[str, Any]] | dict[str, Any]:
    """Records so far (resumed, or [] for a fresh start), or the summary of a finished run.

    Rank 0 decides from the run directory (under its lock) and tells the other ranks, which
    then load the same checkpoint (multi-node runs need ``out_dir`` on a shared filesystem).
    The algorithm is built here, after the decision: a fresh run writes ``config.json`` first,
    then initializes its encoders (a unimodal pretraining stage resumes from its saved state),
    then rewrites ``config.json`` with what the initialization did.
    """
    decision: dict[str, Any] = {"kind": "fresh"}
    checkpoint, error = None, None
    if run.out is not None:
        try:
            decision, checkpoint = _decide_start(run.out, run.config, run.identity, resume,
                                                 overwrite)
        except (ValueError, OSError) as err:  # raised below, after the other ranks know
            error, decision = err, {"kind": "failed", "message": str(err)}
    decision = mdist.broadcast_object(decision)
    if error is not None:
        raise error
    if decision["kind"] == "failed":
        raise RuntimeError(f"rank 0 could not start the run: {decision['message']}")
    if decision["kind"] == "error":
        raise RunDirConflictError(decision["message"])
    if decision["kind"] == "finished":
        log.info("%s: already finished; returning its summary", run.config.out_dir)
        return decision["summary"]
    if decision["kind"] == "fresh":
        if run.out is not None:  # config.json first: a run killed in its init stage resumes
            run.out.start({**run.run_info, "identity": run.identity}, keep_pretraining=resume)
        _build(run, resume)
        if run.out is not None:
            run.out.update_info({**run.run_info, "identity": run.identity})
        _seed_rank(run.config.seed)
        return []
    _build(run, resume=True)
    if checkpoint is None:  # ranks > 0 read the file rank 0 chose
        directory = RunDir(run.config.out_dir)
        file = directory.file(decision["file"])
        if not file.exists():
            raise FileNotFoundError(f"rank {mdist.rank()} cannot read {file}; multi-node runs "
                                    "need out_dir on a filesystem every node shares")
        checkpoint = directory.read_checkpoint(run.identity, name=decision["file"])
        if checkpoint["epoch"] != decision["epoch"]:
            raise RuntimeError(f"rank {mdist.rank()} read epoch {checkpoint['epoch']} from "
                               f"{file}, rank 0 read epoch {decision['epoch']}")
    records = restore_training_state(checkpoint, run.algorithm, run.device, run.config.seed)
    if run.out is not None:
        run.out.rewrite_records(records)
    log.info("%s: resuming after epoch %d of %d", run.config.out_dir, decision["epoch"],
             int(run.hparams["epochs"]))
    return records


def _decide_start(out: RunDir, config: RunConfig, identity: dict[str, Any], resume: bool,
                  overwrite: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Under the lock (main process): fresh, resume from the newest intact checkpoint (and
    that checkpoint, loaded on the CPU), finished, or error.

    Raises:
        CheckpointMismatchError: The checkpoint was written with other resolved hparams.
        CheckpointDamagedError: No intact checkpoint is left (:meth:`RunDir.resume_checkpoint`).
    """
    if overwrite:
        out.reset()
        return {"kind": "fresh"}, None
    early = _early_decision(out, config, resume, overwrite=False)
    if early["kind"] != "continue":
        return early, None
    found = out.resume_checkpoint(identity) if resume else None
    if found is not None:
        name, checkpoint = found
        return {"kind": "resume", "epoch": checkpoint["epoch"], "file": name}, checkpoint
    return {"kind": "fresh"}, None


def _seed_rank(seed: int) -> None:
    """Give ranks > 0 their own random stream (dropout, augmentation) after the identical
    initialization; rank 0 keeps the single-process stream."""
    if mdist.rank() > 0:
        seed_everything(seed_hash("rank", seed, mdist.rank()))


def _run_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Train one epoch, evaluate, and return the epoch's record."""
    start = time.perf_counter()
    run.algorithm.train()
    run.sampler.set_epoch(epoch)
    logs, n_samples = [], 0
    for step, batch in enumerate(run.loader, 1):
        try:
            logs.append(run.algorithm.update(batch.to(run.device)))
        except NonFiniteLossError as err:
            raise _located(err, run, step, epoch) from None
        n_samples += len(batch)
    train_logs = mean_over_ranks(_mean_logs(logs), n_samples, run.device)
    for logger in _loggers(run):
        logger.log_steps(logs, epoch * len(run.loader))
    evals = _evaluate_epoch(run, epoch)
    record = {"epoch": epoch + 1, "steps": (epoch + 1) * len(run.loader), "train": train_logs,
              **evals}
    if (probe_due(run.config.encoder_probes, epoch, int(run.hparams["epochs"]))
            and mdist.is_main_process()):
        record["encoders"] = _probe_encoders(run)
    record.update({"time_s": time.perf_counter() - start, "run": run.run_info})
    if run.dataset.data_issues():  # samples skipped so far (on_error="skip")
        record["data_issues"] = run.dataset.data_issues()
    return record


def _located(err: NonFiniteLossError, run: _Run, step: int, epoch: int) -> NonFiniteLossError:
    """``err`` with the step and epoch where it happened and what to do."""
    epochs = int(run.hparams["epochs"])
    where = f"step {step} of {len(run.loader)} in epoch {epoch + 1} of {epochs}"
    change = "lower lr (or the weights of the loss terms)"
    if run.config.out_dir is None:
        return err.located(where, change)
    if epoch == 0:
        kept = "no epoch had finished, so nothing is kept to resume from"
    else:
        kept = (f"the records and checkpoint of epoch {epoch} stay in {run.config.out_dir}; "
                "with changed hparams, start over with --restart")
    return err.located(where, f"{change} ({kept})")


def _evaluate_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Source-val (per domain and pooled) and target metrics (module docstring of
    :mod:`merdg.run.evaluation`)."""
    config = run.config
    val_outputs = {d: predict(run.algorithm, s, run.device, config.eval_batch_size,
                              config.num_workers) for d, s in run.val_sets.items()}
    target_outputs = predict(run.algorithm, run.target_set, run.device, config.eval_batch_size,
                             config.num_workers)
    val = merge_evaluations({d: split_metrics(o) for d, o in val_outputs.items()})
    pooled_val = pool(list(val_outputs.values()))
    val.update(selective_metrics(pooled_val))
    target = split_metrics(target_outputs)
    target.update(selective_metrics(target_outputs))
    if run.known_classes is not None:
        target.update(open_set_scores(target_outputs, pooled_val))
    if missing_due(config.eval_missing, epoch, int(run.hparams["epochs"]),
                   run.dataset.modalities):
        target.update(evaluate_missing(run.algorithm, run.target_set, run.device,
                                       run.dataset.modalities, config.eval_batch_size,
                                       config.num_workers))
    if run.corruption_specs and corruptions_due(config.eval_corruptions, epoch,
                                                int(run.hparams["epochs"])):
        target.update(evaluate_corruptions(
            run.algorithm, run.dataset, run.target_set, run.device, run.corruption_specs,
            target["acc"], config.corruption_seed, config.eval_batch_size, config.num_workers))
    return {"val": val, "target": target}


def _log_epoch(run: _Run, record: dict[str, Any]) -> None:
    terms = ", ".join(f"{k} {v:.4f}" for k, v in record["train"].items() if "/" not in k)
    open_set = ""
    if "h_score" in record["target"]:
        t = record["target"]
        open_set = "; open set: " + ", ".join(f"{k} {t[k]:.4f}" for k in OPEN_SET_KEYS[:3])
    log.info("epoch %d/%s: %s; val acc %.4f, target acc %.4f%s", record["epoch"],
             run.hparams["epochs"], terms, record["val"]["acc"], record["target"]["acc"],
             open_set)


def _load_reports(algorithm: Algorithm, dataset: DomainDataset) -> dict[str, Any]:
    """Pretrained-checkpoint load reports of the encoders and data problems found so far."""
    info: dict[str, Any] = {}
    reports = {m: enc.checkpoint_report for m, enc in algorithm.net.encoders.items()
               if hasattr(enc, "checkpoint_report")}
    if reports:
        info["checkpoints"] = reports
    if dataset.data_issues():
        info["data_issues"] = dataset.data_issues()
    return info


def near_chance_warnings(chosen: dict[str, Any], num_classes: int | None) -> list[str]:
    """One line per modality whose linear probe is within noise of chance on source
    validation at the selected epoch (:func:`merdg.evaluation.chance.near_chance_probes`):
    its encoder learned nothing measurable, and the fused model may silently ignore it."""
    if not num_classes or num_classes < 2 or not chosen.get("val_n"):
        return []
    flagged = near_chance_probes(chosen["val_probe_acc"], int(chosen["val_n"]), num_classes)
    return [test.describe(f"{m} probe on source validation") for m, test in flagged.items()]


def summarize(records: Sequence[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    """The epoch each selection rule picks, with its accuracies."""
    chosen = {}
    for rule in SELECTION_RULES:
        rec = select_epoch(records, rule)
        chosen[rule] = {"epoch": rec["epoch"], "val_acc": rec["val"]["acc"],
                        "target_acc": rec["target"]["acc"],
                        "target_probe_acc": rec["target"]["probe_acc"],
                        "val_probe_acc": rec["val"]["probe_acc"], "val_n": rec["val"]["n"]}
        for key in ("missing", "missing_translated"):
            if key in rec["target"]:
                chosen[rule][f"target_{key}_acc"] = rec["target"][key]
        for key in OPEN_SET_KEYS:
            if key in rec["target"]:
                chosen[rule][f"target_{key}"] = rec["target"][key]
        if "robustness" in rec["target"]:
            chosen[rule]["target_mean_corruption_acc"] = (
                rec["target"]["robustness"]["mean_corruption_acc"])
    warnings = near_chance_warnings(chosen["source_val"], run_info.get("num_classes"))
    if warnings:
        chosen["source_val"]["near_chance_probes"] = warnings
    return {"selection": chosen, "epochs": len(records), "run": run_info,
            "train_time_s": sum(r["time_s"] for r in records)}
