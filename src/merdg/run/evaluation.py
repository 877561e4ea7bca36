"""Evaluation passes of one run: accuracy, loss and per-modality probe accuracy of a split, the
target with each modality missing, and the target under corruptions (``docs/robustness.md``).

Under torch.distributed each rank evaluates every ``world_size``-th sample and the sums
(correct, loss, count) are added over ranks, so every rank returns the whole split's metrics.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from merdg import dist as mdist
from merdg.algorithms import Algorithm
from merdg.datasets.base import DomainConcat, DomainDataset, collate
from merdg.evaluation import (
    CORRUPTIONS,
    CorruptionSpec,
    corrupted_view,
    corruption_names,
    corruption_plan,
    summarize_robustness,
    zero_filled,
)
from merdg.run.data_parallel import rank_shard, sum_over_ranks

__all__ = ["CORRUPTION_MODES", "MISSING_MODES", "check_corruption_names", "corruptions_due",
           "evaluate", "evaluate_corruptions", "evaluate_missing", "merge_evaluations",
           "missing_due", "plan_corruptions"]

MISSING_MODES = ("none", "last", "every")
CORRUPTION_MODES = ("last", "every")


@torch.no_grad()
def evaluate(algorithm: Algorithm, data: Dataset, device: torch.device, batch_size: int = 256,
             num_workers: int = 0, zero: Collection[str] = (),
             translate: bool = False) -> dict[str, Any]:
    """Accuracy (top-1 over the whole split), mean CE and per-modality probe accuracies.

    Modalities in ``zero`` are zero-filled, or, with ``translate``, imputed by the algorithm's
    ``evaluate_translated`` (SimMMDG, MOOSA).

    Raises:
        ValueError: The split is empty.
    """
    algorithm.eval()
    data = rank_shard(data)
    loader = DataLoader(DomainConcat([data]), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=num_workers)
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


def merge_evaluations(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Pool per-domain evaluations into one (sample-weighted), keeping the per-domain numbers."""
    n = sum(p["n"] for p in parts.values())
    return {
        "acc": sum(p["acc"] * p["n"] for p in parts.values()) / n,
        "loss": sum(p["loss"] * p["n"] for p in parts.values()) / n,
        "n": n,
        "probe_acc": {m: sum(p["probe_acc"][m] * p["n"] for p in parts.values()) / n
                      for m in next(iter(parts.values()))["probe_acc"]},
        "per_domain": {d: p["acc"] for d, p in parts.items()},
    }


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


def missing_due(mode: str, epoch: int, epochs: int, modalities: Sequence[str]) -> bool:
    """Whether this epoch evaluates the target with a modality missing (needs >= 2)."""
    if mode == "none" or len(modalities) < 2:
        return False
    return mode == "every" or epoch == epochs - 1


def check_corruption_names(corruptions: str | Sequence[str] | None) -> None:
    """Fail early on a corruption name no modality kind has (before any data is read).

    Raises:
        ValueError: One line naming the unknown names and listing every kind's names.
    """
    if corruptions is None or corruptions == "all":
        return
    known = {kind: corruption_names(kind) for kind in CORRUPTIONS}
    unknown = [n for n in corruptions if not any(n in names for names in known.values())]
    if unknown:
        listing = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in known.items())
        raise ValueError(f"--corruptions: unknown corruption(s) {unknown}; names by modality "
                         f"kind: {listing}")


def plan_corruptions(dataset: DomainDataset, corruptions: str | Sequence[str] | None,
                     severities: Sequence[int]) -> list[CorruptionSpec]:
    """The (modality, corruption, severity) evaluations of a run on ``dataset``'s modalities
    (:func:`merdg.evaluation.corruption_plan`); [] when ``corruptions`` is None.

    Raises:
        ValueError: A name none of the dataset's modalities accepts (one line listing the
            names each modality accepts), or an invalid severity.
    """
    if corruptions is None:
        return []
    kinds = {m: dataset.modality_kind(m) for m in dataset.modalities}
    try:
        return corruption_plan(kinds, corruptions, severities)
    except ValueError as err:
        raise ValueError(f"--corruptions: {err}") from None


def corruptions_due(mode: str, epoch: int, epochs: int) -> bool:
    """Whether this epoch evaluates the target under the corruptions (``"last"`` or
    ``"every"``; a run with corruptions planned)."""
    if mode not in CORRUPTION_MODES:
        raise ValueError(f"eval_corruptions must be one of {CORRUPTION_MODES}, got {mode!r}")
    return mode == "every" or epoch == epochs - 1


def evaluate_corruptions(algorithm: Algorithm, dataset: DomainDataset, data: Dataset,
                         device: torch.device, specs: Sequence[CorruptionSpec],
                         clean_acc: float, seed: int = 0, batch_size: int = 256,
                         num_workers: int = 0) -> dict[str, Any]:
    """Accuracy of ``data`` (a split of ``dataset``) under every spec, one pass each.

    Each pass reads the split through :func:`merdg.evaluation.corrupted_view` (the corruption
    happens in ``__getitem__``, in the DataLoader workers); ``missing`` also zero-fills the
    modality in the fusion (:func:`merdg.evaluation.zero_filled`), so its accuracy equals
    ``evaluate_missing``'s zero-filled one. Like :func:`evaluate_missing`, the passes leave the
    global random state as they found it, so turning them on cannot change the training.

    Args:
        specs: From :func:`plan_corruptions`.
        clean_acc: The split's clean accuracy (the summary's reference).
        seed: Seed of the corruptions' draws (the same for every algorithm and run).

    Returns:
        ``{"corruptions": {modality: {corruption: {severity_key: acc}}}, "robustness":
        summarize_robustness(...) plus "time_s" (seconds of the passes)}``.
    """
    start = time.perf_counter()
    accuracies: dict[CorruptionSpec, float] = {}
    with torch.random.fork_rng(devices=[]):
        for spec in specs:
            view = corrupted_view(dataset, data, spec, seed)
            accuracies[spec] = evaluate(algorithm, view, device, batch_size, num_workers,
                                        zero=zero_filled(spec))["acc"]
    nested: dict[str, dict[str, dict[str, float]]] = {}
    for spec, acc in accuracies.items():
        nested.setdefault(spec.modality, {}).setdefault(spec.corruption, {})[
            spec.severity_key] = acc
    robustness = summarize_robustness(clean_acc, accuracies)
    robustness["time_s"] = time.perf_counter() - start
    return {"corruptions": nested, "robustness": robustness}
