"""One training run under the leave-one-domain-out protocol.

A run trains on every domain but the target (multi-source), holds out a seeded part of each
source domain for model selection (or uses the dataset's official validation split), evaluates
source-val and target accuracy after every epoch, and writes to ``out_dir``:

- ``config.json``: the run's config, resolved hparams, package version and git hash;
- ``records.jsonl``: one line per epoch (loss terms, accuracies, per-modality probe accuracies,
  config embedded);
- ``summary.json``: the epoch chosen by each selection rule (:mod:`merdg.model_selection`);
- ``model.pt``: the final weights (with ``save_model``);
- ``done``: written last; a run directory without it is incomplete.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from merdg.algorithms import Algorithm, get_algorithm_class
from merdg.datasets import BalancedDomainBatchSampler, DomainDataset, build_dataset
from merdg.datasets.base import DomainConcat, collate
from merdg.hparams import TRAINING_HPARAMS, resolve_hparams
from merdg.model_selection import SELECTION_RULES, select_epoch
from merdg.models import MultimodalNet, build_encoder
from merdg.records import append_jsonl, run_metadata, write_json_atomic

__all__ = ["RunConfig", "build_algorithm", "evaluate", "train"]


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
        eval_missing: Also evaluate the target with each modality missing (zero-filled, plus
            imputed by translation for algorithms that define it): ``"none"``, ``"last"``
            (final epoch only) or ``"every"`` epoch (needed for the selected epoch's numbers).
    """

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
    eval_missing: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    ``evaluate_translated`` (SimMMDG, MOOSA).
    """
    algorithm.eval()
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
    algorithms with ``evaluate_translated``, ``{"missing_translated": {m: acc}}``."""
    strategies = {"missing": False}
    if hasattr(algorithm, "evaluate_translated"):
        strategies["missing_translated"] = True
    return {key: {m: evaluate(algorithm, data, device, batch_size, num_workers, zero=[m],
                              translate=translate)["acc"] for m in modalities}
            for key, translate in strategies.items()}


def _train_loader(dataset: DomainDataset, sources: Sequence[str], config: RunConfig,
                  batch_size: int) -> tuple[DataLoader, BalancedDomainBatchSampler]:
    parts = [dataset.split(d, "train", config.seed, config.holdout_fraction) for d in sources]
    sampler = BalancedDomainBatchSampler([len(p) for p in parts], batch_size, config.seed)
    loader = DataLoader(DomainConcat(parts), batch_sampler=sampler, collate_fn=collate,
                        num_workers=config.num_workers,
                        persistent_workers=config.num_workers > 0)
    return loader, sampler


def _mean_logs(logs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for entry in logs for k in entry})
    return {k: float(np.mean([entry[k] for entry in logs if k in entry])) for k in keys}


def train(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Run one training job; returns the summary (also written to ``summary.json``).

    Raises:
        ValueError: Unknown domains or modalities, or an empty split.
        FloatingPointError: The training loss became NaN/Inf (records so far are kept).
    """
    if config.eval_missing not in MISSING_MODES:
        raise ValueError(f"eval_missing must be one of {MISSING_MODES}, got "
                         f"{config.eval_missing!r}")
    seed_everything(config.seed)
    device = resolve_device(config.device)
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
    val_sets = {d: dataset.split(d, "val", config.seed, config.holdout_fraction) for d in sources}
    target_set = dataset.split(config.target, "test", config.seed, config.holdout_fraction)

    run_info = {"config": config.to_dict(), "hparams": hparams, "sources": sources,
                "modalities": dataset.modalities, **run_metadata()}
    out = Path(config.out_dir) if config.out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("records.jsonl", "summary.json", "done"):
            (out / stale).unlink(missing_ok=True)
        write_json_atomic(out / "config.json", run_info)

    records: list[dict[str, Any]] = []
    epochs = int(hparams["epochs"])
    bar = tqdm(range(epochs), desc=f"{config.algorithm} -> {config.target}", leave=False,
               disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        algorithm.train()
        sampler.set_epoch(epoch)
        logs = [algorithm.update(batch.to(device)) for batch in loader]
        evals = {"val": _merge_eval({d: evaluate(algorithm, s, device, config.eval_batch_size,
                                                 config.num_workers)
                                     for d, s in val_sets.items()}),
                 "target": evaluate(algorithm, target_set, device, config.eval_batch_size,
                                    config.num_workers)}
        if _missing_due(config.eval_missing, epoch, epochs, dataset.modalities):
            evals["target"].update(evaluate_missing(algorithm, target_set, device,
                                                    dataset.modalities, config.eval_batch_size,
                                                    config.num_workers))
        record = {"epoch": epoch + 1, "steps": (epoch + 1) * len(loader),
                  "train": _mean_logs(logs), **evals,
                  "time_s": time.perf_counter() - start, "run": run_info}
        records.append(record)
        if out is not None:
            append_jsonl(out / "records.jsonl", record)
        bar.set_postfix(val=f"{evals['val']['acc']:.3f}", target=f"{evals['target']['acc']:.3f}")

    summary = summarize(records, run_info)
    if out is not None:
        if config.save_model:
            torch.save({"state_dict": algorithm.state_dict(), "run": run_info}, out / "model.pt")
        write_json_atomic(out / "summary.json", summary)
        (out / "done").write_text("done\n")
    return summary


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
