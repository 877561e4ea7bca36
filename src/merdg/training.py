"""One training run under the leave-one-domain-out protocol.

A run trains on every domain but the target (multi-source), holds out a seeded part of each
source domain for model selection (or uses the dataset's official validation split), evaluates
source-val and target accuracy after every epoch, and writes to ``out_dir``:

- ``config.json``: the run's config, resolved hparams, package version and git hash;
- ``records.jsonl``: one line per epoch (loss terms, accuracies, per-modality probe accuracies,
  config embedded);
- ``summary.json``: the epoch chosen by each selection rule (:mod:`merdg.model_selection`);
- ``checkpoint.pt``: the state after the last finished epoch (removed once the run is done);
- ``model.pt``: the final weights (with ``save_model``);
- ``done``: written last; a run directory without it is incomplete.

Resume: started again with the same config, an incomplete run continues from ``checkpoint.pt``
(and ends with the same records as an uninterrupted run on CPU); a finished one returns its
stored summary. A checkpoint written by another config is refused (:mod:`merdg.checkpoint`).

Data parallelism: under ``torchrun`` (``WORLD_SIZE > 1``) every rank trains on its share of
each global batch, the algorithm is wrapped in ``DistributedDataParallel``, MER-DG statistics
use the batch gathered from every rank, evaluation sums correct counts and losses over ranks,
and only rank 0 writes files (``docs/distributed.md``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from merdg import dist as mdist
from merdg import run_dir
from merdg.algorithms import Algorithm, get_algorithm_class
from merdg.checkpoint import CHECKPOINT_NAME, run_dir_lock
from merdg.datasets import BalancedDomainBatchSampler, DomainDataset, build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.hparams import TRAINING_HPARAMS, resolve_hparams, seed_hash
from merdg.model_selection import SELECTION_RULES, select_epoch
from merdg.models import MultimodalNet, build_encoder
from merdg.parallel import (
    enable_data_parallel,
    mean_over_ranks,
    rank_shard,
    setup_distributed,
    sum_over_ranks,
)
from merdg.records import run_metadata

__all__ = ["RunConfig", "build_algorithm", "config_identity", "evaluate", "train"]

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Everything that defines one run (JSON-serializable).

    Attributes:
        dataset: Registered dataset name.
        target: The held-out target domain.
        algorithm: Registered algorithm name (``"X+MER"`` composes MER-DG onto ``X``).
        modalities: Modalities to use (None: all the dataset offers).
        sources: Source domains (None: every other domain).
        seed: Seed of the source train/val split, initialization and batch order.
        hparams_seed: 0 for default hparams, k > 0 for random trial k.
        hparams: Overrides of individual hparams.
        data_root: Root directory of on-disk datasets.
        dataset_options: Keyword options of the dataset constructor.
        holdout_fraction: Share of each source domain held out for validation (datasets
            without official splits).
        out_dir: Where the run writes its files (None: nothing is written).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"``.
        num_workers: DataLoader workers (0 for in-memory data).
        eval_batch_size: Batch size of evaluation passes.
        save_model: Save the final weights to ``model.pt``.
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` autocast of the forward passes.
        split_seed: Seed of the source train/val holdout (None: ``seed``). Hyperparameter
            searches fix it so that every trial is selected on the same validation data.
        tensorboard: Also log every scalar to TensorBoard under ``out_dir/tensorboard`` (needs
            the ``tensorboard`` extra; see :mod:`merdg.tensorboard_log`).
        eval_missing: Also evaluate the target with each modality missing (zero-filled, plus
            imputed by translation for algorithms that define it): ``"none"``, ``"last"``
            (final epoch only) or ``"every"`` epoch (needed for the selected epoch's numbers).
    """

    # fields that change where or how fast a run computes, not what it computes
    NON_IDENTITY: ClassVar[tuple[str, ...]] = ("out_dir", "device", "num_workers",
                                               "eval_batch_size", "save_model", "data_root",
                                               "tensorboard")

    dataset: str
    target: str
    algorithm: str = "ERM"
    modalities: list[str] | None = None
    sources: list[str] | None = None
    seed: int = 0
    hparams_seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    holdout_fraction: float = 0.2
    out_dir: str | None = None
    device: str = "cpu"
    num_workers: int = 0
    eval_batch_size: int = 256
    save_model: bool = False
    precision: str = "fp32"
    split_seed: int | None = None
    tensorboard: bool = False
    eval_missing: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What defines the run's results (see :func:`config_identity`)."""
        return config_identity(self.to_dict())

    def holdout_seed(self) -> int:
        """Seed of the source train/val holdout."""
        return self.seed if self.split_seed is None else self.split_seed


def config_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a :class:`RunConfig` dict that define a run's results.

    Drops :attr:`RunConfig.NON_IDENTITY`, every field left at its default (so adding a field
    with a default keeps existing sweep hashes and checkpoints valid) and a ``split_seed`` equal
    to ``seed``. Works on the dicts of older ``config.json`` files.
    """
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else f.default) for f in dataclasses.fields(RunConfig)}
    identity = {k: v for k, v in config.items()
                if k not in RunConfig.NON_IDENTITY and (k not in defaults or v != defaults[k])}
    if identity.get("split_seed") == config.get("seed", defaults["seed"]):
        del identity["split_seed"]
    return json.loads(json.dumps(identity, sort_keys=True))


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
    """Resolved hparams: training defaults < dataset < algorithm < trial sample < overrides."""
    algorithm_cls = get_algorithm_class(config.algorithm)
    overrides = {k: v for k, v in config.hparams.items() if k != "encoders"}
    hparams = resolve_hparams(TRAINING_HPARAMS, dataset.HPARAMS, algorithm_cls.HPARAMS,
                              overrides=overrides, hparams_seed=config.hparams_seed)
    encoders = {m: dict(dataset.encoder_spec(m)) for m in dataset.modalities}
    for m, spec in config.hparams.get("encoders", {}).items():
        if m not in encoders:
            raise KeyError(f"encoder override for {m!r}, which is not among {dataset.modalities}")
        encoders[m] = {**encoders[m], **spec}
    hparams["encoders"] = encoders
    return hparams


def build_algorithm(dataset: DomainDataset, algorithm: str, num_domains: int,
                    hparams: dict[str, Any], device: torch.device | str = "cpu") -> Algorithm:
    """Encoders from ``hparams["encoders"]``, the network, the algorithm on ``device``, and its
    optimizer."""
    encoders = {m: build_encoder(hparams["encoders"][m], dataset.input_shape(m))
                for m in dataset.modalities}
    net = MultimodalNet(encoders, dataset.num_classes, order=dataset.fusion_order(),
                        fusion_hidden=int(hparams["fusion_hidden"]),
                        dropout=float(hparams["dropout"]),
                        proj_hidden=int(hparams["proj_hidden"]), proj_dim=int(hparams["proj_dim"]))
    algo = get_algorithm_class(algorithm)(net, num_domains, hparams).to(device)
    algo.configure_optimizer()
    return algo


@torch.no_grad()
def evaluate(algorithm: Algorithm, data: Dataset, device: torch.device, batch_size: int = 256,
             num_workers: int = 0, zero: Collection[str] = (),
             translate: bool = False) -> dict[str, Any]:
    """Accuracy (top-1 over the whole split), mean CE and per-modality probe accuracies.

    Modalities in ``zero`` are zero-filled, or, with ``translate``, imputed by the algorithm's
    ``evaluate_translated`` (SimMMDG, MOOSA). Under torch.distributed each rank evaluates every
    ``world_size``-th sample and the sums (correct, loss, count) are added over ranks, so every
    rank returns the whole split's metrics.
    """
    algorithm.eval()
    data = rank_shard(data)
    wrapped = DomainConcat([data])
    loader = DataLoader(wrapped, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=num_workers)
    correct, loss, n = 0, 0.0, 0
    probe_correct: dict[str, int] = defaultdict(int)
    for batch in loader:
        batch = batch.to(device)
        out = (algorithm.evaluate_translated(batch.x, zero) if translate
               else algorithm.evaluate(batch.x, zero=zero))
        correct += int((out.logits.argmax(1) == batch.y).sum())  # top-1 over the whole split
        loss += float(torch.nn.functional.cross_entropy(out.logits.float(), batch.y,
                                                        reduction="sum"))
        for m, logits in out.probe_logits.items():
            probe_correct[m] += int((logits.argmax(1) == batch.y).sum())
        n += len(batch)
    if mdist.is_distributed():
        names = sorted(algorithm.modalities)
        sums = sum_over_ranks([correct, loss, n, *(probe_correct[m] for m in names)], device)
        correct, loss, n = int(sums[0]), sums[1], int(sums[2])
        probe_correct = {m: int(v) for m, v in zip(names, sums[3:])}
    if n == 0:
        raise ValueError("evaluation split is empty")
    return {"acc": correct / n, "loss": loss / n, "n": n,
            "probe_acc": {m: c / n for m, c in sorted(probe_correct.items())}}


def _merge_eval(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pool per-domain evaluations into one (sample-weighted), keeping the per-domain numbers."""
    n = sum(p["n"] for p in parts.values())
    merged = {
        "acc": sum(p["acc"] * p["n"] for p in parts.values()) / n,
        "loss": sum(p["loss"] * p["n"] for p in parts.values()) / n,
        "n": n,
        "probe_acc": {m: sum(p["probe_acc"][m] * p["n"] for p in parts.values()) / n
                      for m in next(iter(parts.values()))["probe_acc"]},
        "per_domain": {d: p["acc"] for d, p in parts.items()},
    }
    return merged


MISSING_MODES = ("none", "last", "every")


def evaluate_missing(algorithm: Algorithm, data: Dataset, device: torch.device,
                     modalities: Sequence[str], batch_size: int = 256,
                     num_workers: int = 0) -> dict[str, dict[str, float]]:
    """Accuracy with each modality missing: ``{"missing": {m: acc}}`` (zero-filled) and, for
    algorithms with ``evaluate_translated``, ``{"missing_translated": {m: acc}}``.

    These passes are optional, so they leave the global random state as they found it (every
    DataLoader iteration draws its base seed from the global CPU generator): turning them on
    cannot change the training that follows.
    """
    strategies = {"missing": False}
    if hasattr(algorithm, "evaluate_translated"):
        strategies["missing_translated"] = True
    with torch.random.fork_rng(devices=[]):
        return {key: {m: evaluate(algorithm, data, device, batch_size, num_workers, zero=[m],
                                  translate=translate)["acc"] for m in modalities}
                for key, translate in strategies.items()}


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
    algorithm: Algorithm
    loader: DataLoader
    sampler: BalancedDomainBatchSampler
    val_sets: dict[str, Dataset]
    target_set: Dataset
    run_info: dict[str, Any]
    identity: dict[str, Any]  # what a checkpoint or finished run must match to be reused
    out: Path | None  # where this process writes (None on ranks > 0 and without out_dir)
    tensorboard: Any = None  # TensorBoardLogger on the writing rank when config.tensorboard


def _tensorboard_logger(config: RunConfig, out: Path | None):
    """The run's TensorBoard logger on the writing rank, or None (``config.tensorboard`` off,
    or a rank > 0)."""
    if not config.tensorboard or not mdist.is_main_process():
        return None
    if out is None:
        raise ValueError("tensorboard logging needs an out_dir to write to")
    from merdg.tensorboard_log import TensorBoardLogger

    return TensorBoardLogger(out / "tensorboard")


def train(config: RunConfig, progress: bool = True, resume: bool = True) -> dict[str, Any]:
    """Run one training job; returns the summary (also written to ``summary.json``).

    Under ``torchrun`` the process group is initialized here (nccl on CUDA, gloo on CPU) and
    torn down at the end; a process group the caller initialized is used as is.

    Args:
        config: The run.
        progress: Show a progress bar.
        resume: Continue from ``out_dir/checkpoint.pt`` when present, and return the stored
            summary of a run that already finished; False starts over.

    Raises:
        ValueError: Unknown domains or modalities, or an empty split.
        CheckpointMismatchError: ``out_dir`` holds a checkpoint of a different run.
        RunDirBusyError: Another process is writing ``out_dir``.
        FloatingPointError: The training loss became NaN/Inf (records so far are kept).
    """
    if config.eval_missing not in MISSING_MODES:
        raise ValueError(f"eval_missing must be one of {MISSING_MODES}, got "
                         f"{config.eval_missing!r}")
    device, owns_group = setup_distributed(resolve_device(config.device))
    try:
        out = Path(config.out_dir) if config.out_dir and mdist.is_main_process() else None
        seed_everything(config.seed)
        run = _setup_run(config, device, out)
        with run_dir_lock(out):  # nothing touches out_dir before this
            return _train(run, progress, resume)
    finally:
        if owns_group:
            mdist.destroy()


def _train(run: _Run, progress: bool, resume: bool) -> dict[str, Any]:
    config, out = run.config, run.out
    records = _start(run, resume)
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
            run_dir.save_state(run.out, run.identity, run.algorithm, device, records)
        _log_epoch(run, records[-1])  # after the checkpoint: logged epochs are never redone
        if run.tensorboard is not None:
            run.tensorboard.log_record(records[-1])
        bar.set_postfix(val=f"{records[-1]['val']['acc']:.3f}",
                        target=f"{records[-1]['target']['acc']:.3f}")
    summary = summarize(records, run.run_info)
    if run.dataset.data_issues():
        summary["data_issues"] = run.dataset.data_issues()
    if out is not None:
        run_dir.finish(out, summary, run.algorithm, run.run_info, config.save_model)
    return summary


def _setup_run(config: RunConfig, device: torch.device, out: Path | None) -> _Run:
    """Data, hparams, algorithm, loaders and the run's identity, for this rank."""
    dataset = build_dataset(config.dataset, config.data_root, config.modalities,
                            **config.dataset_options)
    dataset.check_domains([config.target, *(config.sources or [])])
    sources = config.sources or [d for d in dataset.domains if d != config.target]
    if config.target in sources:
        raise ValueError(f"target {config.target!r} is also a source domain")
    dataset.fit_normalization(sources)
    hparams = run_hparams(config, dataset)
    algorithm = build_algorithm(dataset, config.algorithm, len(sources), hparams, device)
    algorithm.set_precision(config.precision)
    loader, sampler = _train_loader(dataset, sources, config, int(hparams["batch_size"]))
    split_seed = config.holdout_seed()
    val_sets = {d: dataset.split(d, "val", split_seed, config.holdout_fraction) for d in sources}
    target_set = dataset.split(config.target, "test", split_seed, config.holdout_fraction)
    run_info = {"config": config.to_dict(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities, **run_metadata()}
    run_info.update(_load_reports(algorithm, dataset))
    identity = {"config": config.identity(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities}
    return _Run(config, device, hparams, dataset, algorithm, loader, sampler, val_sets,
                target_set, run_info, identity, out)


def _start(run: _Run, resume: bool) -> list[dict[str, Any]] | dict[str, Any]:
    """Records so far (resumed, or [] for a fresh start), or the summary of a finished run.

    Rank 0 decides from the run directory and tells the other ranks, which then load the same
    checkpoint (multi-node runs need ``out_dir`` on a shared filesystem).
    """
    decision = {"kind": "fresh"}
    if run.out is not None:
        decision = run_dir.decide_start(run.out, run.identity, resume)
    decision = mdist.broadcast_object(decision)
    if decision["kind"] == "finished":
        log.info("%s: already finished; returning its summary", run.config.out_dir)
        return decision["summary"]
    if decision["kind"] == "fresh":
        if run.out is not None:
            run_dir.start_fresh(run.out, run.run_info, run.identity)
        _seed_rank(run.config.seed)
        return []
    records = run_dir.load_state(Path(run.config.out_dir) / CHECKPOINT_NAME, run.identity,
                                 run.algorithm, run.device, run.config.seed, decision["epoch"])
    if run.out is not None:
        run_dir.rewrite_records(run.out, records)
    log.info("%s: resuming after epoch %d of %d", run.config.out_dir, decision["epoch"],
             int(run.hparams["epochs"]))
    return records


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
              **evals, "time_s": time.perf_counter() - start, "run": run.run_info}
    if run.dataset.data_issues():  # samples skipped so far (on_error="skip")
        record["data_issues"] = run.dataset.data_issues()
    return record


def _evaluate_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    config = run.config
    val = {d: evaluate(run.algorithm, s, run.device, config.eval_batch_size, config.num_workers)
           for d, s in run.val_sets.items()}
    target = evaluate(run.algorithm, run.target_set, run.device, config.eval_batch_size,
                      config.num_workers)
    if _missing_due(config.eval_missing, epoch, int(run.hparams["epochs"]), run.dataset.modalities):
        target.update(evaluate_missing(run.algorithm, run.target_set, run.device,
                                       run.dataset.modalities, config.eval_batch_size,
                                       config.num_workers))
    return {"val": _merge_eval(val), "target": target}


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


def _missing_due(mode: str, epoch: int, epochs: int, modalities: Sequence[str]) -> bool:
    """Whether this epoch evaluates the target with a modality missing (needs >= 2)."""
    if mode == "none" or len(modalities) < 2:
        return False
    return mode == "every" or epoch == epochs - 1


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
