"""Dataset interface, in-memory samples, the balanced sampler and the synthetic benchmark."""

import numpy as np
import pytest
import torch

from merdg.datasets import DATASETS, BalancedDomainBatchSampler, TensorSamples, build_dataset
from merdg.datasets.base import DomainConcat, collate, holdout_indices


def test_balanced_sampler_counts_and_epochs():
    sizes = [10, 7, 30]
    sampler = BalancedDomainBatchSampler(sizes, batch_size=7, seed=0)
    assert sampler.per_domain == [3, 2, 2] and len(sampler) == 3  # min(10//3, 7//2, 30//2)
    batches = list(sampler)
    offsets = [0, 10, 17, 47]
    for b in batches:
        counts = [sum(offsets[d] <= i < offsets[d + 1] for i in b) for d in range(3)]
        assert counts == [3, 2, 2]
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))  # no repeats within an epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches
    sampler.set_epoch(0)
    assert list(sampler) == batches


def test_balanced_sampler_ranks_partition_the_global_batch():
    single = list(BalancedDomainBatchSampler([12, 12], 8, seed=3))
    ranks = [list(BalancedDomainBatchSampler([12, 12], 8, seed=3, rank=r, world_size=2))
             for r in range(2)]
    for step, batch in enumerate(single):
        parts = [ranks[0][step], ranks[1][step]]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(batch)


def test_balanced_sampler_errors():
    with pytest.raises(ValueError, match="fewer training samples"):
        BalancedDomainBatchSampler([2, 50], 8, seed=0)
    with pytest.raises(ValueError, match="smaller than"):
        BalancedDomainBatchSampler([5, 5, 5], 2, seed=0)


def test_holdout_is_seeded_and_disjoint():
    train, val = holdout_indices(50, 0.2, seed=1, domain="d0")
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 50
    assert (train, val) == holdout_indices(50, 0.2, seed=1, domain="d0")
    assert val != holdout_indices(50, 0.2, seed=2, domain="d0")[1]
    with pytest.raises(ValueError):
        holdout_indices(5, 1.0, 0, "d")


def test_domain_concat_batched_equals_collated():
    parts = [TensorSamples({"a": torch.randn(5, 3)}, torch.arange(5) % 2),
             TensorSamples({"a": torch.randn(4, 3)}, torch.arange(4) % 2)]
    data = DomainConcat(parts)
    idx = [8, 0, 5, 3]
    fast = collate(data.__getitems__(idx))
    slow = collate([data[i] for i in idx])
    assert torch.equal(fast.x["a"], slow.x["a"]) and torch.equal(fast.y, slow.y)
    assert fast.domain.tolist() == [1, 0, 1, 0]
    with pytest.raises(IndexError):
        data[9]
    with pytest.raises(ValueError, match="differ"):
        TensorSamples({"a": torch.randn(3, 2)}, torch.zeros(4))


def test_synthetic_is_deterministic_and_selects_modalities():
    a = build_dataset("synthetic", samples_per_domain=30)
    b = build_dataset("synthetic", samples_per_domain=30)
    assert torch.equal(a.domain_samples("d1").x["m2"], b.domain_samples("d1").x["m2"])
    sub = build_dataset("synthetic", modalities=["m2", "m0"], samples_per_domain=30)
    assert sub.modalities == ["m0", "m2"]
    assert torch.equal(sub.domain_samples("d1").x["m2"], a.domain_samples("d1").x["m2"])
    with pytest.raises(ValueError, match="unknown modalities"):
        build_dataset("synthetic", modalities=["rgb"])
    with pytest.raises(ValueError, match="unknown domains"):
        a.check_domains(["d9"])
    assert "synthetic" in DATASETS


def _nuisance_code_accuracy(rho: float) -> tuple[float, float]:
    """In-domain vs cross-domain accuracy of a least-squares readout of all modalities'
    concatenation, trained on domain d0 (where the shortcut is fully available)."""
    ds = build_dataset("synthetic", shortcut_strength=rho, signal_noise=100.0,
                       samples_per_domain=1200)

    def features(d):
        s = ds.domain_samples(d)
        return torch.cat([s.x[m] for m in ds.modalities], 1).double().numpy(), s.y.numpy()

    x, y = features("d0")
    onehot = np.eye(ds.num_classes)[y]
    w = np.linalg.lstsq(np.c_[x[:600], np.ones(600)], onehot[:600], rcond=None)[0]
    held = (np.c_[x[600:], np.ones(600)] @ w).argmax(1) == y[600:]
    xt, yt = features("d1")
    other = (np.c_[xt, np.ones(len(xt))] @ w).argmax(1) == yt
    return held.mean(), other.mean()


def test_shortcut_predicts_in_domain_only():
    # the invariant signal is drowned (signal_noise=100): only the shared code can predict y
    in_domain, cross_domain = _nuisance_code_accuracy(0.9)
    assert in_domain > 0.6 and cross_domain < 0.35
    in_domain0, _ = _nuisance_code_accuracy(0.0)
    assert in_domain0 < 0.3  # no shortcut: chance is 1/6
