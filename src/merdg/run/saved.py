"""A finished run rebuilt from its directory: config, data split as in training, saved weights.

A run directory holds ``config.json`` (config, resolved hparams, sources, modalities) and the
weights of the epoch source validation selected (``model.pt``; ``model.last.pt`` too with
``--save-model selected+last``). :func:`load_saved_run` rebuilds the dataset with the same
options, fits the input normalization on the same sources and splits it with the same holdout
(:func:`merdg.run.setup.prepare_data`), rebuilds the algorithm and loads the weights, so
``merdg evaluate`` and ``merdg diagnose`` see exactly the model and the splits of the run's
tables.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merdg.algorithms import Algorithm
from merdg.datasets import DomainDataset, build_dataset
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.setup import RunData, build_algorithm, prepare_data, resolve_device

__all__ = ["SavedRun", "load_saved_run", "read_run_info"]


@dataclass
class SavedRun:
    """A finished run with its saved weights loaded.

    Attributes:
        path: The run directory.
        info: Its ``config.json``.
        config: Its config (``data_root`` replaced when the data moved).
        records: Its per-epoch records.
        data: Its data, split as in training.
        algorithm: The algorithm with the saved weights, in eval mode.
        device: Where the algorithm is.
        model: ``{"rule", "epoch", "digest", "file"}`` of the weights loaded.
    """

    path: Path
    info: dict[str, Any]
    config: RunConfig
    records: list[dict[str, Any]]
    data: RunData
    algorithm: Algorithm
    device: torch.device
    model: dict[str, Any]

    @property
    def directory(self) -> RunDir:
        return RunDir(self.path)


def read_run_info(directory: RunDir) -> tuple[dict[str, Any], RunConfig]:
    """``config.json`` and the run's config, checked.

    Raises:
        FileNotFoundError: No ``config.json``.
        ValueError: It is not a merdg run's (one line naming what is wrong).
    """
    info = directory.read_info()
    missing = [k for k in ("config", "hparams", "sources", "modalities") if k not in info]
    if missing:
        raise ValueError(f"{directory.path}: config.json lacks {missing}; was it written by "
                         "merdg train?")
    try:
        config = RunConfig.from_dict(info["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory.file(RunDir.CONFIG)}: not a valid run config ({err})"
                         ) from err
    if not isinstance(info["hparams"], dict) or not isinstance(info["sources"], list):
        raise ValueError(f"{directory.file(RunDir.CONFIG)}: 'hparams' must be a JSON object and "
                         "'sources' a list")
    return info, config


def load_saved_run(path: str | Path, device: str = "cpu", data_root: str | None = None,
                   rule: str = "source_val", dataset: DomainDataset | None = None,
                   **settings: Any) -> SavedRun:
    """Rebuild a finished run's data and model, with the weights ``rule`` reports.

    Args:
        path: The run directory.
        device: Device of the forward passes (``"auto"`` picks CUDA when available).
        data_root: Replaces the run's ``data_root`` (the data moved since training).
        rule: ``"source_val"`` (``model.pt``) or ``"last"``.
        dataset: A dataset already built with the run's dataset options and modalities (reused
            across runs; its normalization is refit on this run's sources).
        settings: Other :class:`~merdg.run.config.RunConfig` fields to replace, of those that
            do not change the results (e.g. ``eval_batch_size``, ``num_workers``).

    Raises:
        FileNotFoundError: ``config.json`` or the weights are missing.
        ValueError: A file is malformed, or the weights do not fit the rebuilt model.
    """
    directory = RunDir(path)
    info, config = read_run_info(directory)
    changes = {**settings, **({"data_root": data_root} if data_root else {})}
    changed = [k for k in changes if RunConfig.option_of(k).identity]
    if changed:
        raise ValueError(f"{changed} change what the run computes; they cannot be replaced")
    config = dataclasses.replace(config, **changes)
    if dataset is None:
        dataset = build_dataset(config.dataset, config.data_root, info["modalities"],
                                **config.dataset_options)
    data = prepare_data(config, dataset, info["sources"], int(info["hparams"]["batch_size"]))
    torch_device = resolve_device(device)
    known = data.known_classes
    algorithm = build_algorithm(dataset, config.algorithm, len(info["sources"]), info["hparams"],
                                torch_device, num_classes=len(known) if known else None)
    saved = directory.read_model(rule)
    try:
        algorithm.load_state_dict(saved["state_dict"])
    except RuntimeError as err:
        file = directory.model_file_of(rule)
        raise ValueError(f"{file} does not fit the model rebuilt from the run's config.json: "
                         f"{str(err).splitlines()[0]}") from err
    algorithm.set_precision(config.precision)
    algorithm.eval()
    model = {"rule": saved.get("rule", rule), "epoch": int(saved["epoch"]),
             "digest": saved["digest"], "file": directory.model_file_of(rule).name}
    return SavedRun(Path(path), info, config, directory.read_records(), data, algorithm,
                    torch_device, model)
