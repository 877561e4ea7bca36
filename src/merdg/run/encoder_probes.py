"""What each encoder knows on its own, measured during a run (``--encoder-probes``).

The paper's account of fusion overfitting (MER-DG, Yarici & AlRegib, ICML 2026, arXiv
2605.01967, Sections 1 and 3) is that joint training erodes what pretrained encoders knew. To
test it, a run can measure every encoder alone at initialization (after ``--init`` and
``--freeze``, before the first fused step) and after fused training, with one recipe at both
times:

- **probe accuracy**: a linear probe on the encoder's embedding (the fusion classifier's input),
  trained on the sources' training split, its epoch chosen on the sources' validation split,
  reported on the target (:func:`merdg.diagnostics.probes.train_probe`, the linear recipe);
- **effective rank** of the target embeddings (Roy & Vetterli, EUSIPCO 2007;
  :func:`merdg.diagnostics.metrics.effective_rank`): how many directions they spread over.

Unlike the ``probe_acc`` of every epoch record (probes trained along with the model, at the
model's learning rate), these probes are fit after the fact on frozen embeddings, so the
number at initialization and the number after training are comparable.

The measurement leaves the global random state as it found it (every DataLoader iteration draws
from it), so turning it on does not change the run's training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from merdg.datasets.base import DomainConcat, collate
from merdg.diagnostics.metrics import effective_rank
from merdg.diagnostics.probes import PROBES, LabeledFeatures, train_probe
from merdg.hparams import seed_hash

__all__ = ["PROBE_MODES", "encoder_embeddings", "probe_due", "probe_encoders"]

PROBE_MODES = ("none", "last", "every")


def probe_due(mode: str, epoch: int, epochs: int) -> bool:
    """Whether the encoders are measured after ``epoch`` (0-based) of ``epochs``."""
    if mode not in PROBE_MODES:
        raise ValueError(f"encoder probes mode must be one of {PROBE_MODES}, got {mode!r}")
    return mode == "every" or (mode == "last" and epoch == epochs - 1)


@torch.no_grad()
def encoder_embeddings(encoders: Mapping[str, nn.Module], data: Dataset | Sequence[Dataset],
                       device: torch.device, batch_size: int = 256,
                       num_workers: int = 0) -> tuple[dict[str, Tensor], Tensor]:
    """Every sample's embedding per encoder, in eval mode.

    Returns:
        ``({modality: (n, dim) float32 on CPU}, labels (n,))``.
    """
    parts = [data] if isinstance(data, Dataset) else list(data)
    loader = DataLoader(DomainConcat(parts), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=num_workers)
    modes = {m: e.training for m, e in encoders.items()}
    for encoder in encoders.values():
        encoder.eval()
    z: dict[str, list[Tensor]] = {m: [] for m in encoders}
    ys = []
    try:
        for batch in loader:
            batch = batch.to(device)
            for m, encoder in encoders.items():
                z[m].append(encoder(batch.x[m]).float().cpu())
            ys.append(batch.y.cpu())
    finally:
        for m, encoder in encoders.items():
            encoder.train(modes[m])
    return {m: torch.cat(v) for m, v in z.items()}, torch.cat(ys)


def probe_encoders(encoders: Mapping[str, nn.Module], train: Sequence[Dataset],
                   val: Sequence[Dataset], target: Dataset, num_classes: int,
                   device: torch.device, seed: int, batch_size: int = 256,
                   num_workers: int = 0) -> dict[str, dict[str, float]]:
    """Probe accuracy and effective rank of every encoder (module docstring).

    Args:
        encoders: ``{modality: encoder}`` (left in the train/eval mode they had).
        train / val: The sources' training and validation splits.
        target: The target domain.
        num_classes: Classes of the task.
        device: Where the encoders are.
        seed: Seeds the probes (the same seed at initialization and after training).
        batch_size / num_workers: Forward passes.

    Returns:
        ``{modality: {"probe_acc": target accuracy, "val_probe_acc": source-validation accuracy
        at the chosen probe epoch, "erank": effective rank of the target embeddings}}``.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        fit = encoder_embeddings(encoders, train, device, batch_size, num_workers)
        select = encoder_embeddings(encoders, val, device, batch_size, num_workers)
        report = encoder_embeddings(encoders, target, device, batch_size, num_workers)
        out = {}
        for m in encoders:
            probe = train_probe(LabeledFeatures(fit[0][m], fit[1]),
                                LabeledFeatures(select[0][m], select[1]),
                                LabeledFeatures(report[0][m], report[1]), num_classes,
                                PROBES["linear"], seed=seed_hash("encoder-probe", seed, m))
            out[m] = {"probe_acc": probe["selected"]["test_acc"],
                      "val_probe_acc": probe["selected"]["val_acc"],
                      "erank": effective_rank(report[0][m])}
    return out
