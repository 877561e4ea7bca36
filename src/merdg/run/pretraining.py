"""Unimodal pretraining: each encoder trained alone, with its own linear head.

The stage that precedes fusion in the paper's regime (MER-DG, Yarici & AlRegib, ICML 2026,
arXiv 2605.01967, Section 5: encoders pretrained on Kinetics / VGGSound, then fused): every
encoder ``f_m`` gets a linear classifier ``h_m`` and minimizes plain cross-entropy
``CE(h_m(f_m(x_m)), y)`` on a training split with Adam. The losses of different modalities
share no parameter, so one Adam over all of them is the same as one per encoder. For each
modality the epoch with the best validation accuracy of ``h_m(f_m(.))`` is selected, and the
selected encoders are written as a plain state dict (keys ``<modality>.<name>``, the
``encoders`` layout of :func:`merdg.models.transfer.load_encoder_weights`).

:class:`UnimodalPretraining` is resumable: its whole state after an epoch (encoders, heads,
optimizer, records, selected weights) is :meth:`~UnimodalPretraining.state_dict`, and each
epoch draws its randomness (batch order, dropout, augmentation) from a generator seeded by
``(seed, epoch)`` inside a forked random state. So a run stopped after any epoch and restored
ends bit-identical to an uninterrupted one on CPU, and the stage leaves the caller's global
random state as it found it.

:func:`pretrain_encoders` is the one-call version for a dataset's domains: on the
``synthetic-pretrain`` corpus (:class:`merdg.datasets.synthetic.SyntheticPretrainCorpus`) it
gives encoders for the ``synthetic`` benchmark.

The stage runs in one process (under ``torchrun`` every rank would compute the same thing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from merdg.algorithms.base import NonFiniteLossError
from merdg.datasets import DomainDataset
from merdg.datasets.base import DomainConcat, collate
from merdg.hparams import seed_hash
from merdg.models import build_encoder
from merdg.progress import progress_bar

__all__ = ["PretrainResult", "UnimodalPretraining", "check_out_file", "pretrain_encoders"]


@contextmanager
def _seeded(device: torch.device, *key: Any):
    """Run the block with the global torch RNG seeded by ``key``, then restore it."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed_hash(*key))
        yield


def _parts(data: Dataset | Sequence[Dataset]) -> list[Dataset]:
    return [data] if isinstance(data, Dataset) else list(data)


class UnimodalPretraining:
    """Train each encoder alone with its own linear head; select its epoch on validation.

    Args:
        encoders: ``{modality: encoder}`` (each with ``out_dim``); trained in place. Frozen
            parameters (``requires_grad=False``) stay as they are.
        num_classes: Number of classes of the heads.
        train_data: Samples ``(x: {modality: tensor}, y)``, or several such datasets (e.g. one
            training split per domain).
        val_data: Validation samples, same form.
        epochs: Number of epochs.
        lr / weight_decay: Adam's.
        batch_size: Training batch size (the last incomplete batch is dropped when there is
            more than one batch).
        seed: Seed of the heads' initialization and of every epoch's randomness.
        device: Where to train.
        eval_batch_size / num_workers: Data loading.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], num_classes: int,
                 train_data: Dataset | Sequence[Dataset], val_data: Dataset | Sequence[Dataset],
                 epochs: int, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                 seed: int = 0, device: torch.device | str = "cpu", eval_batch_size: int = 256,
                 num_workers: int = 0) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
        if not encoders:
            raise ValueError("no encoder to pretrain")
        self.device = torch.device(device)
        self.modalities = list(encoders)
        self.encoders = nn.ModuleDict(dict(encoders)).to(self.device)
        with _seeded(self.device, "pretrain-heads", seed):
            self.heads = nn.ModuleDict({m: nn.Linear(int(e.out_dim), num_classes)
                                        for m, e in encoders.items()}).to(self.device)
        self.train_data = DomainConcat(_parts(train_data))
        self.val_data = DomainConcat(_parts(val_data))
        if len(self.train_data) == 0 or len(self.val_data) == 0:
            raise ValueError(f"empty split: {len(self.train_data)} training and "
                             f"{len(self.val_data)} validation samples")
        self.epochs, self.seed = int(epochs), int(seed)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers = int(num_workers)
        params = [p for p in [*self.encoders.parameters(), *self.heads.parameters()]
                  if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        self.hparams = {"epochs": self.epochs, "lr": lr, "weight_decay": weight_decay,
                        "batch_size": self.batch_size, "seed": self.seed}
        self.records: list[dict[str, Any]] = []
        self.selected: dict[str, dict[str, Any]] = {}  # {m: {"epoch", "val_acc", "state"}}

    @property
    def epochs_done(self) -> int:
        return len(self.records)

    def run(self, progress: bool = False) -> list[dict[str, Any]]:
        """Run the remaining epochs; returns every epoch's record."""
        for _ in progress_bar(range(self.epochs_done, self.epochs), desc="unimodal pretraining",
                      leave=False, shown=progress):
            self.run_epoch()
        return self.records

    def run_epoch(self) -> dict[str, Any]:
        """Train epoch ``epochs_done``, evaluate on validation, update the selection.

        Returns:
            The record ``{"epoch", "train": {"ce/<m>"}, "val": {"acc/<m>", "ce/<m>"},
            "selected": {m: epoch}, "time_s"}``.
        """
        epoch = self.epochs_done
        if epoch >= self.epochs:
            raise RuntimeError(f"all {self.epochs} pretraining epochs are done")
        start = time.perf_counter()
        with _seeded(self.device, "pretrain-epoch", self.seed, epoch):
            train = self._train_epoch(epoch)
            val = self._evaluate()
        for m in self.modalities:
            if m not in self.selected or val[f"acc/{m}"] > self.selected[m]["val_acc"]:
                state = {k: v.detach().cpu().clone()
                         for k, v in self.encoders[m].state_dict().items()}
                self.selected[m] = {"epoch": epoch + 1, "val_acc": val[f"acc/{m}"],
                                    "state": state}
        record = {"epoch": epoch + 1, "train": train, "val": val,
                  "selected": {m: s["epoch"] for m, s in self.selected.items()},
                  "time_s": time.perf_counter() - start}
        self.records.append(record)
        return record

    def _loader(self, data: Dataset, batch_size: int, generator: torch.Generator | None,
                ) -> DataLoader:
        shuffle = generator is not None
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                          drop_last=shuffle and len(data) > batch_size, generator=generator,
                          num_workers=self.num_workers)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.encoders.train()
        self.heads.train()
        order = torch.Generator().manual_seed(seed_hash("pretrain-order", self.seed, epoch))
        sums, n = dict.fromkeys(self.modalities, 0.0), 0
        loader = self._loader(self.train_data, self.batch_size, order)
        for step, batch in enumerate(loader, 1):
            batch = batch.to(self.device)
            losses = {m: F.cross_entropy(self.heads[m](self.encoders[m](batch.x[m])), batch.y)
                      for m in self.modalities}
            loss = torch.stack(list(losses.values())).sum()
            if not torch.isfinite(loss):  # nothing is stepped; the saved epochs are kept
                raise NonFiniteLossError(
                    {f"ce/{m}": float(v.detach()) for m, v in losses.items()},
                    f"step {step} of {len(loader)} in epoch {epoch + 1} of {self.epochs} of "
                    "unimodal pretraining", "lower pretrain_lr")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for m, value in losses.items():
                sums[m] += float(value.detach()) * len(batch)
            n += len(batch)
        return {f"ce/{m}": s / n for m, s in sums.items()}

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        self.encoders.eval()
        self.heads.eval()
        correct, loss, n = dict.fromkeys(self.modalities, 0), dict.fromkeys(self.modalities, 0.0), 0
        for batch in self._loader(self.val_data, self.eval_batch_size, None):
            batch = batch.to(self.device)
            for m in self.modalities:
                logits = self.heads[m](self.encoders[m](batch.x[m]))
                correct[m] += int((logits.argmax(1) == batch.y).sum())
                loss[m] += float(F.cross_entropy(logits, batch.y, reduction="sum"))
            n += len(batch)
        return {**{f"acc/{m}": correct[m] / n for m in self.modalities},
                **{f"ce/{m}": loss[m] / n for m in self.modalities}}

    def selection(self) -> dict[str, dict[str, Any]]:
        """``{modality: {"epoch", "val_acc"}}`` of the selected epochs so far."""
        return {m: {"epoch": s["epoch"], "val_acc": s["val_acc"]} for m, s in self.selected.items()}

    def selected_state_dict(self) -> dict[str, Tensor]:
        """The selected encoders as one state dict with keys ``<modality>.<name>``.

        Raises:
            RuntimeError: No epoch has run yet.
        """
        if not self.selected:
            raise RuntimeError("no pretraining epoch has run yet")
        return {f"{m}.{k}": v for m in self.modalities
                for k, v in self.selected[m]["state"].items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last finished epoch (``torch.save``-able and
        loadable with ``weights_only=True``)."""
        return {"epochs_done": self.epochs_done, "hparams": dict(self.hparams),
                "records": [dict(r) for r in self.records],
                "encoders": self.encoders.state_dict(), "heads": self.heads.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "selected": {m: dict(s) for m, s in self.selected.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the same encoders, data and hparams are the caller's
        responsibility; a different ``hparams`` entry is refused)."""
        if state["hparams"] != self.hparams:
            raise ValueError(f"pretraining state of hparams {state['hparams']} cannot continue "
                             f"a pretraining with {self.hparams}")
        self.encoders.load_state_dict(state["encoders"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.records = [dict(r) for r in state["records"]]
        self.selected = {m: dict(s) for m, s in state["selected"].items()}

    def save(self, path: str | Path, info: Mapping[str, Any] | None = None,
             overwrite: bool = False) -> Path:
        """Write the selected encoders: ``{"state_dict": {"<m>.<name>": tensor},
        "pretraining": info}`` (readable with ``weights_only=True``).

        Raises:
            FileExistsError / IsADirectoryError: ``path`` exists and ``overwrite`` is False,
                or is a directory (:func:`check_out_file`).
        """
        path = check_out_file(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"state_dict": self.selected_state_dict(),
                   "pretraining": {**dict(info or {}), "hparams": dict(self.hparams),
                                   "selected": self.selection()}}
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:  # a failed write (a full disk) leaves no temporary file behind
            tmp.unlink(missing_ok=True)
        return path


def check_out_file(path: str | Path, overwrite: bool = False, name: str = "out_path") -> Path:
    """``path`` as a :class:`~pathlib.Path` when the encoders can be written there; checked
    before any training, so a mistake costs nothing.

    Raises:
        FileExistsError: ``path`` is a file and ``overwrite`` is False.
        IsADirectoryError: ``path`` is a directory (``overwrite`` does not replace one).
        NotADirectoryError / PermissionError: What lies above ``path`` is a file, or is not
            writable.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name} {path} is a directory; give the path of the file to "
                                f"write, e.g. {path / 'encoders.pt'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{name} {path} exists; choose another file or pass --overwrite")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {name} {path}: {existing} is a file, not a "
                                 "directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {name} {path}: {existing} is not writable")
    return path


@dataclass
class PretrainResult:
    """What :func:`pretrain_encoders` produced.

    Attributes:
        state_dict: The selected encoders, keys ``<modality>.<name>``.
        records: One record per epoch (:meth:`UnimodalPretraining.run_epoch`).
        selected: ``{modality: {"epoch", "val_acc"}}``.
        encoders: The encoder specs used (what a run must build to load the weights).
        path: The file written, or None.
    """

    state_dict: dict[str, Tensor]
    records: list[dict[str, Any]]
    selected: dict[str, dict[str, Any]]
    encoders: dict[str, dict[str, Any]]
    path: Path | None


def pretrain_encoders(dataset: DomainDataset, out_path: str | Path | None = None, *,
                      domains: Sequence[str] | None = None,
                      modalities: Sequence[str] | None = None,
                      encoders: Mapping[str, Mapping[str, Any]] | None = None,
                      epochs: int = 10, lr: float = 1e-3, weight_decay: float = 1e-4,
                      batch_size: int = 64, seed: int = 0, holdout_fraction: float = 0.2,
                      split_seed: int | None = None, device: str = "cpu", num_workers: int = 0,
                      progress: bool = False, overwrite: bool = False,
                      dataset_options: Mapping[str, Any] | None = None) -> PretrainResult:
    """Pretrain one encoder per modality on ``domains`` of ``dataset`` and write them.

    Args:
        dataset: The data (e.g. ``build_dataset("synthetic-pretrain")``). Its input
            normalization, if any, is fit on ``domains``.
        out_path: Where to write the encoders (None: not written). An existing file is refused
            unless ``overwrite``.
        domains: Domains to pretrain on (default: all of them): their ``"train"`` splits train,
            their ``"val"`` splits select the epoch.
        modalities: Encoders to pretrain (default: the dataset's modalities).
        encoders: Per-modality encoder options merged over the dataset's default spec (as the
            ``encoders`` hparam of a run); the run that loads the weights must build the same.
        epochs / lr / weight_decay / batch_size / seed: As :class:`UnimodalPretraining`.
        holdout_fraction / split_seed: The train/val split of datasets without official splits
            (``split_seed`` defaults to ``seed``).
        device / num_workers / progress: Where and how to run.
        dataset_options: The options ``dataset`` was built with, recorded in the file (e.g. the
            ``where`` that selected the pretraining rows, docs/manifest.md).

    Returns:
        The selected weights, the records and the specs (:class:`PretrainResult`).
    """
    if out_path is not None:
        check_out_file(out_path, overwrite)
    domains = list(dataset.domains if domains is None else domains)
    dataset.check_domains(domains)
    modalities = list(dataset.modalities if modalities is None else modalities)
    unknown = [m for m in [*modalities, *(encoders or {})] if m not in dataset.modalities]
    if unknown:
        raise ValueError(f"modalities {unknown} are not among the dataset's "
                         f"{dataset.modalities}")
    specs = {m: {**dataset.encoder_spec(m), **dict((encoders or {}).get(m, {}))}
             for m in modalities}
    dataset.fit_normalization(domains)
    split = seed if split_seed is None else split_seed
    train = [dataset.split(d, "train", split, holdout_fraction) for d in domains]
    val = [dataset.split(d, "val", split, holdout_fraction) for d in domains]
    with _seeded(torch.device(device), "pretrain-encoders", seed):
        built = {m: build_encoder(specs[m], dataset.input_shape(m)) for m in modalities}
    trainer = UnimodalPretraining(built, dataset.num_classes, train, val, epochs, lr,
                                  weight_decay, batch_size, seed, device,
                                  num_workers=num_workers)
    trainer.run(progress)
    path = None
    if out_path is not None:
        info = {"dataset": type(dataset).__name__, "domains": domains, "modalities": modalities,
                "encoders": specs, "split_seed": split, "holdout_fraction": holdout_fraction,
                "dataset_options": dict(dataset_options or {})}
        path = trainer.save(out_path, info, overwrite)
    return PretrainResult(trainer.selected_state_dict(), trainer.records, trainer.selection(),
                          specs, path)
