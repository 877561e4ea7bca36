"""Rebuild a trained run from its directory and pass its data through the frozen model.

:func:`load_run` is :func:`merdg.run.saved.load_saved_run` (the dataset with the same options,
normalized on the same sources, the algorithm with the saved weights of the selected epoch, so
the splits are exactly those of training) for the analyses of closed-set runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from merdg.algorithms import Algorithm
from merdg.datasets import DomainDataset
from merdg.datasets.base import DomainConcat, collate
from merdg.run.directory import RunDir
from merdg.run.saved import load_saved_run, read_run_info

__all__ = ["LoadedRun", "Outputs", "extract", "load_run", "zero_variants"]


@dataclass
class LoadedRun:
    """A trained run ready for analysis.

    Attributes:
        path: The run directory.
        info: ``config.json`` (keys ``config``, ``hparams``, ``sources``, ``modalities``, ...).
        records: The per-epoch records of ``records.jsonl`` (empty if the file is missing).
        dataset: The dataset, normalized on the run's sources.
        algorithm: The algorithm with the trained weights, in eval mode.
        device: Where the algorithm lives.
    """

    path: Path
    info: dict[str, Any]
    records: list[dict[str, Any]]
    dataset: DomainDataset
    algorithm: Algorithm
    device: torch.device

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def name(self) -> str:
        return self.config["algorithm"]

    @property
    def sources(self) -> list[str]:
        return list(self.info["sources"])

    @property
    def target(self) -> str:
        return self.config["target"]

    @property
    def modalities(self) -> list[str]:
        return list(self.algorithm.modalities)

    def split(self, domain: str, role: str) -> Dataset:
        """The run's ``role`` part of ``domain`` (same seed and holdout as in training)."""
        split_seed = self.config.get("split_seed")
        seed = int(self.config["seed"] if split_seed is None else split_seed)
        return self.dataset.split(domain, role, seed, float(self.config["holdout_fraction"]))


def load_run(run_dir: str | Path, device: str = "cpu", data_root: str | None = None,
             dataset: DomainDataset | None = None) -> LoadedRun:
    """Rebuild the dataset and the trained algorithm of a run directory (the weights of the
    epoch source validation selected).

    Args:
        run_dir: Directory of a finished run with saved weights (the default).
        device: Device for the forward passes (``"auto"`` picks CUDA when available).
        data_root: Overrides the run's ``data_root`` (data moved since training).
        dataset: A dataset already built with the run's dataset options and modalities (reused
            across runs of one comparison; normalization is refit on this run's sources).

    Raises:
        FileNotFoundError: ``config.json`` or ``model.pt`` is missing.
        ValueError: A file is malformed, the weights do not fit the rebuilt model, or it is an
            open-set run.
    """
    path = Path(run_dir)
    info, config = read_run_info(RunDir(path))
    if config.open_set:
        raise ValueError(f"{path} is an open-set run; the diagnostics analyse closed-set runs "
                         "only")
    saved = load_saved_run(path, device, data_root, dataset=dataset)
    return LoadedRun(path, saved.info, saved.records, saved.data.dataset, saved.algorithm,
                     saved.device)


def zero_variants(modalities: list[str]) -> dict[str, list[str]]:
    """Fusion inputs to zero for each reliance variant: all kept, each one dropped, each alone."""
    variants = {"all": []}
    variants.update({f"without {m}": [m] for m in modalities})
    if len(modalities) > 2:  # with two modalities "only a" is "without b"
        variants.update({f"only {m}": [o for o in modalities if o != m] for m in modalities})
    return variants


@dataclass
class Outputs:
    """The frozen model's outputs on one part of one domain.

    Attributes:
        y: Labels (n,).
        embeddings: ``{m: (n, D_m)}`` encoder outputs (what the fusion classifier reads).
        projections: ``{m: (n, P)}`` projection-head outputs (what MER-DG regularizes).
        logits: ``{variant: (n, C)}`` fused logits with the variant's modalities zeroed (see
            :func:`zero_variants`); empty unless requested.
        head_logits: ``{m: (n, C)}`` the model's own unimodal heads (``probe_logits``).
    """

    y: Tensor
    embeddings: dict[str, Tensor]
    projections: dict[str, Tensor]
    logits: dict[str, Tensor]
    head_logits: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _cat(chunks: Iterable[dict[str, Tensor]]) -> dict[str, Tensor]:
    chunks = list(chunks)
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}


@torch.no_grad()
def _batch_outputs(run: LoadedRun, x: dict[str, Tensor],
                   variants: dict[str, Collection[str]]) -> dict[str, dict[str, Tensor]]:
    algo = run.algorithm
    with algo.autocast():
        emb = algo.net.embed(x)
        proj = algo.net.project(emb)
    out = {"embeddings": {m: z.float().cpu() for m, z in emb.items()},
           "projections": {m: z.float().cpu() for m, z in proj.items()},
           "logits": {}, "head_logits": {}}
    for name, zero in variants.items():
        ev = algo.evaluate(x, zero=zero)  # the algorithm's own evaluation path
        out["logits"][name] = ev.logits.float().cpu()
        if not zero:
            out["head_logits"] = {m: v.float().cpu() for m, v in ev.probe_logits.items()}
    return out


def extract(run: LoadedRun, data: Dataset, with_logits: bool = True, batch_size: int = 256,
            num_workers: int = 0) -> Outputs:
    """Pass ``data`` through the frozen model (eval mode) and collect :class:`Outputs`.

    Args:
        run: The loaded run.
        data: One domain part (e.g. ``run.split("d1", "val")``).
        with_logits: Also compute fused logits for every :func:`zero_variants` variant (one
            :meth:`~merdg.algorithms.Algorithm.evaluate` pass per variant) and the heads.
        batch_size: Samples per forward pass.
        num_workers: DataLoader workers.
    """
    if len(data) == 0:
        raise ValueError("cannot extract features from an empty split")
    variants = zero_variants(run.modalities) if with_logits else {}
    loader = DataLoader(DomainConcat([data]), batch_size=batch_size, shuffle=False,
                        collate_fn=collate, num_workers=num_workers)
    run.algorithm.eval()
    parts, labels = [], []
    for batch in loader:
        batch = batch.to(run.device)
        parts.append(_batch_outputs(run, batch.x, variants))
        labels.append(batch.y.cpu())
    return Outputs(torch.cat(labels), *(_cat(p[k] for p in parts) for k in
                                        ("embeddings", "projections", "logits", "head_logits")))
