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


# --- the comparison's plumbing: rows, pairs, parameters, and its two text forms -------------

def test_pairs_with_replicate_labels_and_rows_without_the_metric():
    erm = rows("ERM", {("human", 0): 0.70, ("human", "search"): 0.72, ("animal", 1): 0.60})
    mer = rows("MERDG", {("human", 0): 0.75, ("human", "search"): 0.74, ("animal", 1): 0.61})
    mer.append({**mer[0], "seed": 5, "target_acc": None})  # no value: left out, not an error
    mer.append({k: v for k, v in mer[0].items() if k != "target_acc"} | {"seed": 6})
    mer.append({**mer[0], "seed": 7, "modalities": None} | {"dataset": "hac"})
    [r] = [r for r in paired_differences(erm + mer[:-1]) if r.group == ("hac", "audio+video")]
    assert r.n_pairs == 3 and r.only_algorithm == 0 and r.only_reference == 0
    assert r.mean == pytest.approx((0.05 + 0.02 + 0.01) / 3)
    assert (r.algorithm, r.reference, r.metric) == ("MERDG", "ERM", "target_acc")
    # numpy integer seeds (a table read back) pair with plain ones
    as_numpy = [{**row, "seed": np.int64(row["seed"])} if row["seed"] != "search" else row
                for row in erm]
    assert paired_differences(as_numpy + mer[:3])[0].n_pairs == 3
    # a missing group key is an empty group name
    no_group = [{k: v for k, v in row.items() if k != "modalities"} for row in erm + mer[:3]]
    assert paired_differences(no_group)[0].group == ("hac", "")
    every = paired_differences(erm + mer[:3], selection=None)
    assert every[0].n_pairs == 3


def test_a_duplicate_pair_names_both_paths():
    erm = rows("ERM", {("human", 0): 0.7})
    dup = [{**erm[0], "path": "elsewhere"}]
    with pytest.raises(ValueError, match=r"^two results for ERM on target human seed 0 "
                       r"\(hac, audio\+video\): ERM/human/0 and elsewhere; keep one run per "
                       r"\(target, seed\)$"):
        paired_differences(erm + dup)
    nameless = [{k: v for k, v in erm[0].items() if k != "path"}] * 2
    with pytest.raises(ValueError, match=r": \? and \?; keep one run"):
        paired_differences(nameless)


def test_parameters_reach_every_comparison():
    erm = {(t, s): 0.5 + 0.01 * s for t in ("a", "b") for s in range(3)}
    gains = [0.021, 0.034, 0.017, 0.046, 0.012, 0.029]  # distinct: the bootstrap sees the seed
    mer = {k: v + g for (k, v), g in zip(erm.items(), gains)}
    table = rows("ERM", erm) + rows("MERDG", mer)
    [r] = paired_differences(table, confidence=0.8, resamples=50, seed=3)
    d = [mer[k] - erm[k] for k in sorted(erm, key=repr)]
    assert r.confidence == 0.8 and r.metric == "target_acc"
    assert (r.boot_low, r.boot_high) == pytest.approx(bootstrap_interval(d, 0.8, 50, 3))
    assert (r.t_low, r.t_high) == pytest.approx(t_interval(d, 0.8))
    [default] = paired_differences(table)
    assert (default.boot_low, default.boot_high) == pytest.approx(bootstrap_interval(d))
    plain = paired_difference({1: 0.2, 2: 0.3}, {1: 0.1, 2: 0.1})
    assert (plain.algorithm, plain.reference, plain.metric, plain.group) == ("", "", "", ())
    assert (plain.boot_low, plain.boot_high) == pytest.approx(
        bootstrap_interval([0.1, 0.2], seed=0))
    mixed = paired_difference({("a", 0): 0.2, ("a", "search"): 0.3},
                              {("a", 0): 0.1, ("a", "search"): 0.1})
    assert mixed.n_pairs == 2  # replicate labels and integer seeds sort together
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"^confidence must be in \(0, 1\), got {bad}$"):
            paired_difference({1: 0.2}, {1: 0.1}, confidence=bad)


def test_two_differences_are_enough_and_the_input_is_checked():
    assert not any(math.isnan(v) for v in t_interval([0.1, 0.3]))
    assert not any(math.isnan(v) for v in bootstrap_interval([0.1, 0.3]))
    assert bootstrap_interval([0.1, 0.3], resamples=1) == pytest.approx(
        bootstrap_interval([0.1, 0.3], resamples=1))
    with pytest.raises(ValueError, match=r"^resamples must be >= 1, got 0$"):
        bootstrap_interval([0.1, 0.3], resamples=0)
    with pytest.raises(ValueError, match=r"^2 differences are not finite$"):
        t_interval([0.1, math.nan, math.inf])
    assert t_interval(np.array([[0.1], [0.3]])) == pytest.approx(t_interval([0.1, 0.3]))


def comparison_results():
    one = paired_difference({("a", 0): 0.62, ("a", 1): 0.60, ("b", 0): 0.71, ("c", 0): 0.5},
                            {("a", 0): 0.60, ("a", 1): 0.59, ("b", 0): 0.68},
                            algorithm="MERDG", reference="ERM", metric="target_acc",
                            group=("hac", "audio+video"), resamples=100)
    worse = paired_difference({1: 0.50, 2: 0.52}, {1: 0.55, 2: 0.56}, algorithm="CMC",
                              reference="ERM", metric="target_acc", resamples=100)
    lonely = paired_difference({1: 0.5}, {2: 0.5}, algorithm="NEL", reference="ERM",
                               metric="target_acc", group=("hac",))
    return [one, worse, lonely]


def test_markdown_table_by_hand():
    one, worse, lonely = comparison_results()

    def pct(v):
        return f"{100 * v:+.2f}"

    expected = [
        "| group | algorithm | reference | pairs | mean difference | 95% CI (t) | "
        "95% CI (bootstrap) | verdict |",
        "|---|---|---|---|---|---|---|---|",
        f"| hac audio+video | MERDG | ERM | 3 (1 unmatched) | {pct(0.02)} | "
        f"[{pct(one.t_low)}, {pct(one.t_high)}] | [{pct(one.boot_low)}, {pct(one.boot_high)}] | "
        f"{one.verdict()} |",
        f"|  | CMC | ERM | 2 | {pct(-0.045)} | [{pct(worse.t_low)}, {pct(worse.t_high)}] | "
        f"[{pct(worse.boot_low)}, {pct(worse.boot_high)}] | {worse.verdict()} |",
        "| hac | NEL | ERM | 0 (2 unmatched) | - | [-, -] | [-, -] | no matched pairs |",
    ]
    assert paired_difference_markdown([one, worse, lonely]) == "\n".join(expected) + "\n"
    assert paired_difference_markdown([]) == ""
    assert "| 3 (1 unmatched) | +2.00 |" in paired_difference_markdown([one], scale=100.0)
    assert "| 3 (1 unmatched) | +0.02 |" in paired_difference_markdown([one], scale=1.0)


def test_the_comparison_in_words_by_hand():
    one, worse, lonely = comparison_results()
    equal = paired_difference({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6}, algorithm="RNANet",
                              reference="ERM", metric="target_acc")
    text = describe_paired_differences([one, worse, lonely, equal], what="target accuracy")
    lines = text.splitlines()
    assert lines[0] == ("Paired differences in target accuracy against ERM over matched "
                        "(target, seed) pairs; a difference is beyond noise when its 95% paired "
                        "t-interval excludes 0.")
    assert lines[1] == (f"- MERDG (hac audio+video): 2.00 points better than ERM on average over "
                        f"3 pairs, CI [{100 * one.t_low:+.2f}, {100 * one.t_high:+.2f}]: "
                        f"{one.verdict()}.")
    assert lines[2] == ("  (1 pairs of MERDG and 0 of ERM have no counterpart and are left "
                        "out.)")
    assert lines[3].startswith("- CMC: 4.50 points worse than ERM on average over 2 pairs, CI [")
    assert lines[4] == "- NEL (hac): not compared, no matched pairs with ERM (0)."
    assert lines[5] == "  (1 pairs of NEL and 1 of ERM have no counterpart and are left out.)" \
        or lines[5].startswith("- RNANet")
    assert lines[-1].startswith("- RNANet: 0.00 points equal than ERM on average over 2 pairs")
    assert text.endswith(".\n") and not text.endswith("\n\n")
    too_few = paired_difference({1: 0.5}, {1: 0.4}, algorithm="A", reference="ERM",
                                metric="acc")
    assert describe_paired_differences([too_few]).splitlines()[1] == (
        "- A: not compared, too few pairs with ERM (1).")
    assert describe_paired_differences([too_few]).splitlines()[0].startswith(
        "Paired differences in acc against ERM")
    words = describe_paired_differences([one], scale=1.0, unit="units", pairs="(seed)")
    assert "over matched (seed) pairs" in words and "0.02 units better" in words
    assert describe_paired_differences([]) == "No algorithm to compare with the reference."


def test_t_quantile_domain_and_exact_errors():
    for p in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=rf"^probability must be in \(0, 1\), got {p}$"):
            t_quantile(p, 3)
    for df in (0, -1, 2.5):
        with pytest.raises(ValueError, match=rf"^degrees of freedom must be an integer >= 1, got "
                           rf"{df}$"):
            t_quantile(0.9, df)
    assert t_quantile(0.975, 3.0) == pytest.approx(T_975_3, abs=1e-9)  # an integral float
    # far tails: the upper bracket doubles until it holds the quantile
    assert t_quantile(0.9995, 1) == pytest.approx(636.6192, rel=1e-6)
    assert t_quantile(0.0005, 1) == pytest.approx(-636.6192, rel=1e-6)


def test_an_interval_touching_zero_is_within_noise_and_as_dict_adds_the_verdict():
    zero = paired_difference({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.6})
    assert (zero.t_low, zero.t_high) == (0.0, 0.0)
    assert zero.verdict() == "within noise" and zero.verdict("bootstrap") == "within noise"
    worse = paired_difference({1: 0.4, 2: 0.5}, {1: 0.5, 2: 0.6})
    assert worse.verdict() == "beyond noise"  # (-0.1, -0.1) excludes 0
    row = zero.as_dict()
    assert row["verdict"] == "within noise" and row["n_pairs"] == 2 and row["mean"] == 0.0
    assert set(row) == {"group", "algorithm", "reference", "metric", "n_pairs", "only_algorithm",
                        "only_reference", "mean", "t_low", "t_high", "boot_low", "boot_high",
                        "confidence", "verdict"}


def test_filtered_rows_anywhere_and_groups_without_the_reference():
    import warnings

    erm = rows("ERM", {("human", 0): 0.70, ("human", 1): 0.72})
    mer = rows("MERDG", {("human", 0): 0.75, ("human", 1): 0.74})
    oracle_first = [{**erm[0], "selection": "oracle"}] + erm + mer
    assert paired_differences(oracle_first)[0].n_pairs == 2
    lonely = rows("CMC", {("human", 0): 0.6}, modalities="video")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN by rule, not by a mean of nothing
        [merdg, cmc] = paired_differences(erm + mer + lonely)
    assert (cmc.group, cmc.n_pairs, cmc.only_algorithm) == (("hac", "video"), 0, 1)
    assert math.isnan(cmc.mean) and merdg.n_pairs == 2
    assert t_interval(np.array([[0.1, 0.3]])) == pytest.approx(t_interval([0.1, 0.3]))


def test_aggregate_by_hand():
    import statistics as stats

    from merdg.evaluation.statistics import aggregate

    s = aggregate([1.0, None, 2.0, math.nan, 4.0])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(stats.stdev([1, 2, 4]))
    assert s.se == pytest.approx(stats.stdev([1, 2, 4]) / math.sqrt(3))
    assert s.std_population == pytest.approx(stats.pstdev([1, 2, 4]))
    assert s.spread() == s.std and s.spread("se") == s.se
    with pytest.raises(ValueError, match=r"^error must be 'std' or 'se', got 'var'$"):
        s.spread("var")
    one = aggregate([0.5])
    assert (one.mean, one.std, one.se, one.n, one.std_population) == (0.5, 0.0, 0.0, 1, 0.0)
    none = aggregate([None, math.inf])
    assert none.n == 0 and all(math.isnan(v) for v in (none.mean, none.std, none.se,
                                                        none.std_population))
