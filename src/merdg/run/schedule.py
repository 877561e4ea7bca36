"""When a run takes its steps and evaluates: epochs or a step budget, evaluation every K steps.

A run takes :attr:`Schedule.total_steps` optimizer steps: the ``steps`` hparam when it is set
(a step budget, as DomainBed's ``--steps`` and MMDG-Bench's iterations), else ``epochs`` times
the steps of one epoch (one pass of the balanced sampler, :mod:`merdg.datasets.samplers`). It
evaluates after every ``eval_every`` steps (after every epoch when 0) and after its last step;
each evaluation is one record of ``records.jsonl``, numbered from 1 in the record's ``"epoch"``
(the epoch itself under the default schedule), with the steps taken so far in ``"steps"``. The
selection rules pick among these records.

:class:`TrainingBatches` hands out the batches of the schedule from any step on: pass after
pass of the sampler, each reshuffled from ``(seed, pass)``, so a run resumed at step ``s``
draws the same batches as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from merdg.datasets import BalancedDomainBatchSampler
from merdg.datasets.base import Batch
from merdg.words import count

__all__ = ["Schedule", "TrainingBatches"]


@dataclass(frozen=True)
class Schedule:
    """The steps of a run and the steps after which it evaluates.

    Attributes:
        steps_per_epoch: Batches of one pass of the sampler.
        total_steps: Optimizer steps of the run.
        eval_every: Steps between evaluations.
        epochs: Passes the run starts (the last one may end early with a step budget).
    """

    steps_per_epoch: int
    total_steps: int
    eval_every: int

    @classmethod
    def of(cls, hparams: Mapping[str, Any], steps_per_epoch: int) -> Schedule:
        """The schedule of resolved ``hparams`` (``epochs``; ``steps`` and ``eval_every`` when
        the run sets them)."""
        total = int(hparams.get("steps") or 0) or int(hparams["epochs"]) * steps_per_epoch
        every = int(hparams.get("eval_every") or 0) or steps_per_epoch
        return cls(steps_per_epoch, total, every)

    @property
    def epochs(self) -> int:
        return -(-self.total_steps // self.steps_per_epoch)

    def evaluation_steps(self) -> list[int]:
        """The step counts after which the run evaluates (the last is ``total_steps``)."""
        points = list(range(self.eval_every, self.total_steps, self.eval_every))
        return [*points, self.total_steps]

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch)`` (0-based) of the step that follows ``step`` steps."""
        return divmod(step, self.steps_per_epoch)

    def describe(self) -> str:
        """One line for the log, e.g. ``450 steps (15 epochs of 30), evaluated after every
        epoch (15 records)``."""
        evaluations = len(self.evaluation_steps())
        when = ("after every epoch" if self.eval_every == self.steps_per_epoch
                else "after every step" if self.eval_every == 1
                else f"every {self.eval_every} steps")
        epochs = self.total_steps / self.steps_per_epoch
        return (f"{count(self.total_steps, 'step')} ({epochs:g} "
                f"{'epoch' if epochs == 1 else 'epochs'} of {self.steps_per_epoch}), evaluated "
                f"{when} ({count(evaluations, 'record')})")


class TrainingBatches:
    """The training batches of a schedule, in order, from any step on.

    Every pass creates the loader's iterator at its first batch (which draws the loader's base
    seed from the global random state, as a plain ``for batch in loader`` does), so runs that
    evaluate after every epoch draw the same random numbers as a plain loop.

    Args:
        loader: The training loader; its batch sampler is ``sampler``.
        sampler: The balanced sampler (reshuffled from ``(seed, epoch)``).
        steps_per_epoch: Batches of one pass.
    """

    def __init__(self, loader: DataLoader, sampler: BalancedDomainBatchSampler,
                 steps_per_epoch: int) -> None:
        self.loader, self.sampler, self.steps_per_epoch = loader, sampler, steps_per_epoch
        self.epoch = 0
        self.iterator: Iterator[Batch] | None = None

    def start_at(self, step: int, restore: Callable[[], None] | None = None) -> None:
        """Continue after ``step`` steps; ``restore`` (the random state of a resumed run) is
        called when the random state is that of the moment ``step`` was reached: before the
        next pass's iterator is created, or after the iterator of a pass left in the middle
        (its creation drew from the random state long before)."""
        epoch, batch = divmod(step, self.steps_per_epoch)
        self.epoch = epoch
        if batch == 0:
            if restore is not None:
                restore()
            self.iterator = None  # created with the pass's first batch
            return
        self.sampler.set_epoch(epoch, start=batch)
        self.iterator = iter(self.loader)
        if restore is not None:
            restore()

    def next(self) -> Batch:
        """The next batch (a new pass after the last batch of one)."""
        if self.iterator is not None:
            batch = next(self.iterator, None)
            if batch is not None:
                return batch
            self.epoch += 1
        self.sampler.set_epoch(self.epoch)
        self.iterator = iter(self.loader)
        batch = next(self.iterator, None)
        if batch is None:
            raise RuntimeError(f"the training loader yields no batch in epoch {self.epoch + 1}")
        return batch
