"""Probes on frozen features: how much label information an encoder's features carry, and
whether it transfers to the unseen target domain.

A probe is trained on the source domains' training parts, evaluated after every epoch on the
sources' validation parts and on the target, and reported at the epoch with the best source
validation accuracy (ties: the later epoch, as :func:`merdg.run.selection.select_epoch`). The
official release's ``evaluate_modality_features.py`` keeps the epoch with the best *target*
accuracy instead; that oracle number is recorded next to it, labeled (``docs/diagnostics.md``).

Recipe of the official probe (``EPIC-rgb-flow-audio/evaluate_modality_features.py`` in
github.com/olivesgatech/MER-DG): Linear(d, 512) - ReLU - Dropout(0.3) -
Linear(512, C), Adam lr 1e-3, weight decay 1e-4, batch 256, 25 epochs, cross-entropy, no feature
normalization. ``hidden=0`` gives the linear probe with the same optimizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LabeledFeatures", "ProbeConfig", "PROBES", "build_probe", "train_probe"]


class LabeledFeatures(NamedTuple):
    """Features (n, dim) with their labels (n,)."""

    z: Tensor
    y: Tensor


@dataclass(frozen=True)
class ProbeConfig:
    """Architecture and optimization of one probe (defaults: the official MLP probe)."""

    hidden: int = 512
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 25


PROBES: dict[str, ProbeConfig] = {
    "linear": ProbeConfig(hidden=0, dropout=0.0),
    "mlp": ProbeConfig(),
}


def build_probe(in_dim: int, num_classes: int, config: ProbeConfig) -> nn.Module:
    """Linear(in, C) when ``config.hidden == 0``, else Linear-ReLU-Dropout-Linear."""
    if config.hidden == 0:
        return nn.Linear(in_dim, num_classes)
    return nn.Sequential(nn.Linear(in_dim, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                         nn.Linear(config.hidden, num_classes))


@torch.no_grad()
def _accuracy(probe: nn.Module, data: LabeledFeatures, batch_size: int = 4096) -> float:
    probe.eval()
    correct = sum(int((probe(z).argmax(1) == y).sum())
                  for z, y in zip(data.z.split(batch_size), data.y.split(batch_size)))
    return correct / len(data.y)


def _train_epoch(probe: nn.Module, optimizer: torch.optim.Optimizer, data: LabeledFeatures,
                 batch_size: int, generator: torch.Generator) -> tuple[float, float]:
    """One pass over shuffled batches; returns the mean loss and the running accuracy (of the
    training batches as they were trained on, dropout active)."""
    probe.train()
    order = torch.randperm(len(data.y), generator=generator)
    loss_sum, correct = 0.0, 0
    for idx in order.split(batch_size):
        logits = probe(data.z[idx])
        loss = F.cross_entropy(logits, data.y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.detach().argmax(1) == data.y[idx]).sum())
    return loss_sum / len(data.y), correct / len(data.y)


def _check(name: str, data: LabeledFeatures, num_classes: int) -> None:
    if len(data.y) == 0:
        raise ValueError(f"probe {name} set is empty")
    if not bool(torch.isfinite(data.z).all()):
        raise ValueError(f"probe {name} features hold NaN/Inf")
    if int(data.y.min()) < 0 or int(data.y.max()) >= num_classes:
        raise ValueError(f"probe {name} labels outside [0, {num_classes})")


def train_probe(train: LabeledFeatures, val: LabeledFeatures, test: LabeledFeatures,
                num_classes: int, config: ProbeConfig = ProbeConfig(),
                seed: int = 0) -> dict[str, Any]:
    """Train a probe on ``train``; evaluate on ``val`` (selection) and ``test`` every epoch.

    Args:
        train: Source training features and labels.
        val: Source validation features (model selection).
        test: Target features (reported, never used for selection).
        num_classes: Number of classes C (the dataset's, not the largest label seen).
        config: The probe's recipe.
        seed: Seeds the initialization, the batch order and dropout.

    Returns:
        ``{"history": [{"epoch", "loss", "train_acc", "val_acc", "test_acc"}, ...],
        (``train_acc``: running accuracy on the training batches during the epoch)
        "selected": the history entry with the best val_acc (later epoch on ties),
        "oracle": the entry with the best test_acc (peeks at the target), "config": ...}``.
    """
    for name, data in (("train", train), ("val", val), ("test", test)):
        _check(name, data, num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = build_probe(train.z.shape[1], num_classes, config)
        optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        history = []
        for epoch in range(1, config.epochs + 1):
            loss, train_acc = _train_epoch(probe, optimizer, train, config.batch_size, generator)
            history.append({"epoch": epoch, "loss": loss, "train_acc": train_acc,
                            "val_acc": _accuracy(probe, val), "test_acc": _accuracy(probe, test)})
    return {"history": history, "selected": _best(history, "val_acc"),
            "oracle": _best(history, "test_acc"), "config": asdict(config)}


def _best(history: list[dict[str, Any]], key: str) -> dict[str, Any]:
    best = history[0]
    for entry in history[1:]:
        if entry[key] >= best[key]:
            best = entry
    return best
