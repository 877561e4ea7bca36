"""One training run under the leave-one-domain-out protocol.

A run trains on every domain but the target (multi-source), holds out a seeded part of each
source domain for model selection (or uses the dataset's official validation split), starts its
encoders as ``config.init`` and ``config.freeze`` say (:mod:`merdg.run.initialization`: from
scratch, pretrained alone on the sources, or loaded from a file; partly frozen), evaluates
source-val and target accuracy after every epoch, and writes its run directory
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from merdg import dist as mdist
from merdg.algorithms import Algorithm, get_algorithm_class
from merdg.datasets import BalancedDomainBatchSampler, DomainDataset, build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.hparams import seed_hash
from merdg.models import MultimodalNet, build_encoder
from merdg.run.checkpoint import epoch_payload, restore_training_state
from merdg.run.config import RunConfig, init_kind
from merdg.run.data_parallel import enable_data_parallel, mean_over_ranks, setup_distributed
from merdg.run.directory import RunDir, RunDirConflictError
from merdg.run.encoder_probes import probe_due, probe_encoders
from merdg.run.evaluation import evaluate, evaluate_missing, merge_evaluations, missing_due
from merdg.run.hparams import resolve_run_hparams
from merdg.run.initialization import init_file_digest, prepare_encoders
from merdg.run.records import run_metadata
from merdg.run.selection import SELECTION_RULES, select_epoch

__all__ = ["build_algorithm", "resolve_device", "run_hparams", "summarize", "train"]

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
                    prepare: Callable[[dict[str, nn.Module]], Any] | None = None) -> Algorithm:
    """Encoders from ``hparams["encoders"]``, the network, the algorithm on ``device``, and its
    optimizer.

    Args:
        prepare: Called with the freshly built ``{modality: encoder}`` before the network and
            the algorithm are built around them: where a run loads, pretrains and freezes its
            encoders (:func:`merdg.run.initialization.prepare_encoders`).
    """
    encoders = {m: build_encoder(hparams["encoders"][m], dataset.input_shape(m))
                for m in dataset.modalities}
    if prepare is not None:
        prepare(encoders)
    net = MultimodalNet(encoders, dataset.num_classes, order=dataset.fusion_order(),
                        fusion_hidden=int(hparams["fusion_hidden"]),
                        dropout=float(hparams["dropout"]),
                        proj_hidden=int(hparams["proj_hidden"]), proj_dim=int(hparams["proj_dim"]))
    algo = get_algorithm_class(algorithm)(net, num_domains, hparams).to(device)
    algo.configure_optimizer()
    return algo


def _train_loader(dataset: DomainDataset, sources: Sequence[str], config: RunConfig,
                  batch_size: int) -> tuple[DataLoader, BalancedDomainBatchSampler]:
    parts = [dataset.split(d, "train", config.holdout_seed(), config.holdout_fraction)
             for d in sources]
    sampler = BalancedDomainBatchSampler([len(p) for p in parts], batch_size, config.seed,
                                         rank=mdist.rank(), world_size=mdist.world_size())
    loader = DataLoader(DomainConcat(parts), batch_sampler=sampler, collate_fn=collate,
                        num_workers=config.num_workers,
                        persistent_workers=config.num_workers > 0)
    return loader, sampler


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
    loader: DataLoader
    sampler: BalancedDomainBatchSampler
    val_sets: dict[str, Dataset]
    target_set: Dataset
    run_info: dict[str, Any]
    identity: dict[str, Any]  # what a checkpoint must match to be resumed
    out: RunDir | None  # where this process writes (None on ranks > 0 and without out_dir)
    algorithm: Algorithm | None = None  # built under the run directory's lock (_build)
    tensorboard: Any = None  # TensorBoardLogger on the writing rank when config.tensorboard


def _tensorboard_logger(config: RunConfig, out: RunDir | None):
    """The run's TensorBoard logger on the writing rank, or None (``config.tensorboard`` off,
    or a rank > 0)."""
    if not config.tensorboard or not mdist.is_main_process():
        return None
    if out is None:
        raise ValueError("tensorboard logging needs an out_dir to write to")
    from merdg.run.tensorboard import TensorBoardLogger

    return TensorBoardLogger(out.tensorboard_dir)


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
        FloatingPointError: The training loss became NaN/Inf (records so far are kept).
    """
    config.validate()
    if config.target is None:
        raise ValueError("target (--target) is required")
    device, owns_group = setup_distributed(resolve_device(config.device))
    try:
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
    finally:
        if owns_group:
            mdist.destroy()


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
        return _train_epochs(run, records, progress)
    finally:
        if run.tensorboard is not None:
            run.tensorboard.close()


def _train_epochs(run: _Run, records: list[dict[str, Any]], progress: bool) -> dict[str, Any]:
    config, device, out = run.config, run.device, run.out
    if run.tensorboard is not None:  # a resumed run: the event files restart from the records
        for record in records:
            run.tensorboard.log_record(record)
    enable_data_parallel(run.algorithm, device, run.sampler.per_domain)
    epochs = int(run.hparams["epochs"])
    bar = tqdm(range(len(records), epochs), desc=f"{config.algorithm} -> {config.target}",
               leave=False, initial=len(records), total=epochs,
               disable=not progress or not mdist.is_main_process())
    for epoch in bar:
        records.append(_run_epoch(run, epoch))
        if config.out_dir is not None:
            _save_epoch(run, records)
        _log_epoch(run, records[-1])  # after the checkpoint: logged epochs are never redone
        if run.tensorboard is not None:
            run.tensorboard.log_record(records[-1])
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
    dataset.fit_normalization(sources)
    hparams = resolve_run_hparams(config, dataset)
    loader, sampler = _train_loader(dataset, sources, config, int(hparams["batch_size"]))
    split_seed = config.holdout_seed()
    val_sets = {d: dataset.split(d, "val", split_seed, config.holdout_fraction) for d in sources}
    target_set = dataset.split(config.target, "test", split_seed, config.holdout_fraction)
    run_info = {"config": config.to_dict(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities, "domains": list(dataset.domains),
                **run_metadata()}
    identity = {"config": config.identity(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities}
    if init_kind(config.init) == "file":  # other weights at the same path: another run
        identity["init_sha256"] = init_file_digest(config.init)["sha256"]
    return _Run(config, device, hparams, dataset, sources, loader, sampler, val_sets,
                target_set, run_info, identity, out)


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
    run.algorithm = build_algorithm(run.dataset, config.algorithm, len(run.sources), run.hparams,
                                    run.device, prepare)
    run.algorithm.set_precision(config.precision)
    run.run_info.update(_load_reports(run.algorithm, run.dataset))
    if config.encoder_probes != "none" and mdist.is_main_process():
        run.run_info["encoders_at_init"] = _probe_encoders(run)


def _probe_encoders(run: _Run) -> dict[str, dict[str, float]]:
    """Probe accuracy and effective rank of every encoder (:mod:`merdg.run.encoder_probes`)."""
    config, split = run.config, run.config.holdout_seed()
    train = [run.dataset.split(d, "train", split, config.holdout_fraction) for d in run.sources]
    return probe_encoders(dict(run.algorithm.net.encoders.items()), train,
                          list(run.val_sets.values()), run.target_set, run.dataset.num_classes,
                          run.device, config.seed, config.eval_batch_size, config.num_workers)


def _start(run: _Run, resume: bool, overwrite: bool) -> list[dict[str, Any]] | dict[str, Any]:
    """Records so far (resumed, or [] for a fresh start), or the summary of a finished run.

    Rank 0 decides from the run directory (under its lock) and tells the other ranks, which
    then load the same checkpoint (multi-node runs need ``out_dir`` on a shared filesystem).
    The algorithm is built here, after the decision: a fresh run writes ``config.json`` first,
    then initializes its encoders (a unimodal pretraining stage resumes from its saved state),
    then rewrites ``config.json`` with what the initialization did.
    """
    decision = {"kind": "fresh"}
    if run.out is not None:
        decision = _decide_start(run.out, run.config, run.identity, resume, overwrite)
    decision = mdist.broadcast_object(decision)
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
    directory = RunDir(run.config.out_dir)
    if not directory.checkpoint_file.exists():
        raise FileNotFoundError(f"rank {mdist.rank()} cannot read {directory.checkpoint_file}; "
                                "multi-node runs need out_dir on a filesystem every node shares")
    checkpoint = directory.read_checkpoint(run.identity, map_location=run.device)
    if checkpoint["epoch"] != decision["epoch"]:
        raise RuntimeError(f"rank {mdist.rank()} read epoch {checkpoint['epoch']} from "
                           f"{directory.checkpoint_file}, rank 0 read epoch {decision['epoch']}")
    records = restore_training_state(checkpoint, run.algorithm, run.device, run.config.seed)
    if run.out is not None:
        run.out.rewrite_records(records)
    log.info("%s: resuming after epoch %d of %d", run.config.out_dir, decision["epoch"],
             int(run.hparams["epochs"]))
    return records


def _decide_start(out: RunDir, config: RunConfig, identity: dict[str, Any], resume: bool,
                  overwrite: bool) -> dict[str, Any]:
    """Under the lock (main process): fresh, resume from the checkpoint, finished, or error.

    Raises:
        CheckpointMismatchError: The checkpoint was written with other resolved hparams.
    """
    if overwrite:
        out.reset()
        return {"kind": "fresh"}
    early = _early_decision(out, config, resume, overwrite=False)
    if early["kind"] != "continue":
        return early
    if resume and out.checkpoint_file.exists():
        return {"kind": "resume", "epoch": out.read_checkpoint(identity)["epoch"]}
    return {"kind": "fresh"}


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
    for batch in run.loader:
        logs.append(run.algorithm.update(batch.to(run.device)))
        n_samples += len(batch)
    train_logs = mean_over_ranks(_mean_logs(logs), n_samples, run.device)
    if run.tensorboard is not None:
        run.tensorboard.log_steps(logs, epoch * len(run.loader))
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


def _evaluate_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    config = run.config
    val = {d: evaluate(run.algorithm, s, run.device, config.eval_batch_size, config.num_workers)
           for d, s in run.val_sets.items()}
    target = evaluate(run.algorithm, run.target_set, run.device, config.eval_batch_size,
                      config.num_workers)
    if missing_due(config.eval_missing, epoch, int(run.hparams["epochs"]),
                   run.dataset.modalities):
        target.update(evaluate_missing(run.algorithm, run.target_set, run.device,
                                       run.dataset.modalities, config.eval_batch_size,
                                       config.num_workers))
    return {"val": merge_evaluations(val), "target": target}


def _log_epoch(run: _Run, record: dict[str, Any]) -> None:
    terms = ", ".join(f"{k} {v:.4f}" for k, v in record["train"].items() if "/" not in k)
    log.info("epoch %d/%s: %s; val acc %.4f, target acc %.4f", record["epoch"],
             run.hparams["epochs"], terms, record["val"]["acc"], record["target"]["acc"])


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


def summarize(records: Sequence[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    """The epoch each selection rule picks, with its accuracies."""
    chosen = {}
    for rule in SELECTION_RULES:
        rec = select_epoch(records, rule)
        chosen[rule] = {"epoch": rec["epoch"], "val_acc": rec["val"]["acc"],
                        "target_acc": rec["target"]["acc"],
                        "target_probe_acc": rec["target"]["probe_acc"],
                        "val_probe_acc": rec["val"]["probe_acc"]}
        for key in ("missing", "missing_translated"):
            if key in rec["target"]:
                chosen[rule][f"target_{key}_acc"] = rec["target"][key]
    return {"selection": chosen, "epochs": len(records), "run": run_info,
            "train_time_s": sum(r["time_s"] for r in records)}
