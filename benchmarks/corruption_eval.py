"""Cost of a corrupted evaluation pass against a clean one, side by side in one process.

Two data sets, each evaluated by a freshly built (untrained) model with
``merdg.evaluators.clean.evaluate``, the way a run evaluates its target domain:

- **synthetic**: the built-in benchmark (defaults: 600 samples per domain, 3 modalities of 32
  features), ERM with the dataset's default networks; target ``d0``. Clean samples come in
  whole batches from memory (``TensorSamples``); corrupted ones pass one by one through the
  view, so this ratio measures the per-sample overhead of the view against a near-zero
  baseline.
- **epic**: an EPIC-Kitchens tree generated at the real frame size (456x256 JPEGs, 16 kHz
  wav; one domain), read with the paper's clip pipeline (32 RGB frames and 8 flow frames,
  224-pixel crops, 10 s of audio); the paper's encoders at a tiny width so that the time is
  mostly reading and corrupting, which makes the ratio an upper bound of the overhead a real
  run sees.

Passes alternate clean / corrupted, ``--repeats`` times; the table gives the median process CPU
time of a pass (robust to other processes on a shared machine) and the ratio corrupted / clean,
then the same for wall time. ``OMP_NUM_THREADS=1`` and one thread for torch, as the tests.

**Per run** (``--per-run``): what ``--corruptions all`` (every corruption of every modality's
kind, severities 1..5 by default) adds to one run, as a ratio to the clean target evaluation:
the whole suite (``merdg.evaluators.Corruptions.measure``, what a run's end calls on its
selected model, one clean pass included) against one clean pass over the target, and against one
training epoch (the share of a run that evaluates the suite once is ``suite / (epochs x
epoch)``). On the synthetic benchmark (defaults) and, with ``--utd-mhad DATA_DIR``, on
UTD-MHAD (inertial + skeleton, the dataset's default networks, target s1+s2).

Usage: OMP_NUM_THREADS=1 python benchmarks/corruption_eval.py [--repeats 3] [--workdir DIR]
       OMP_NUM_THREADS=1 python benchmarks/corruption_eval.py --per-run [--utd-mhad DATA_DIR]
           [--severities 1,3,5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from merdg.datasets import build_dataset
from merdg.evaluation import CorruptionSpec, parse_severities, zero_filled
from merdg.evaluators import Corruptions, EvaluationContext, RunSpec, corrupted_view
from merdg.evaluators.clean import evaluate
from merdg.run.config import RunConfig
from merdg.run.setup import build_algorithm, source_splits
from merdg.run.training import _train_loader, run_hparams
from merdg.testing import make_epic_fixture

SYNTHETIC_SPECS = [CorruptionSpec("m0", "gaussian_noise", 3), CorruptionSpec("m0", "spikes", 5),
                   CorruptionSpec("m0", "missing", None)]
EPIC_SPECS = [CorruptionSpec("video", "gaussian_noise", 3),
              CorruptionSpec("video", "defocus_blur", 5),
              CorruptionSpec("video", "motion_blur", 5),
              CorruptionSpec("video", "jpeg_compression", 5),
              CorruptionSpec("video", "frame_drop", 5),
              CorruptionSpec("flow", "dropout", 5),
              CorruptionSpec("audio", "gaussian_noise", 3),
              CorruptionSpec("audio", "band_limit", 3),
              CorruptionSpec("audio", "missing", None)]
TINY_PAPER_ENCODERS = {"video": {"width": 8, "stage_blocks": [1, 1, 1, 1]},
                       "flow": {"width": 4, "stage_blocks": [1, 1, 1, 1]},
                       "audio": {"width": 4, "stage_blocks": [1, 1, 1, 1]}}


def timed_pass(algorithm, data, zero, batch_size: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one evaluation pass."""
    cpu, wall = time.process_time(), time.perf_counter()
    evaluate(algorithm, data, torch.device("cpu"), batch_size=batch_size, zero=zero)
    return time.process_time() - cpu, time.perf_counter() - wall


def compare(name: str, dataset, algorithm, clean, specs, repeats: int, batch_size: int) -> None:
    """Print one line per corruption: clean and corrupted median pass times and their ratio."""
    print(f"\n{name}: {len(clean)} target samples, batch {batch_size}")
    print(f"{'corruption':30s} {'clean cpu s':>11s} {'corrupted':>9s} {'ratio':>6s}   "
          f"{'clean wall s':>12s} {'corrupted':>9s} {'ratio':>6s}")
    timed_pass(algorithm, clean, [], batch_size)  # warm-up (allocations, lazy imports)
    for spec in specs:
        view = corrupted_view(dataset, clean, spec, seed=0)
        clean_times, corrupted_times = [], []
        for _ in range(repeats):
            clean_times.append(timed_pass(algorithm, clean, [], batch_size))
            corrupted_times.append(timed_pass(algorithm, view, zero_filled(spec), batch_size))
        (a_cpu, a_wall), (b_cpu, b_wall) = (
            [statistics.median(t[k] for t in times) for k in (0, 1)]
            for times in (clean_times, corrupted_times))
        print(f"{str(spec):30s} {a_cpu:11.3f} {b_cpu:9.3f} {b_cpu / a_cpu:6.2f}   "
              f"{a_wall:12.3f} {b_wall:9.3f} {b_wall / a_wall:6.2f}")


def synthetic(repeats: int) -> None:
    dataset = build_dataset("synthetic")
    dataset.fit_normalization(["d1", "d2", "d3"])
    hparams = run_hparams(RunConfig(dataset="synthetic", target="d0"), dataset)
    torch.manual_seed(0)
    algorithm = build_algorithm(dataset, "ERM", 3, hparams)
    clean = dataset.split("d0", "test", 0, 0.2)
    compare("synthetic (ERM, default networks)", dataset, algorithm, clean, SYNTHETIC_SPECS,
            repeats, batch_size=256)


def epic(repeats: int, workdir: Path) -> None:
    root = make_epic_fixture(workdir / "epic", segments=6, segment_frames=70, size=(256, 456),
                             domains=("D1",))
    dataset = build_dataset("epic-kitchens", str(root))
    config = RunConfig(dataset="epic-kitchens", target="D1",
                       hparams={"encoders": TINY_PAPER_ENCODERS})
    hparams = run_hparams(config, dataset)
    torch.manual_seed(0)
    algorithm = build_algorithm(dataset, "ERM", 1, hparams)
    clean = dataset.split("D1", "test")
    compare("epic (paper clip pipeline, tiny paper encoders)", dataset, algorithm, clean,
            EPIC_SPECS, repeats, batch_size=6)


def timed(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def per_run(name: str, config: RunConfig, severities: list[int], repeats: int) -> None:
    """Time the corruption suite of one run against a clean target pass and a training
    epoch (medians over ``repeats``; CPU and wall seconds)."""
    dataset = build_dataset(config.dataset, config.data_root, config.modalities,
                            **config.dataset_options)
    sources = [d for d in dataset.domains if d != config.target]
    dataset.fit_normalization(sources)
    hparams = run_hparams(config, dataset)
    torch.manual_seed(0)
    algorithm = build_algorithm(dataset, config.algorithm, len(sources), hparams)
    batch_size = int(hparams["batch_size"])
    train_parts, _, target = source_splits(dataset, config, sources, batch_size)
    run = RunSpec(config, dataset, sources)
    evaluator = Corruptions.from_settings({"corruptions": "all", "severities": severities})
    plan = evaluator.plan(run)
    loader, _ = _train_loader(train_parts, sources, config, batch_size)
    device = torch.device("cpu")

    def epoch() -> None:
        algorithm.train()
        for batch in loader:
            algorithm.update(batch.to(device))

    def clean() -> None:
        evaluate(algorithm, target, device)

    def suite() -> None:  # the evaluator on the model, as a run's end does (one clean pass too)
        evaluator.measure(EvaluationContext(run, algorithm, {}, target, train_parts, device))

    clean()  # warm-up
    times = {"clean": [], "suite": [], "epoch": []}
    for _ in range(repeats):
        for key, fn in (("clean", clean), ("suite", suite), ("epoch", epoch)):
            times[key].append(timed(fn))
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
    epochs = int(hparams["epochs"])
    print(f"\n{name}: {len(target)} target samples, {len(plan)} corrupted passes "
          f"(--corruptions all --severities {','.join(map(str, severities))}), "
          f"{epochs} epochs of {len(loader)} steps")
    print(f"{'':8s} {'clean pass s':>12s} {'suite s':>9s} {'suite/clean':>11s} "
          f"{'epoch s':>9s} {'suite/epoch':>11s} {'suite/run':>16s}")
    for i, unit in enumerate(("cpu", "wall")):
        a, b, e = med["clean"][i], med["suite"][i], med["epoch"][i]
        print(f"{unit:8s} {a:12.3f} {b:9.3f} {b / a:11.1f} {e:9.3f} {b / e:11.2f} "
              f"{b / (epochs * (e + a)):16.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the EPIC fixture is written "
                        "(default: a temporary folder, removed afterwards)")
    parser.add_argument("--per-run", action="store_true", help="time the whole suite of one "
                        "run against its clean evaluation instead")
    parser.add_argument("--utd-mhad", metavar="DATA_DIR", help="--per-run: also on UTD-MHAD")
    parser.add_argument("--severities", default="1,2,3,4,5", help="--per-run: severities")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.per_run:
        severities = parse_severities(args.severities)
        per_run("synthetic (ERM, default networks)",
                RunConfig(dataset="synthetic", target="d0"), severities, args.repeats)
        if args.utd_mhad:
            per_run("utd-mhad inertial+skeleton (ERM, default networks)",
                    RunConfig(dataset="utd-mhad", target="s1+s2", data_root=args.utd_mhad,
                              modalities=["inertial", "skeleton"],
                              dataset_options={"progress": False}), severities, args.repeats)
        return
    synthetic(args.repeats)
    if args.workdir:
        epic(args.repeats, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            epic(args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
