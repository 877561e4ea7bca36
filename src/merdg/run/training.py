"""One training run under the leave-one-domain-out protocol.

A run trains on every domain but the target (multi-source) or on the domains of
``config.sources`` (e.g. one: single-source), holds out a seeded part of each source domain for
model selection (or uses the dataset's official validation split), starts its encoders as
``config.init`` and ``config.freeze`` say (:mod:`merdg.run.initialization`: from scratch,
pretrained alone on the sources, or loaded from a file; partly frozen), evaluates source-val and
target accuracy after every epoch, keeps the weights of the epoch source validation selects,
runs the evaluations of a trained model on them at the end (selective prediction, open set,
missing modalities, corruptions, ...: :mod:`merdg.run.evaluation`), and writes its run
directory (:class:`~merdg.run.directory.RunDir`: ``config.json``, ``records.jsonl``,
``checkpoint.pt``, ``evaluations/``, ``summary.json``, ``model.pt``, ``done``).

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

import contextlib
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

from merdg import dist as mdist
from merdg.algorithms import Algorithm, NonFiniteLossError
from merdg.datasets import BalancedDomainBatchSampler, DomainDataset
from merdg.datasets.base import DomainConcat, collate
from merdg.evaluators import canonical_evaluations
from merdg.evaluators.encoder_probes import near_chance_warnings
from merdg.hparams import seed_hash
from merdg.progress import progress_bar
from merdg.run.checkpoint import (
    epoch_payload,
    restore_rng,
    restore_training_state,
    state_digest,
)
from merdg.run.config import RunConfig, init_kind
from merdg.run.data_parallel import enable_data_parallel, mean_over_ranks, setup_distributed
from merdg.run.directory import RunDir, RunDirConflictError
from merdg.run.evaluation import EvaluationStage, evaluate_run, missing_evaluations
from merdg.run.hparams import resolve_run_hparams
from merdg.run.initialization import check_initialization, init_file_digest, prepare_encoders
from merdg.run.records import EpochRecord, run_metadata, run_rows
from merdg.run.schedule import Schedule, TrainingBatches
from merdg.run.selection import select_epoch
from merdg.run.setup import (
    RunData,
    build_algorithm,
    check_open_set,
    prepare_data,
    resolve_device,
    run_dataset,
    run_sources,
    source_splits,
)
from merdg.run.wandb import check_wandb

__all__ = ["build_algorithm", "check_open_set", "resolve_device", "run_hparams",
           "source_splits", "summarize", "train"]

log = logging.getLogger(__name__)

_clock = time.monotonic  # what checkpoint_every is measured with (tests replace it)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_hparams(config: RunConfig, dataset: DomainDataset) -> dict[str, Any]:
    """The run's resolved hparams (:func:`merdg.run.hparams.resolve_run_hparams`)."""
    return resolve_run_hparams(config, dataset)


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
    data: RunData
    stage: EvaluationStage
    loader: DataLoader
    sampler: BalancedDomainBatchSampler
    run_info: dict[str, Any]
    identity: dict[str, Any]  # what a checkpoint must match to be resumed
    out: RunDir | None  # where this process writes (None on ranks > 0 and without out_dir)
    algorithm: Algorithm | None = None  # built under the run directory's lock (_build)
    tensorboard: Any = None  # TensorBoardLogger on the writing rank when config.tensorboard
    wandb: Any = None  # WandbLogger on the writing rank when config.wandb
    # the epoch source validation selects so far and its weights (CPU copy)
    selected: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "state": None})
    # a resumed run's random state, set when training continues (TrainingBatches.start_at)
    restore_rng: Callable[[], None] | None = None
    checkpointed: int = 0  # records in the last checkpoint written
    checkpoint_time: float = field(default_factory=lambda: _clock())  # when it was written

    @property
    def schedule(self) -> Schedule:
        return Schedule.of(self.hparams, len(self.sampler))

    @property
    def dataset(self) -> DomainDataset:
        return self.data.dataset

    @property
    def sources(self) -> list[str]:
        return self.data.sources


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
    canonical_evaluations(config.evaluations)  # checked before any work
    if config.target is None:
        raise ValueError("target (--target) is required")
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
        _evaluate_finished(config)
        return early["summary"]
    seed_everything(config.seed)
    run = _setup_run(config, device, out)
    if out is None:
        return _train(run, progress, resume, overwrite)
    with out.lock():  # nothing is written to out_dir before this
        return _train(run, progress, resume, overwrite)


def _evaluate_finished(config: RunConfig) -> None:
    """The evaluations ``config`` asks for that the finished run in ``config.out_dir`` lacks,
    on its saved weights (:func:`merdg.run.evaluation.evaluate_run`)."""
    if mdist.is_distributed():
        return  # every rank would evaluate alone; `merdg evaluate` does it in one process
    directory = RunDir(config.out_dir)
    if not missing_evaluations(directory, config):
        return
    rules = ["source_val", "last"] if config.save_model == "selected+last" else ["source_val"]
    for rule in rules:
        if directory.model_file_of(rule) is not None:
            evaluate_run(config.out_dir, config.evaluations, rule, config.device,
                         eval_batch_size=config.eval_batch_size,
                         num_workers=config.num_workers)


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
    # an unfinished run of another config: its checkpoint (or pretraining state) refuses to be
    # resumed (CheckpointMismatchError, naming the differences); without one, what it recorded
    # is refused the same way (a run stopped before its first checkpoint, or whose checkpoints
    # were removed); --restart discards it
    if status == "foreign" and resume and not out.has_saved_state():
        return {"kind": "error", "message": out.conflict_message(config)}
    if status == "finished":
        if resume:
            return {"kind": "finished", "summary": out.read_summary()}
        return {"kind": "error", "message": f"{out.path} holds a finished run of this config; "
                "--restart only restarts unfinished runs; use --overwrite to replace it"}
    return {"kind": "continue"}


def _train(run: _Run, progress: bool, resume: bool, overwrite: bool) -> dict[str, Any]:
    config, out = run.config, run.out
    with contextlib.ExitStack() as stack:
        records = _start(run, resume, overwrite, stack)
        if isinstance(records, dict):  # the run had already finished: its summary
            return records
        run.tensorboard = _tensorboard_logger(config, out)
        try:
            run.wandb = _wandb_logger(config, out)
            return _train_loop(run, records, progress)
        finally:
            for logger in _loggers(run):
                logger.close()


def _train_loop(run: _Run, records: list[dict[str, Any]], progress: bool) -> dict[str, Any]:
    """Train to the end of the schedule, one record per evaluation, then the end stage."""
    config, device, out, schedule = run.config, run.device, run.out, run.schedule
    for logger in _loggers(run):  # a resumed run: the logs restart from the records
        for record in records:
            logger.log_record(record)
    enable_data_parallel(run.algorithm, device, run.sampler.per_domain)
    if not records:
        log.info("%s -> %s: %s; %s", config.algorithm, config.target,
                 describe_epoch_plan(run.run_info["epoch_plan"]), schedule.describe())
    points = schedule.evaluation_steps()
    step = int(records[-1]["steps"]) if records else 0
    batches = TrainingBatches(run.loader, run.sampler, schedule.steps_per_epoch)
    batches.start_at(step, run.restore_rng)
    bar = progress_bar(total=len(points), initial=len(records), leave=False,
                       shown=progress and mdist.is_main_process(),
                       desc=f"{config.algorithm} -> {config.target}", unit="eval")
    lines = _ProgressLines(run)
    for index in range(len(records), len(points)):
        records.append(_train_and_evaluate(run, batches, lines, step, points[index]))
        step = points[index]
        _keep_selected(run, records)
        if config.out_dir is not None:
            _save(run, records)
        _log_evaluation(run, records[-1])  # after its record is written
        for logger in _loggers(run):
            logger.log_record(records[-1])
        bar.update()
        bar.set_postfix(val=f"{records[-1]['val']['acc']:.3f}",
                        target=f"{records[-1]['target']['acc']:.3f}")
    bar.close()
    models, evaluations = _evaluate_models(run, records)
    selected = {k: v for e in evaluations if e["model"]["rule"] == "source_val"
                for k, v in e["columns"].items()}
    for logger in _loggers(run):
        logger.log_evaluations(selected, int(records[-1]["steps"]))
    summary = summarize(records, evaluations, models, str(out.path) if out else "")
    if run.dataset.data_issues():
        summary["data_issues"] = run.dataset.data_issues()
    if out is not None:
        for evaluation in evaluations:
            out.write_evaluation(evaluation["key"], evaluation)
        saved = [m for m in models if m["file"]]
        out.finish(summary, saved, run.run_info)
    return summary


def _cpu_state(algorithm: Algorithm) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in algorithm.state_dict().items()}


def _keep_selected(run: _Run, records: list[dict[str, Any]]) -> None:
    """Keep a copy of the weights when the new epoch is the one source validation selects so
    far (ties: the later epoch, as :func:`merdg.run.selection.select_epoch`)."""
    if select_epoch(records, "source_val") is records[-1]:
        run.selected = {"epoch": records[-1]["epoch"], "state": _cpu_state(run.algorithm)}


def _evaluate_models(run: _Run, records: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The models the run keeps (``config.save_model``: the selected epoch's, the last
    epoch's) and their ``"model"`` evaluations (:class:`merdg.run.evaluation
    .EvaluationStage`); the algorithm holds the selected weights afterwards."""
    config, last = run.config, int(records[-1]["epoch"])
    if run.selected["state"] is None:  # lost with a checkpoint of an earlier merdg
        run.selected = {"epoch": last, "state": _cpu_state(run.algorithm)}
    selected = int(run.selected["epoch"])
    saves = config.save_model != "none"
    models = []
    if config.save_model == "selected+last" and last != selected:
        state = _cpu_state(run.algorithm)
        models.append({"rule": "last", "epoch": last, "state": state,
                       "digest": state_digest(state), "file": RunDir.LAST_MODEL})
    state = run.selected["state"]
    models.append({"rule": "source_val", "epoch": selected, "state": state,
                   "digest": state_digest(state), "file": RunDir.MODEL if saves else None})
    evaluations = []
    for model in models:
        run.algorithm.load_state_dict(model["state"])
        info = {k: model[k] for k in ("rule", "epoch", "digest", "file")}
        evaluations += run.stage.model(run.algorithm, run.device, run.run_info, info)
    return models, evaluations


def _save(run: _Run, records: list[dict[str, Any]]) -> None:
    """After an evaluation (every rank calls this): a checkpoint when ``config.checkpoint_every``
    seconds have passed since the last one (rank 0's clock decides for all), then the record.

    The order makes a kill at any moment harmless: the checkpoint (which holds every record so
    far) is replaced atomically first; on resume the records file is rewritten from it, so a
    line written after the last checkpoint, or half a line, never survives.
    """
    due = _clock() - run.checkpoint_time >= run.config.checkpoint_every
    if mdist.broadcast_object(due):
        selected = dict(run.selected)
        if selected["epoch"] == records[-1]["epoch"]:  # the weights saved as the model's
            selected["state"] = None
        payload = epoch_payload(run.identity, run.algorithm, run.device, records, selected)
        if run.out is not None:
            run.out.write_checkpoint(payload)
        run.checkpointed = len(records)
        run.checkpoint_time = _clock()
    if run.out is not None:
        run.out.append_record(records[-1])


def _setup_run(config: RunConfig, device: torch.device, out: RunDir | None) -> _Run:
    """Data, hparams, the evaluations (checked), loaders and the run's identity, for this
    rank."""
    dataset = run_dataset(config)
    sources = run_sources(config, dataset)
    hparams = resolve_run_hparams(config, dataset)
    batch_size = int(hparams["batch_size"])
    data = prepare_data(config, dataset, sources, batch_size)
    stage = EvaluationStage(config, data)
    check_initialization(config, hparams, dataset)  # --init FILE, --freeze: before any write
    loader, sampler = _train_loader(data.train_parts, sources, config, batch_size)
    run_info = {"config": config.to_dict(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities, "domains": list(dataset.domains),
                **run_metadata()}
    known = data.known_classes
    if known is not None:
        run_info["known_classes"] = [dataset.class_names[k] for k in known]
    run_info["num_classes"] = data.spec.num_classes
    run_info["epoch_plan"] = epoch_plan(sampler, sources)
    if dataset.preprocessing():
        run_info["preprocessing"] = dataset.preprocessing()
    identity = {"config": config.identity(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities}
    if init_kind(config.init) == "file":  # other weights at the same path: another run
        identity["init_sha256"] = init_file_digest(config.init)["sha256"]
    return _Run(config, device, hparams, data, stage, loader, sampler, run_info, identity, out)


def _build(run: _Run, resume: bool) -> None:
    """Build the run's algorithm: encoders, their initialization and freezing
    (:func:`merdg.run.initialization.prepare_encoders`), network, algorithm, optimizer; then
    the evaluations at initialization (``--encoder-probes``)."""
    config = run.config

    def prepare(encoders: dict[str, nn.Module]) -> None:
        run.run_info.update(prepare_encoders(encoders, config, run.hparams, run.dataset,
                                             run.sources, run.device, run.out, run.identity,
                                             resume))

    seed_everything(config.seed)
    known = run.data.known_classes
    run.algorithm = build_algorithm(run.dataset, config.algorithm, len(run.sources), run.hparams,
                                    run.device, num_classes=len(known) if known else None,
                                    prepare=prepare)
    run.algorithm.set_precision(config.precision)
    run.run_info.update(_load_reports(run.algorithm, run.dataset))
    run.run_info.update(run.stage.init(run.algorithm, run.device, run.run_info))


def _start(run: _Run, resume: bool, overwrite: bool, stack: contextlib.ExitStack
           ) -> list[dict[str, Any]] | dict[str, Any]:
    """Records so far (resumed, or [] for a fresh start), or the summary of a finished run.

    Once the run is known to be this one's, the writing rank's log lines also go to the run's
    ``log.txt`` until ``stack`` closes.

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
    if run.out is not None:
        stack.enter_context(run.out.logging_to_file())
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
    records = restore_training_state(checkpoint, run.algorithm, run.device, run.config.seed,
                                     rng=False)
    run.restore_rng = lambda: restore_rng(checkpoint, run.device, run.config.seed)
    run.checkpointed = len(records)
    run.selected = _restored_selection(checkpoint, run.algorithm, records)
    if run.out is not None:
        run.out.rewrite_records(records)
    total = len(run.schedule.evaluation_steps())
    log.info("%s: resuming after %s of %d", run.config.out_dir,
             _evaluation_name(run, int(decision["epoch"])), total)
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


def _restored_selection(checkpoint: dict[str, Any], algorithm: Algorithm,
                        records: list[dict[str, Any]]) -> dict[str, Any]:
    """The selected epoch so far and its weights, from a checkpoint (its ``"state"`` is None
    when they are the checkpoint's own weights). A checkpoint of an earlier merdg kept no
    selected weights: those of its own epoch serve when it is the selected one; otherwise they
    are lost (None, with a warning), and the run's end evaluates its last epoch instead."""
    if "selected" in checkpoint:
        selected = checkpoint["selected"]
        state = selected["state"]
        if state is None and int(selected["epoch"]) == int(checkpoint["epoch"]):
            state = _cpu_state(algorithm)  # the checkpoint's own weights
        return {"epoch": int(selected["epoch"]), "state": state}
    best = int(select_epoch(records, "source_val")["epoch"])
    if best == int(checkpoint["epoch"]):
        return {"epoch": best, "state": _cpu_state(algorithm)}
    log.warning("the checkpoint was written by an earlier merdg, which kept no weights of the "
                "epoch source validation selects so far (%d): unless a later epoch is selected, "
                "the run's end evaluates and saves its last epoch's weights instead", best)
    return {"epoch": best, "state": None}


def _seed_rank(seed: int) -> None:
    """Give ranks > 0 their own random stream (dropout, augmentation) after the identical
    initialization; rank 0 keeps the single-process stream."""
    if mdist.rank() > 0:
        seed_everything(seed_hash("rank", seed, mdist.rank()))


def _train_and_evaluate(run: _Run, batches: TrainingBatches, lines: _ProgressLines,
                        done: int, until: int) -> dict[str, Any]:
    """Train from ``done`` to ``until`` steps, evaluate, and return the evaluation's record."""
    start = time.perf_counter()
    run.algorithm.train()
    logs, n_samples = [], 0
    for step in range(done + 1, until + 1):
        batch = batches.next()
        try:
            logs.append(run.algorithm.update(batch.to(run.device)))
        except NonFiniteLossError as err:
            raise _located(err, run, step) from None
        n_samples += len(batch)
        lines.step(step, logs[-1], len(batch))
    train_logs = mean_over_ranks(_mean_logs(logs), n_samples, run.device)
    for logger in _loggers(run):
        logger.log_steps(logs, until - len(logs))
    evaluations = run.stage.epoch(run.algorithm, run.device)
    extra = {}
    if run.dataset.data_issues():  # samples skipped so far (on_error="skip")
        extra["data_issues"] = run.dataset.data_issues()
    index = run.schedule.evaluation_steps().index(until) + 1
    record = EpochRecord(index, until, train_logs, evaluations["val"], evaluations["target"],
                         time.perf_counter() - start, run.run_info if index == 1 else None, extra)
    return record.to_dict()


class _ProgressLines:
    """Plain log lines during training: the step, the mean training terms since the last line
    and the samples per second, every ``config.log_every`` steps (0: when 30 s have passed since
    the last line; the evaluations log their own lines)."""

    SECONDS = 30.0

    def __init__(self, run: _Run) -> None:
        self.run, self.every = run, int(run.config.log_every)
        self.total = run.schedule.total_steps
        self.logs: list[dict[str, float]] = []
        self.samples, self.since = 0, time.perf_counter()

    def step(self, step: int, logs: dict[str, float], samples: int) -> None:
        self.logs.append(logs)
        self.samples += samples
        now = time.perf_counter()
        due = (step % self.every == 0) if self.every else now - self.since >= self.SECONDS
        if not due or step == self.total:
            return
        epoch, batch = self.run.schedule.position(step - 1)
        terms = ", ".join(f"{k} {v:.4f}" for k, v in _mean_logs(self.logs).items()
                          if "/" not in k)
        log.info("step %d/%d (epoch %d, batch %d/%d): %s; %.0f samples/s", step, self.total,
                 epoch + 1, batch + 1, self.run.schedule.steps_per_epoch, terms,
                 self.samples / max(now - self.since, 1e-9))
        self.logs, self.samples, self.since = [], 0, now


def _located(err: NonFiniteLossError, run: _Run, step: int) -> NonFiniteLossError:
    """``err`` with the step and epoch where it happened and what to do."""
    schedule = run.schedule
    epoch, batch = schedule.position(step - 1)
    where = (f"step {batch + 1} of {schedule.steps_per_epoch} in epoch {epoch + 1} of "
             f"{schedule.epochs}")
    if schedule.eval_every != schedule.steps_per_epoch or schedule.total_steps % \
            schedule.steps_per_epoch:
        where = f"step {step} of {schedule.total_steps} ({where})"
    change = "lower lr (or the weights of the loss terms)"
    if run.config.out_dir is None:
        return err.located(where, change)
    if run.checkpointed == 0:
        kept = "no checkpoint had been written, so nothing is kept to resume from"
    else:
        kept = (f"the records and checkpoint of {_evaluation_name(run, run.checkpointed)} "
                f"stay in {run.config.out_dir}; with changed hparams, start over with --restart")
    return err.located(where, f"{change} ({kept})")


def _evaluation_name(run: _Run, index: int) -> str:
    """``"epoch 3"`` (evaluations after every epoch) or ``"evaluation 3 (step 600)"``."""
    schedule = run.schedule
    if schedule.eval_every == schedule.steps_per_epoch:
        return f"epoch {index}"
    return f"evaluation {index} (step {schedule.evaluation_steps()[index - 1]})"


def _log_evaluation(run: _Run, record: dict[str, Any]) -> None:
    terms = ", ".join(f"{k} {v:.4f}" for k, v in record["train"].items() if "/" not in k)
    schedule = run.schedule
    index = int(record["epoch"])
    total = len(schedule.evaluation_steps())
    name = (f"epoch {index}/{total}" if schedule.eval_every == schedule.steps_per_epoch
            else f"evaluation {index}/{total} (step {record['steps']}/{schedule.total_steps})")
    log.info("%s: %s; val acc %.4f, target acc %.4f", name, terms, record["val"]["acc"],
             record["target"]["acc"])


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


def summarize(records: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]] = (),
              models: Sequence[dict[str, Any]] = (), path: str = "") -> dict[str, Any]:
    """The row of each selection rule (:func:`merdg.run.records.run_rows`, the columns of every
    table), the number of evaluations (``epochs``) and the step of each, the models kept
    (``{"rule", "epoch", "digest", "file"}``), the run's info and its training time."""
    rows = run_rows(records, evaluations, path)
    summary = {"selection": {row["selection"]: row for row in rows}, "epochs": len(records),
               "evaluation_steps": [int(r.get("steps", 0)) for r in records],
               "run": records[0]["run"], "train_time_s": sum(r["time_s"] for r in records),
               "models": [{k: m[k] for k in ("rule", "epoch", "digest", "file")}
                          for m in models]}
    warnings = near_chance_warnings(summary["selection"]["source_val"])
    if warnings:
        summary["near_chance_probes"] = warnings
    return summary
