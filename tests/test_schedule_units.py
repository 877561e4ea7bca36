"""Unit tests of merdg.run.schedule (fast, in-process): the steps and evaluation points of a
schedule, written out by hand or by a plain loop, and the batches TrainingBatches hands out
from any step compared with the sampler's passes drawn directly."""

import pytest
import torch
from torch.utils.data import DataLoader

from merdg.datasets.samplers import BalancedDomainBatchSampler
from merdg.run.schedule import Schedule, TrainingBatches


def evaluation_points(total: int, every: int) -> list[int]:
    """A second implementation: every step after which the run evaluates, by a plain loop."""
    return [s for s in range(1, total + 1) if s % every == 0 or s == total]


@pytest.mark.parametrize("hparams, spe, total, every", [
    ({"epochs": 4}, 5, 20, 5),                                   # epochs x steps per epoch
    ({"epochs": 4, "steps": None, "eval_every": None}, 5, 20, 5),  # unset entries
    ({"epochs": 4, "steps": 0, "eval_every": 0}, 5, 20, 5),     # 0 means unset
    ({"epochs": 4, "steps": 13}, 5, 13, 5),                      # the budget replaces epochs
    ({"epochs": 4, "steps": 13, "eval_every": 3}, 5, 13, 3),
    ({"epochs": "2", "eval_every": "4"}, 3, 6, 4),               # read as integers
])
def test_schedule_of_hparams(hparams, spe, total, every):
    schedule = Schedule.of(hparams, spe)
    assert schedule == Schedule(spe, total, every)
    assert isinstance(schedule.total_steps, int) and isinstance(schedule.eval_every, int)


@pytest.mark.parametrize("spe, total, every", [
    (5, 20, 5), (5, 13, 5), (5, 13, 3), (3, 6, 4), (10, 25, 7), (4, 4, 4), (4, 3, 10),
    (1, 1, 1), (7, 21, 1), (6, 18, 9), (6, 19, 9)])
def test_evaluation_steps_epochs_and_positions_against_a_loop(spe, total, every):
    schedule = Schedule(spe, total, every)
    assert schedule.evaluation_steps() == evaluation_points(total, every)
    assert schedule.epochs == len({(s - 1) // spe for s in range(1, total + 1)})  # passes begun
    for step in range(total + spe):
        assert schedule.position(step) == (step // spe, step - spe * (step // spe))


def test_descriptions_written_out():
    assert Schedule(10, 30, 10).describe() == (
        "30 steps (3 epochs of 10), evaluated after every epoch (3 records)")
    assert Schedule(10, 25, 7).describe() == (
        "25 steps (2.5 epochs of 10), evaluated every 7 steps (4 records)")
    assert Schedule(4, 3, 10).describe() == (
        "3 steps (0.75 epochs of 4), evaluated every 10 steps (1 record)")
    assert Schedule(10, 10, 10).describe() == (
        "10 steps (1 epoch of 10), evaluated after every epoch (1 record)")
    assert Schedule(10, 1, 1).describe() == (
        "1 step (0.1 epochs of 10), evaluated after every step (1 record)")
    assert Schedule(3, 10, 3).describe() == (
        "10 steps (3.33333 epochs of 3), evaluated after every epoch (4 records)")


# --- TrainingBatches ------------------------------------------------------------------------

SIZES = [9, 7]  # two domains; batches of 4 take 2 of each:
BATCH = 4       # passes of min(9 // 2, 7 // 2) = 3 batches


def loader_and_sampler(seed: int = 5):
    sampler = BalancedDomainBatchSampler(SIZES, BATCH, seed=seed)
    return DataLoader(list(range(sum(SIZES))), batch_sampler=sampler), sampler


def passes(n: int, seed: int = 5) -> list[list[int]]:
    """The batches of ``n`` passes drawn from the sampler itself, pass p with set_epoch(p)."""
    sampler = BalancedDomainBatchSampler(SIZES, BATCH, seed=seed)
    out = []
    for epoch in range(n):
        sampler.set_epoch(epoch)
        out.extend(list(sampler))
    return out


def test_batches_run_pass_after_pass_reshuffled_by_epoch():
    loader, sampler = loader_and_sampler()
    batches = TrainingBatches(loader, sampler, len(sampler))
    got = [batches.next().tolist() for _ in range(10)]  # 3 passes and a bit
    assert got == passes(4)[:10]
    assert batches.epoch == 3 and sampler.epoch == 3
    assert len({tuple(b) for b in got[:3]} & {tuple(b) for b in got[3:6]}) < 3  # reshuffled


@pytest.mark.parametrize("step", [0, 1, 2, 3, 4, 5, 7])
def test_a_run_started_at_any_step_draws_the_batches_of_an_uninterrupted_one(step):
    loader, sampler = loader_and_sampler()
    batches = TrainingBatches(loader, sampler, len(sampler))
    batches.start_at(step)
    assert batches.epoch == step // 3
    got = [batches.next().tolist() for _ in range(8)]
    assert got == passes(6)[step:step + 8]


def test_restore_is_called_when_the_random_state_is_that_of_the_step():
    """At a pass boundary the random state is restored before the next pass's iterator draws
    its base seed (as a plain ``for batch in loader`` would); in the middle of a pass, after
    the iterator of the pass is created."""
    seen = []
    loader, sampler = loader_and_sampler()
    batches = TrainingBatches(loader, sampler, len(sampler))

    def restore():
        seen.append(batches.iterator is None)
        torch.manual_seed(123)

    batches.start_at(6, restore)  # a boundary: restored, the iterator comes with next()
    assert seen == [True] and batches.iterator is None and batches.epoch == 2
    batches.next()
    after_boundary = torch.rand(3)
    torch.manual_seed(123)
    iter(loader)  # what a plain loop does at a pass's first batch
    assert torch.equal(after_boundary, torch.rand(3))

    batches.start_at(4, restore)  # the middle of the 2nd pass
    assert seen == [True, False] and batches.iterator is not None and batches.epoch == 1
    in_middle = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(in_middle, torch.rand(3))  # nothing drawn after the restore
    assert sampler.start == 1 and sampler.epoch == 1


def test_start_at_without_restore_and_a_fresh_pass_after_a_partial_one():
    loader, sampler = loader_and_sampler()
    batches = TrainingBatches(loader, sampler, len(sampler))
    batches.start_at(5)
    assert batches.next().tolist() == passes(2)[5]
    assert batches.next().tolist() == passes(3)[6]  # the next pass starts at its first batch
    assert sampler.start == 0 and sampler.epoch == 2


class _Sampler:
    def __init__(self):
        self.epochs = []

    def set_epoch(self, epoch, start=0):
        self.epochs.append((epoch, start))


def test_a_loader_without_batches_is_one_line_naming_the_epoch():
    sampler = _Sampler()
    batches = TrainingBatches([], sampler, 4)
    with pytest.raises(RuntimeError, match=r"^the training loader yields no batch in epoch 1$"):
        batches.next()
    batches.start_at(8)
    with pytest.raises(RuntimeError, match=r"^the training loader yields no batch in epoch 3$"):
        batches.next()
    assert sampler.epochs == [(0, 0), (2, 0)]


def test_a_pass_that_ends_moves_to_the_next_epoch_once():
    sampler = _Sampler()
    batches = TrainingBatches(["a", "b"], sampler, 2)
    assert [batches.next() for _ in range(5)] == ["a", "b", "a", "b", "a"]
    assert sampler.epochs == [(0, 0), (1, 0), (2, 0)] and batches.epoch == 2
