"""What saving a run's weights costs on disk (``--save-model``), per data set and preset.

A run saves the weights of the epoch source validation selects (``model.pt``, the default; the
model ``merdg evaluate`` and ``merdg diagnose`` read) and, with ``--save-model selected+last``,
the last epoch's (``model.last.pt``). Each file is the algorithm's ``state_dict`` (the network,
its projection heads and probes, a teacher for MBCD/CMRF) plus the run's info, written with
``torch.save``. This script builds each configuration's algorithm exactly as a run does
(:func:`merdg.run.setup.build_algorithm` with the resolved hparams) and prints the size of that
file, and its parameter count:

- the built-in benchmark (``synthetic``, default networks), ERM and MER-DG;
- UTD-MHAD's default networks (depth + inertial + skeleton), from the real release when
  ``--utd-mhad DATA_DIR`` is given;
- every paper preset (``merdg list presets``: the paper's SlowFast, SlowOnly and VGGSound
  ResNet encoders), on a generated EPIC-Kitchens / HAC tree with the real sample shapes.

Usage: OMP_NUM_THREADS=1 python benchmarks/model_size.py [--utd-mhad DATA_DIR]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import torch

from merdg.datasets import build_dataset
from merdg.presets import PRESETS
from merdg.run.config import RunConfig
from merdg.run.hparams import resolve_run_hparams
from merdg.run.setup import build_algorithm
from merdg.testing import make_epic_fixture, make_hac_fixture


def size(config: RunConfig, dataset) -> tuple[float, int]:
    """(MiB of model.pt, parameters) of the run ``config`` describes."""
    hparams = resolve_run_hparams(config, dataset)
    torch.manual_seed(0)
    algorithm = build_algorithm(dataset, config.algorithm, 2, hparams)
    buffer = io.BytesIO()
    torch.save({"state_dict": algorithm.state_dict(), "run": {}}, buffer)
    return buffer.tell() / 2**20, sum(p.numel() for p in algorithm.parameters())


def show(name: str, mib: float, params: int) -> None:
    print(f"{name:38s} {mib:10.2f} {params / 1e6:12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--utd-mhad", metavar="DATA_DIR", help="the UTD-MHAD release")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'configuration':38s} {'model.pt MiB':>10s} {'params (M)':>12s}")
    synthetic = build_dataset("synthetic")
    for algorithm in ("ERM", "MERDG"):
        show(f"synthetic {algorithm}", *size(RunConfig("synthetic", "d0", algorithm),
                                              synthetic))
    if args.utd_mhad:
        utd = build_dataset("utd-mhad", args.utd_mhad, None, progress=False)
        for algorithm in ("ERM", "MERDG"):
            config = RunConfig("utd-mhad", "s1+s2", algorithm, data_root=args.utd_mhad)
            show(f"utd-mhad (3 modalities) {algorithm}", *size(config, utd))
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"epic-kitchens": make_epic_fixture(Path(tmp) / "epic", segments=2),
                 "hac": make_hac_fixture(Path(tmp) / "hac", clips=2)}
        for name, preset in PRESETS.items():
            dataset = build_dataset(preset.dataset, str(roots[preset.dataset]),
                                    list(preset.modalities))
            config = RunConfig(preset.dataset, dataset.domains[0], preset.algorithm,
                               modalities=list(preset.modalities), preset=name,
                               checkpoint_dir="none", data_root=str(roots[preset.dataset]))
            show(name, *size(config, dataset))


if __name__ == "__main__":
    main()
