"""The source-validation holdout: the train and val parts of a domain never share a sample, and
together they are the domain (checked on the samples themselves, not on index lists)."""

import pytest
import torch

from merdg.datasets import build_dataset
from merdg.datasets.base import holdout_indices
from merdg.hparams import seed_hash


def rows(part):
    """Each sample of a part as a hashable (features of every modality, label)."""
    out = []
    for i in range(len(part)):
        x, y = part[i][:2]
        out.append((tuple(torch.cat([x[m].flatten() for m in sorted(x)]).tolist()), int(y)))
    return out


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_val_and_train_parts_are_disjoint_and_cover_the_domain(fraction):
    ds = build_dataset("synthetic", samples_per_domain=40, n_classes=3)
    whole = rows(ds.split("d1", "test", seed=0, holdout_fraction=fraction))
    assert len(set(whole)) == len(whole) == 40  # distinct samples: equal rows mean the same one
    for seed in (0, 1):
        train = rows(ds.split("d1", "train", seed, fraction))
        val = rows(ds.split("d1", "val", seed, fraction))
        assert len(val) == round(fraction * 40) and len(train) == 40 - len(val)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(whole)
    other = rows(ds.split("d1", "val", 1, fraction))
    assert set(other) != set(rows(ds.split("d1", "val", 0, fraction)))  # seeded by the seed
    with pytest.raises(ValueError, match=r"^role must be one of \('train', 'val', 'test'\), "
                       r"got 'valid'$"):
        ds.split("d1", "valid", 0, fraction)


def test_no_holdout_keeps_every_sample_for_training():
    ds = build_dataset("synthetic", samples_per_domain=12, n_classes=3)
    assert len(ds.split("d2", "train", 0, 0.0)) == 12 and len(ds.split("d2", "val", 0, 0.0)) == 0


@pytest.mark.parametrize("n, fraction, n_val", [(10, 0.25, 2), (10, 0.35, 4), (3, 0.5, 2),
                                                (1, 0.4, 0), (0, 0.5, 0), (7, 0.0, 0)])
def test_holdout_sizes_round_half_to_even(n, fraction, n_val):
    train, val = holdout_indices(n, fraction, 0, "d")
    assert len(val) == n_val and sorted(train + val) == list(range(n))
    assert train == sorted(train) and val == sorted(val)


def test_holdout_depends_on_the_domain_and_refuses_bad_fractions():
    assert holdout_indices(40, 0.3, 0, "d0") != holdout_indices(40, 0.3, 0, "d1")
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"^holdout fraction must be in \[0, 1\), got "
                           rf"{bad}$"):
            holdout_indices(10, bad, 0, "d")


def reference_grouped_holdout(groups, fraction, seed, domain):
    """The documented rule, written out: groups in order of first appearance, permuted by the
    seeded generator, taken into val while val is short of round(fraction * n), the last one
    kept only if that lands at least as close; the first is always taken, one always stays."""
    g = torch.Generator().manual_seed(seed_hash("holdout", seed, domain))
    names = list(dict.fromkeys(groups))
    order = [names[k] for k in torch.randperm(len(names), generator=g).tolist()]
    target, size, held = round(fraction * len(groups)), 0, []
    for name in order[:-1]:
        if size >= target:
            break
        after = size + groups.count(name)
        if held and abs(after - target) > abs(size - target):
            break
        held.append(name)
        size = after
    val = [i for i, name in enumerate(groups) if name in held]
    return [i for i in range(len(groups)) if i not in val], val


def test_grouped_holdout_takes_whole_groups_closest_to_the_target():
    groups = [f"g{k}" for k in range(1, 7) for _ in range(k)]  # sizes 1..6, 21 items
    for seed in range(20):
        for fraction in (0.1, 0.3, 0.6, 0.9):
            train, val = holdout_indices(len(groups), fraction, seed, "d", groups)
            assert (train, val) == reference_grouped_holdout(groups, fraction, seed, "d")
            val_groups, train_groups = {groups[i] for i in val}, {groups[i] for i in train}
            assert val_groups and train_groups and not val_groups & train_groups
    # a group count of one is enough when nothing is held out
    assert holdout_indices(4, 0.0, 0, "d", ["a"] * 4) == ([0, 1, 2, 3], [])
    with pytest.raises(ValueError, match=r"^domain 'd' has 1 group\(s\) \(\['a'\]\); a holdout "
                       r"of 0.5 needs at least two groups, "):
        holdout_indices(4, 0.5, 0, "d", ["a"] * 4)
    with pytest.raises(ValueError, match=r"^domain 'd': 3 group names for 4 samples$"):
        holdout_indices(4, 0.5, 0, "d", ["a", "b", "c"])
