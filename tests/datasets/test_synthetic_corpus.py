"""The synthetic benchmark stays as it was; its external pretraining corpus (other domains of
the same generative model, without the shortcut) is what it claims to be."""

import numpy as np
import pytest
import torch

from merdg.datasets import DATASETS, build_dataset

# Fingerprint of the default benchmark, computed before the corpus was added (sha256 of every
# tensor's bytes: fbd125a6320c6fc01eb84495dbae78c0f20ec431e7efe94dbb052fdf2cb6b789 on the
# development machine). Sums, not bytes, so that a BLAS with another rounding still passes:
# any change of the random draws moves them by far more than the tolerance.
DEFAULT_FINGERPRINT = {
    "d0": ([-3623.375524, 705.392928, -3983.074168], [41771.6105, 47269.123, 31884.2838],
           [-2.6429128646850586, -2.336639642715454, -1.4722211360931396]),
    "d1": ([-1878.986827, -1894.196921, -1029.763087], [40161.1074, 39129.5272, 34493.2025],
           [-1.2254395484924316, 1.1932376623153687, -0.3204009234905243]),
    "d2": ([-4066.849371, 472.053445, 2001.971254], [35386.623, 38843.7962, 39287.2067],
           [-0.8814435005187988, 0.28432008624076843, -0.7776872515678406]),
    "d3": ([1913.399369, -3293.741288, -344.237162], [37542.8552, 38841.2738, 38003.2044],
           [-0.41632556915283203, -0.06203586980700493, -0.002761376090347767]),
}


def test_default_benchmark_is_unchanged():
    ds = build_dataset("synthetic")
    assert ds.domains == list(DEFAULT_FINGERPRINT) and ds.modalities == ["m0", "m1", "m2"]
    for d, (sums, squares, first) in DEFAULT_FINGERPRINT.items():
        s = ds.domain_samples(d)
        assert s.y.tolist() == [i % 6 for i in range(600)]
        got = [float(s.x[m].double().sum()) for m in ds.modalities]
        assert got == pytest.approx(sums, rel=1e-5, abs=1e-2)
        got = [float(s.x[m].double().square().sum()) for m in ds.modalities]
        assert got == pytest.approx(squares, rel=1e-6)
        assert s.x["m0"][0, :3].tolist() == pytest.approx(first, rel=1e-5)


def test_corpus_shares_the_generative_model_and_draws_its_own_domains():
    bench = build_dataset("synthetic", samples_per_domain=12)
    corpus = build_dataset("synthetic-pretrain", corpus_domains=3, samples_per_domain=30)
    assert "synthetic-pretrain" in DATASETS
    assert corpus.domains == ["p0", "p1", "p2"] and not set(corpus.domains) & set(bench.domains)
    assert corpus.modalities == bench.modalities and corpus.num_classes == bench.num_classes
    assert all(corpus.input_shape(m) == bench.input_shape(m) for m in bench.modalities)
    assert corpus.encoder_spec("m0") == bench.encoder_spec("m0")
    for name in ("mu", "B", "Q"):  # what makes the encoders transfer
        assert all(np.array_equal(corpus.params[name][m], bench.params[name][m])
                   for m in bench.modalities), name
    for p in corpus.domains:  # domain parameters of their own
        assert all(not np.allclose(corpus.params["W"][p], bench.params["W"][d])
                   for d in bench.domains)
        assert all(not np.allclose(corpus.params["o"][(p, "m0")], bench.params["o"][(d, "m0")])
                   for d in bench.domains)
    again = build_dataset("synthetic-pretrain", corpus_domains=3, samples_per_domain=30)
    assert torch.equal(again.domain_samples("p2").x["m1"], corpus.domain_samples("p2").x["m1"])
    other = build_dataset("synthetic-pretrain", corpus_domains=3, samples_per_domain=30,
                          corpus_seed=1)
    assert not torch.equal(other.domain_samples("p0").x["m1"],
                           corpus.domain_samples("p0").x["m1"])
    with pytest.raises(ValueError, match="unknown domains"):
        corpus.check_domains(["d0"])
    with pytest.raises(ValueError, match="corpus_domains"):
        build_dataset("synthetic-pretrain", corpus_domains=0)


def features(ds, domain, modalities=None):
    s = ds.domain_samples(domain)
    x = torch.cat([s.x[m] for m in modalities or ds.modalities], 1).double().numpy()
    return x, s.y.numpy()


def readout(x, y, classes):
    """Least-squares linear readout (one-hot targets, bias)."""
    w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], np.eye(classes)[y], rcond=None)[0]
    return lambda x2, y2: float(((np.c_[x2, np.ones(len(x2))] @ w).argmax(1) == y2).mean())


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_corpus_shortcut_is_absent_or_unrelated(rho):
    # the statistic of tests/test_datasets.py: with the invariant signal drowned
    # (signal_noise=100) only the shared code can predict the label
    options = {"signal_noise": 100.0, "samples_per_domain": 1200}
    corpus = build_dataset("synthetic-pretrain", corpus_domains=2, shortcut_strength=rho,
                           **options)
    bench = build_dataset("synthetic", **options)
    x, y = features(corpus, "p0")
    score = readout(x[:600], y[:600], 6)
    in_domain = score(x[600:], y[600:])
    if rho == 0.0:
        assert in_domain < 0.25  # chance is 1/6: no shortcut (the default corpus)
    else:  # a shortcut inside each corpus domain, mapped unlike any other domain's
        assert in_domain > 0.6
        assert score(*features(corpus, "p1")) < 0.3
        assert score(*features(bench, "d0")) < 0.3


def test_corpus_carries_the_invariant_signal_of_the_benchmark():
    corpus = build_dataset("synthetic-pretrain", corpus_domains=4, samples_per_domain=600)
    bench = build_dataset("synthetic", samples_per_domain=600)
    x = np.concatenate([features(corpus, p, ["m0"])[0] for p in corpus.domains])
    y = np.concatenate([features(corpus, p, ["m0"])[1] for p in corpus.domains])
    from_corpus = readout(x, y, 6)
    from_d0 = readout(*features(bench, "d0", ["m0"]), 6)
    for d in ("d1", "d2", "d3"):  # unseen benchmark domains
        assert from_corpus(*features(bench, d, ["m0"])) > 0.45  # chance 1/6
        assert from_corpus(*features(bench, d, ["m0"])) > from_d0(*features(bench, d, ["m0"]))
