"""What the framework costs on top of the work: a run against a bare PyTorch loop, each
algorithm's update against the bare step, and where a run's time goes.

Everything is measured side by side in one process, on one torch thread, on the built-in
benchmark's default run (``merdg train --dataset synthetic --target d0``: 15 epochs of 30 steps
of 48 samples, the dataset's default networks); each figure is the minimum wall time over
``--repeats`` interleaved repetitions (robust to other processes on a shared machine):

- **bare loop**: what a PyTorch user would write for the same training: the run's data loader
  (the same batches), the same network, forward, the loss ERM minimizes (cross-entropy of the
  fused logits plus the mean cross-entropy of the per-modality linear probes on detached
  embeddings, which every merdg algorithm trains for its diagnostics), backward, Adam. The
  script checks that it takes exactly ERM's steps (identical weights after one epoch), and
  also times the loop without the probes, so their own cost is visible;
- **bare loop + evaluation**: the bare loop with, after every epoch, the accuracy on the
  sources' validation sets and on the target written plainly (batches of 256, inference mode):
  the evaluation the protocol's epoch selection and its tables need, without anything else;
- **bare step**: the same step on batches already in memory (no loading);
- **ERM / MER-DG / SimMMDG / SimMMDG+MER update**: ``algorithm.update(batch)`` on the same
  batches in memory; **MER-DG heads alone**: MER-DG's step with its regularizer replaced by a
  term that costs nothing (the projection heads' forward and backward, and Adam on their
  weights, remain): the least a MER-DG step can cost with these heads;
- **full run**: ``merdg.run.training.train`` of the same config into a fresh run directory
  (data, the network, every evaluation after an epoch, records, checkpoints, the evaluations
  of the selected model, the summary and the saved weights).

Ratios: full run / bare loop, full run / bare loop + evaluation, ERM update / bare step, and
each update / ERM update; ``ratio`` divides the minima, ``paired`` is the median over the
repetitions of the ratio within one repetition (the two measured seconds apart, so a slow
spell of a shared machine hits both). The
breakdown of one more full run times each phase by wrapping the run's own functions (data
loading of training and of evaluation, updates, the clean evaluation after every epoch, each
evaluator of the selected model, records, checkpoints, the saved weights and summary); what
no phase covers is setup (data generation, the network, the run directory).

``--shapes`` adds the MER-DG / ERM step ratio at UTD-MHAD's shapes (its default networks, batch
24; real samples with ``--utd-mhad DIR``, else random inputs of its shapes) and at the paper
presets' (the paper's video, flow and audio encoders, random weights and inputs, batch 2).

Usage: OMP_NUM_THREADS=1 python benchmarks/overhead.py [--repeats 7] [--shapes]
       [--utd-mhad DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import merdg
import merdg.run.training as training
from merdg.algorithms import Algorithm, get_algorithm_class
from merdg.algorithms.base import Objective
from merdg.datasets import build_dataset
from merdg.datasets.base import Batch, DomainConcat, collate
from merdg.run.config import RunConfig
from merdg.run.directory import RunDir
from merdg.run.evaluation import EvaluationStage
from merdg.run.hparams import resolve_run_hparams
from merdg.run.schedule import Schedule, TrainingBatches
from merdg.run.setup import build_algorithm, prepare_data, run_sources

CONFIG = {"dataset": "synthetic", "target": "d0"}
ALGORITHMS = ("ERM", "MERDG", "SimMMDG", "SimMMDG+MER")


class Workload:
    """A run's data, loader and hparams, and every batch it trains on (as the run loads them).

    Args:
        config: The run (``target`` None: the dataset's first domain).
    """

    def __init__(self, config: RunConfig) -> None:
        self.dataset = build_dataset(config.dataset, root=config.data_root)
        if config.target is None:
            config = RunConfig(**{**config.to_dict(), "target": self.dataset.domains[0]})
        self.config = config
        self.sources = run_sources(config, self.dataset)
        self.hparams = resolve_run_hparams(config, self.dataset)
        batch_size = int(self.hparams["batch_size"])
        data = prepare_data(config, self.dataset, self.sources, batch_size)
        self.eval_sets = [*data.val_sets.values(), data.target_set]  # what selection reads
        self.loader, self.sampler = training._train_loader(data.train_parts, self.sources,
                                                           config, batch_size)
        self.schedule = Schedule.of(self.hparams, len(self.sampler))
        self._batches: list[Batch] | None = None

    @property
    def batches(self) -> list[Batch]:
        if self._batches is None:
            self._batches = list(self.loader_batches())
        return self._batches

    def loader_batches(self) -> Iterator[Batch]:
        """The run's batches, loaded as the run loads them."""
        batches = TrainingBatches(self.loader, self.sampler, self.schedule.steps_per_epoch)
        batches.start_at(0)
        for _ in range(self.schedule.total_steps):
            yield batches.next()

    def algorithm(self, name: str) -> Algorithm:
        """``name`` built as a run builds it, from seed 0."""
        torch.manual_seed(0)
        config = RunConfig(**{**self.config.to_dict(), "algorithm": name})
        hparams = resolve_run_hparams(config, self.dataset)
        algorithm = build_algorithm(self.dataset, name, len(self.sources), hparams)
        algorithm.train()
        return algorithm


def bare_loss(net: torch.nn.Module, batch: Batch, probes: bool = True) -> torch.Tensor:
    """The loss ERM minimizes, in plain PyTorch (``probes=False``: the fused CE alone)."""
    out = net(batch.x)
    loss = F.cross_entropy(out.logits, batch.y)
    if probes:
        probe = torch.stack([F.cross_entropy(out.probe_logits[m], batch.y)
                             for m in net.modalities]).mean()
        loss = loss + probe
    return loss


def bare_training(work: Workload, batches: Iterator[Batch] | Sequence[Batch],
                  probes: bool = True, evaluate: bool = False) -> tuple[float, torch.nn.Module]:
    """Seconds of forward, loss, backward and Adam over ``batches``, and the trained network
    (``evaluate``: with :func:`bare_evaluation` after every epoch)."""
    net = work.algorithm("ERM").net
    optimizer = torch.optim.Adam(net.parameters(), lr=float(work.hparams["lr"]),
                                 weight_decay=float(work.hparams["weight_decay"]), fused=True)
    start = time.perf_counter()
    for step, batch in enumerate(batches, 1):
        loss = bare_loss(net, batch, probes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if evaluate and step % work.schedule.steps_per_epoch == 0:
            bare_evaluation(net, work.eval_sets)
    return time.perf_counter() - start, net


def bare_evaluation(net: torch.nn.Module, sets: Sequence[Any]) -> list[float]:
    """The accuracy of ``net`` on each set, in plain PyTorch (batches of 256 in inference mode,
    fetched by indexing the in-memory samples): what a loop that selects its epoch on source
    validation, and reports the target, evaluates after every epoch."""
    net.eval()
    accuracies = []
    with torch.inference_mode():
        for data in sets:
            correct = 0
            for batch in DataLoader(DomainConcat([data]), batch_size=256, collate_fn=collate):
                correct += int((net(batch.x).logits.argmax(1) == batch.y).sum())
            accuracies.append(correct / len(data))
    net.train()
    return accuracies


def updates(algorithm: Algorithm, batches: Sequence[Batch]) -> float:
    """Seconds of ``algorithm.update`` over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        algorithm.update(batch)
    return time.perf_counter() - start


def heads_alone(algorithm: Algorithm) -> Algorithm:
    """MER-DG with its regularizer replaced by a term that costs nothing: the projection heads
    still run forward and backward (their outputs enter the loss with weight 0) and Adam still
    steps their weights."""
    base_objective = get_algorithm_class("ERM").objective  # MER-DG is ERM plus its term

    def objective(self: Algorithm, batch: Batch) -> Objective:
        obj = base_objective(self, batch)
        projections = self.net.project(obj.out.embeddings)
        free = sum(z.sum() for z in projections.values()) * 0.0
        return obj._replace(loss=obj.loss + free)

    algorithm.objective = types.MethodType(objective, algorithm)
    return algorithm


def same_steps(work: Workload) -> bool:
    """Whether the bare loop takes exactly ERM's steps (identical weights after one epoch)."""
    batches = work.batches[:work.schedule.steps_per_epoch]
    _, net = bare_training(work, batches)
    erm = work.algorithm("ERM")
    updates(erm, batches)
    bare, ours = net.state_dict(), erm.net.state_dict()
    return all(torch.equal(bare[k], ours[k]) for k in ours)


class Phases:
    """Wall time per phase of one run, timed by wrapping the run's own functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.active: list[str] = []

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.active.append(name)
        try:
            yield
        finally:
            self.active.pop()
            self.seconds[name] += time.perf_counter() - start

    def wrap(self, owner: Any, attribute: str, name: str) -> Callable[[], None]:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timing(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, original)


def _instrument(phases: Phases) -> list[Callable[[], None]]:
    from merdg import evaluators

    undo = [phases.wrap(Algorithm, "update", "updates"),
            phases.wrap(EvaluationStage, "epoch", "evaluation after every epoch (clean)"),
            phases.wrap(RunDir, "write_checkpoint", "checkpoints"),
            phases.wrap(RunDir, "append_record", "records"),
            phases.wrap(RunDir, "write_evaluation", "records"),
            phases.wrap(RunDir, "finish", "saved weights and summary"),
            phases.wrap(training, "_keep_selected", "keeping the selected weights"),
            phases.wrap(training, "_log_evaluation", "log lines")]
    for name in evaluators.ORDER:
        cls = evaluators.EVALUATORS.get(name)
        if "measure" in cls.__dict__:
            undo.append(phases.wrap(cls, "measure", f"selected model: {name}"))
    loader_iter = torch.utils.data.DataLoader.__iter__

    def timed_iter(self: Any) -> Iterator[Any]:
        iterator = loader_iter(self)
        while True:
            where = "training" if "evaluation" not in " ".join(phases.active) else "evaluation"
            with phases.timing(f"data loading ({where})"):
                batch = next(iterator, None)
            if batch is None:
                return
            yield batch

    torch.utils.data.DataLoader.__iter__ = timed_iter
    undo.append(lambda: setattr(torch.utils.data.DataLoader, "__iter__", loader_iter))
    return undo


def full_run(config: RunConfig, phases: Phases | None = None) -> float:
    """Seconds of ``train(config)`` into a fresh directory (phases timed when given)."""
    out = Path(tempfile.mkdtemp(prefix="merdg-overhead-"))
    restore = _instrument(phases) if phases is not None else []
    try:
        start = time.perf_counter()
        training.train(RunConfig(**{**config.to_dict(), "out_dir": str(out / "run")}),
                       progress=False)
        return time.perf_counter() - start
    finally:
        for undo in restore:
            undo()
        shutil.rmtree(out, ignore_errors=True)


def step_seconds(algorithm: Algorithm, batch: Batch, repeats: int) -> float:
    """The fastest of ``repeats`` updates on ``batch`` (after one warm-up update)."""
    algorithm.update(batch)
    return min(updates(algorithm, [batch]) for _ in range(repeats))


def paper_algorithm(name: str) -> tuple[Algorithm, Batch]:
    """``name`` on the paper presets' networks (video, audio and flow encoders of
    :data:`merdg.datasets.clips.PAPER_ENCODERS` from random weights, the paper's heads) and a
    random batch of 2 clips of their input shapes (EPIC-Kitchens: 8 classes)."""
    from merdg.datasets.clips import PAPER_ENCODERS, ClipOptions
    from merdg.hparams import TRAINING_HPARAMS, resolve_hparams
    from merdg.models import MultimodalNet, build_encoder

    cls = get_algorithm_class(name)
    hparams = resolve_hparams(TRAINING_HPARAMS, cls.HPARAMS)
    options = ClipOptions()
    torch.manual_seed(0)
    encoders = {m: build_encoder({**spec, "checkpoint": None}, options.input_shape(m))
                for m, spec in PAPER_ENCODERS.items()}
    net = MultimodalNet(encoders, 8, fusion_hidden=int(hparams["fusion_hidden"]),
                        proj_hidden=int(hparams["proj_hidden"]), proj_dim=int(hparams["proj_dim"]))
    algorithm = cls(net, 2, hparams)
    algorithm.train()
    x = {m: torch.randn(2, *options.input_shape(m)) for m in PAPER_ENCODERS}
    return algorithm, Batch(x, torch.tensor([0, 1]), torch.tensor([0, 1]))


def shape_ratios(repeats: int, utd_root: str | None) -> None:
    """MER-DG / ERM per step at UTD-MHAD's and the paper presets' shapes."""
    print(f"\n{'shapes':52s} {'ERM step':>10s} {'MER-DG step':>12s} {'ratio':>6s}")
    cases = {}
    if utd_root is not None:
        work = Workload(RunConfig(dataset="utd-mhad", data_root=utd_root))
        batch = next(work.loader_batches())
        cases[f"UTD-MHAD {'+'.join(work.dataset.modalities)}, batch {len(batch)}"] = {
            name: (work.algorithm(name), batch) for name in ("ERM", "MERDG")}
    else:
        print("(UTD-MHAD: give --utd-mhad DIR)")
    cases["paper presets video+audio+flow, batch 2"] = {
        name: paper_algorithm(name) for name in ("ERM", "MERDG")}
    for label, pair in cases.items():
        erm, mer = (step_seconds(*pair[name], repeats) for name in ("ERM", "MERDG"))
        print(f"{label:52s} {1000 * erm:8.1f}ms {1000 * mer:10.1f}ms {mer / erm:6.2f}")


def _machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     subprocess.run(["lscpu"], capture_output=True, text=True).stdout
                     .splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", action="store_true",
                        help="also the MER-DG / ERM step at UTD-MHAD's and the paper's shapes")
    parser.add_argument("--utd-mhad", metavar="DIR", help="the UTD-MHAD release (for --shapes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, merdg {merdg.__version__}, {_machine()}, "
          f"{torch.get_num_threads()} thread, {time.strftime('%Y-%m-%d %H:%M')}")
    config = RunConfig(**CONFIG)
    work = Workload(config)
    n = len(work.batches)
    print(f"built-in benchmark, target d0: {n} steps of {len(work.batches[0])} samples; "
          f"the bare loop takes ERM's exact steps: {'yes' if same_steps(work) else 'NO'}")
    times: dict[str, list[float]] = defaultdict(list)
    full_run(config)  # warm-up (first allocations, lazy imports)
    for _ in range(args.repeats):  # interleaved, so that load changes hit every figure alike
        times["bare loop"].append(bare_training(work, work.loader_batches())[0])
        times["bare loop + evaluation"].append(
            bare_training(work, work.loader_batches(), evaluate=True)[0])
        times["bare loop, no probes"].append(
            bare_training(work, work.loader_batches(), probes=False)[0])
        times["bare step"].append(bare_training(work, work.batches)[0])
        for algorithm in ALGORITHMS:
            times[algorithm].append(updates(work.algorithm(algorithm), work.batches))
        times["heads"].append(updates(heads_alone(work.algorithm("MERDG")), work.batches))
        times["full"].append(full_run(config))
    best = {k: min(v) for k, v in times.items()}

    def row(label: str, key: str, over: str | None) -> None:
        ratio = paired = ""
        if over:  # the ratio of the minima, and the median of the ratios within a repetition
            ratio = f"{best[key] / best[over]:6.2f}"
            paired = f"{statistics.median(a / b for a, b in zip(times[key], times[over])):7.2f}"
        print(f"{label:46s} {best[key]:8.3f} {1000 * best[key] / n:8.3f} {ratio:>6s} "
              f"{paired:>7s}")

    print(f"\n{'figure (minimum of ' + str(args.repeats) + ')':46s} {'seconds':>8s} "
          f"{'ms/step':>8s} {'ratio':>6s} {'paired':>7s}")
    row("bare loop (loader, forward, loss, backward, Adam)", "bare loop", None)
    row("  the same without the probes / bare loop", "bare loop, no probes", "bare loop")
    row("full train() / bare loop", "full", "bare loop")
    row("bare loop + plain evaluation after every epoch", "bare loop + evaluation", None)
    row("full train() / bare loop + evaluation", "full", "bare loop + evaluation")
    row("bare step (batches in memory)", "bare step", None)
    row("ERM update() / bare step", "ERM", "bare step")
    for algorithm in ALGORITHMS[1:]:
        row(f"{algorithm} update() / ERM update()", algorithm, "ERM")
    row("MER-DG heads alone / ERM update()", "heads", "ERM")
    phases = Phases()
    total = full_run(config, phases)
    print(f"\nbreakdown of one full run ({total:.3f} s; evaluations include their data loading)")
    nested = {"data loading (evaluation)"}
    covered = sum(s for k, s in phases.seconds.items() if k not in nested)
    for name, seconds in sorted(phases.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:52s} {seconds:8.3f} s {100 * seconds / total:6.1f} %")
    print(f"  {'setup and the rest':52s} {total - covered:8.3f} s "
          f"{100 * (total - covered) / total:6.1f} %")
    if args.shapes:
        shape_ratios(max(2, args.repeats // 2), args.utd_mhad)


if __name__ == "__main__":
    main()
