"""Paired differences and their confidence intervals on hand-checkable inputs."""

import math

import numpy as np
import pytest

from merdg.evaluation.statistics import (
    bootstrap_interval,
    describe_paired_differences,
    paired_difference,
    paired_difference_markdown,
    paired_differences,
    t_interval,
    t_quantile,
)


def test_t_quantile_matches_tables():
    # two-sided 95% critical values of Student's t (any statistics table)
    for df, value in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                      (10, 2.2281), (30, 2.0423)]:
        assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert t_quantile(0.025, 5) == pytest.approx(-t_quantile(0.975, 5))
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.995, 1000) == pytest.approx(2.5808, abs=1e-4)  # near the normal 2.5758


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 6, 11, 50, 201):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_t_interval_by_hand():
    d = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd sqrt(5/3), n 4
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t_{0.975, 3}
    assert t_interval(d) == pytest.approx((2.5 - half, 2.5 + half))
    assert all(math.isnan(v) for v in t_interval([1.0]))


def test_constant_differences_give_zero_width_intervals():
    assert t_interval([0.02] * 6) == pytest.approx((0.02, 0.02))
    assert bootstrap_interval([0.02] * 6) == pytest.approx((0.02, 0.02))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(3)
    d = rng.normal(0.01, 0.02, size=9)
    a, b = bootstrap_interval(d, seed=1), bootstrap_interval(d, seed=1)
    assert a == b
    assert a[0] < d.mean() < a[1]
    # with few pairs the percentile bootstrap is narrower than the t-interval
    t_low, t_high = t_interval(d)
    assert a[1] - a[0] < t_high - t_low


def test_paired_difference_matches_pairs_and_counts_the_rest():
    algo = {("d1", 0): 0.60, ("d1", 1): 0.62, ("d2", 0): 0.70, ("d2", 1): 0.71, ("d3", 0): 0.5}
    ref = {("d1", 0): 0.55, ("d1", 1): 0.57, ("d2", 0): 0.65, ("d2", 1): 0.66, ("d4", 0): 0.4}
    r = paired_difference(algo, ref, algorithm="MERDG", reference="ERM")
    assert r.n_pairs == 4 and r.only_algorithm == 1 and r.only_reference == 1
    assert r.mean == pytest.approx(0.05)
    assert r.t_low == pytest.approx(0.05) and r.t_high == pytest.approx(0.05)
    assert r.verdict() == "beyond noise" and r.verdict("bootstrap") == "beyond noise"
    noisy = paired_difference({1: 0.1, 2: -0.1, 3: 0.05}, {1: 0.0, 2: 0.0, 3: 0.0})
    assert noisy.verdict() == "within noise"
    assert paired_difference({1: 0.3}, {1: 0.1}).verdict() == "too few pairs"
    assert paired_difference({1: 0.3}, {2: 0.1}).verdict() == "no matched pairs"


def rows(algorithm, values, modalities="audio+video"):
    return [{"dataset": "hac", "modalities": modalities, "algorithm": algorithm, "target": t,
             "seed": s, "selection": "source_val", "target_acc": v, "path": f"{algorithm}/{t}/{s}"}
            for (t, s), v in values.items()]


def test_paired_differences_over_result_rows():
    erm = {("human", 0): 0.70, ("human", 1): 0.72, ("animal", 0): 0.60, ("animal", 1): 0.61}
    mer = {k: v + 0.03 for k, v in erm.items()}
    sim = {("human", 0): 0.71, ("human", 1): 0.71, ("animal", 0): 0.61, ("animal", 1): 0.60}
    all_rows = rows("ERM", erm) + rows("MERDG", mer) + rows("SimMMDG", sim)
    all_rows += [{**r, "selection": "oracle", "target_acc": 0.0} for r in rows("ERM", erm)]
    results = paired_differences(all_rows)
    assert [(r.algorithm, r.n_pairs) for r in results] == [("MERDG", 4), ("SimMMDG", 4)]
    assert results[0].mean == pytest.approx(0.03) and results[0].verdict() == "beyond noise"
    assert results[1].mean == pytest.approx(0.0) and results[1].verdict() == "within noise"
    table = paired_difference_markdown(results)
    assert "| hac audio+video | MERDG | ERM | 4 | +3.00 | [+3.00, +3.00] |" in table
    words = describe_paired_differences(results)
    assert "MERDG (hac audio+video): 3.00 points better than ERM" in words
    assert "beyond noise" in words and "within noise" in words
    with pytest.raises(ValueError, match=r"reference algorithm 'CMRF' .*'ERM', 'MERDG'"):
        paired_differences(all_rows, reference="CMRF")
    with pytest.raises(ValueError, match="two results for ERM on target human seed 0"):
        paired_differences(all_rows + rows("ERM", {("human", 0): 0.5}))


# --- independent expectations: pairing, and the bootstrap's 95% percentile interval ---------

T_975_3 = 3.182446305284263  # t_{0.975, 3}, any statistics table


def test_pairing_changes_the_interval_computed_by_hand():
    """Pairs whose order differs between the algorithms: sorted (unpaired) differences would
    have the same mean but a much smaller spread, hence another interval."""
    import statistics

    ref = {("a", 0): 0.50, ("a", 1): 0.52, ("b", 0): 0.54, ("b", 1): 0.56}
    gain = {("a", 0): 0.06, ("a", 1): 0.02, ("b", 0): 0.05, ("b", 1): 0.01}
    algo = {k: ref[k] + gain[k] for k in ref}
    d = [gain[k] for k in sorted(ref)]
    half = T_975_3 * statistics.stdev(d) / 2
    r = paired_difference(algo, ref)
    assert r.mean == pytest.approx(0.035)
    assert (r.t_low, r.t_high) == pytest.approx((0.035 - half, 0.035 + half), rel=1e-9)
    unpaired = [a - b for a, b in zip(sorted(algo.values()), sorted(ref.values()))]
    assert statistics.stdev(unpaired) < statistics.stdev(d) / 2  # the fixture discriminates
    # paired over the common keys only, whatever the insertion order of the maps
    shuffled = dict(reversed(list(algo.items())))
    assert paired_difference(shuffled, ref).t_low == pytest.approx(r.t_low, rel=1e-12)


def percentile(sorted_values, q):
    """Linear-interpolation percentile (numpy's default), written out."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def test_bootstrap_interval_is_the_95_percent_percentile_interval():
    d = np.random.default_rng(5).normal(0.01, 0.02, size=9)  # no ties among the means
    low, high = bootstrap_interval(d, seed=7)  # 10,000 resamples
    # the documented resampling: numpy default_rng(seed), indices with replacement
    rng = np.random.default_rng(7)
    means = sorted(d[rng.integers(0, len(d), size=(10_000, len(d)))].mean(axis=1))
    assert low == pytest.approx(percentile(means, 0.025), abs=1e-15)
    assert high == pytest.approx(percentile(means, 0.975), abs=1e-15)
    # a property that ignores how the resamples are drawn: 95% of bootstrap means fall inside
    own = np.random.default_rng(123).choice(d, size=(40_000, len(d))).mean(axis=1)
    assert np.mean((own >= low) & (own <= high)) == pytest.approx(0.95, abs=0.015)
    # and the level is a parameter: 80% is inside the 95% interval
    low80, high80 = bootstrap_interval(d, confidence=0.8, seed=7)
    assert low < low80 < high80 < high
    assert np.mean((own >= low80) & (own <= high80)) == pytest.approx(0.80, abs=0.015)


def test_paired_difference_intervals_use_the_requested_level():
    algo = {k: v for k, v in enumerate([0.61, 0.58, 0.66, 0.60, 0.63])}
    ref = {k: v for k, v in enumerate([0.60, 0.59, 0.62, 0.57, 0.60])}
    d = [algo[k] - ref[k] for k in range(5)]
    r95 = paired_difference(algo, ref)
    r80 = paired_difference(algo, ref, confidence=0.8)
    assert r95.confidence == 0.95 and r80.confidence == 0.8
    assert (r95.t_low, r95.t_high) == pytest.approx(t_interval(d, 0.95))
    assert r80.t_high - r80.t_low < r95.t_high - r95.t_low
    assert (r95.boot_low, r95.boot_high) == pytest.approx(bootstrap_interval(d))
    assert r95.interval("bootstrap") == (r95.boot_low, r95.boot_high)
    assert r95.interval() == (r95.t_low, r95.t_high)
    with pytest.raises(ValueError, match="unknown interval 'z'"):
        r95.interval("z")
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.5"):
        paired_difference(algo, ref, confidence=1.5)
