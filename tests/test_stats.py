"""The intervals, the rule and the seeds estimate against values computed by hand (t, z and χ² quantiles
from tables) and against scipy's own Welch test."""

import math

import pytest
from scipy.stats import ttest_ind

from keras_cifar.study import stats


def test_describe_gives_the_t_interval_and_one_test_sets_binomial_error():
    """0.60, 0.62, 0.64: mean 0.62, sd 0.02; t(0.975, 2) = 4.3027, so the half-width is
    4.3027 * 0.02 / sqrt(3) = 0.049683. One test set of 5,000: sqrt(0.62 * 0.38 / 5000) = 0.0068644.
    Under a 3-look plan each look is at 98.33 %: t(1 - 0.05/6, 2) = 7.6488, half-width 0.088320."""
    d = stats.describe([0.60, 0.62, 0.64, float("nan"), None], n_test=5000)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.62) and d["std"] == pytest.approx(0.02)
    assert d["ci"] == pytest.approx([0.570317, 0.669683], abs=1e-6)
    assert d["binomial_se"] == pytest.approx(0.0068644, abs=1e-7)
    assert stats.describe([0.60, 0.62, 0.64], rule=stats.Rule(3, 5))["ci"] == pytest.approx([0.53168, 0.70832], abs=1e-5)
    one = stats.describe([0.5])
    assert one["ci"] is None and one["std"] is None and one["binomial_se"] is None
    assert stats.describe([None]) is None


def test_an_accuracys_interval_stays_within_0_and_100_percent():
    """0.2 and 0.9: mean 0.55 ± t(0.975, 1) 12.706 * 0.495 / sqrt(2) = ± 4.45, clipped to [0, 1]."""
    assert stats.describe([0.2, 0.9], n_test=5000)["ci"] == [0.0, 1.0]
    assert stats.describe([0.97, 0.99])["ci"] == [pytest.approx(0.85294, abs=1e-5), 1.0]


def test_equal_scores_are_not_certainty():
    """Two seeds at 55 % and two at 54 %, each on 5,000 test images: each variant's spread is taken as
    one test set's SE, 0.70356 and 0.70484 pt (not 0), so the difference's interval is +1 ± t(0.975, 2.0)
    4.303 * 0.70420 pt = [-2.03, +4.03] pt and holds 0. Without a test-set size there is nothing to bound
    the noise with: no interval at all. A single variant's interval from equal scores: 0.55 ± 12.706 *
    0.0070356 / sqrt(2)."""
    a, b = stats.describe([0.55, 0.55], n_test=5000), stats.describe([0.54, 0.54], n_test=5000)
    d = stats.welch(a, b)
    assert (d.low, d.high) == pytest.approx((-0.020299, 0.040299), abs=1e-6) and d.sign == 0
    assert a["ci"] == pytest.approx([0.486787, 0.613213], abs=1e-6)
    assert stats.welch(stats.describe([0.55, 0.55]), stats.describe([0.54, 0.54])) is None
    assert stats.describe([0.55, 0.55])["ci"] is None
    assert stats.seeds_needed(stats.describe([0.55, 0.55]), stats.describe([0.54, 0.54])) == (None, None)


def test_welch_interval_of_a_difference():
    """a = 0.60, 0.62, 0.64 and b = 0.50, 0.52, 0.54: d = 0.10, se = sqrt(2 * 0.0004 / 3) = 0.016330,
    df = 4 (equal spreads and sizes), t(0.975, 4) = 2.7764: [0.054661, 0.145339]; as scipy's Welch test."""
    x, y = [0.60, 0.62, 0.64], [0.50, 0.52, 0.54]
    a, b = stats.describe(x), stats.describe(y)
    d = stats.welch(a, b)
    assert d.diff == pytest.approx(0.10) and (d.low, d.high) == pytest.approx((0.054661, 0.145339), abs=1e-6)
    scipy = ttest_ind(x, y, equal_var=False)
    assert d.p == pytest.approx(scipy.pvalue) and (d.low, d.high) == pytest.approx(tuple(scipy.confidence_interval()))
    assert d.sign == 1 and stats.welch(b, a).sign == -1
    assert stats.welch(a, stats.describe([0.5])) is None


def test_welch_with_unequal_spreads_uses_satterthwaite_degrees_of_freedom():
    """a = 0.55, 0.62 (var 0.00245), b = 0.50, 0.58 (var 0.0032): va = 0.001225, vb = 0.0016,
    df = 0.002825^2 / (0.001225^2 + 0.0016^2) = 1.9654, where t(0.975, df) = 4.376 (between 4.303 at
    df 2 and 12.71 at df 1): the half-width is 4.376 se and the interval holds 0."""
    a, b = stats.describe([0.55, 0.62]), stats.describe([0.50, 0.58])
    d = stats.welch(a, b)
    se = math.sqrt(0.001225 + 0.0016)
    half = (d.high - d.low) / 2
    assert d.diff == pytest.approx(0.045) and half / se == pytest.approx(4.376, abs=1e-3) and d.sign == 0


def test_a_seeds_auto_plan_splits_5_percent_over_its_looks():
    """--seeds auto from 3 seeds to 5: 3 looks at 5 / 3 % each. shortcut's four seeds against
    no_shortcut's (in the runs results/ held before its retraining of 2026-12-04): scipy's 98.33 % Welch
    interval, and 3 times its p-value, which is at most 5 % exactly where that interval excludes 0."""
    plan = stats.Rule(3, 5)
    assert (plan.looks, plan.alpha, plan.ci) == (3, pytest.approx(0.05 / 3), "98.33 % CI")
    assert (stats.FIXED.looks, stats.FIXED.alpha, stats.FIXED.ci) == (1, 0.05, "95 % CI")
    x, y = [0.6152, 0.6202, 0.6314, 0.6328], [0.5108, 0.5868, 0.5088, 0.4948]
    d = stats.welch(stats.describe(x), stats.describe(y), plan)
    scipy = ttest_ind(x, y, equal_var=False)
    assert (d.low, d.high) == pytest.approx(tuple(scipy.confidence_interval(1 - 0.05 / 3)))
    assert d.p == pytest.approx(3 * scipy.pvalue) and (d.p <= 0.05) == (d.sign != 0)


def test_seeds_needed_is_a_range_from_the_observed_spread_to_its_upper_bound():
    """a = 0.60, 0.62, 0.64, b = 0.57, 0.59, 0.61: d = 0.03, V = s_a² + s_b² = 0.0008. Low end: at n = 8,
    df 14, (2.1448 + 0.8681) sqrt(0.0008 / 8) = 0.03013 > d; at 9, df 16, (2.1199 + 0.8647)
    sqrt(0.0008 / 9) = 0.02814 <= d: 9. High end: ν = 0.0008² / (2 * 0.0004² / 2) = 4, χ²(0.05, 4) =
    0.7107, so V's upper bound is 5.628 V; at 40 (1.9908 + 0.8463) sqrt(0.004502 / 40) = 0.03010 > d, at
    41 0.02972 <= d: 41. could_resolve says whether n reaches the low end."""
    a, b = stats.describe([0.60, 0.62, 0.64]), stats.describe([0.57, 0.59, 0.61])
    assert stats.seeds_needed(a, b) == (9, 41) == stats.seeds_needed(b, a)
    assert not stats.could_resolve(a, b, 8, stats.FIXED) and stats.could_resolve(a, b, 9, stats.FIXED)
    assert stats.seeds_needed(a, a) == (None, None)  # equal means: no number of seeds would


def test_seeds_needed_beyond_the_search_and_under_a_plan():
    """a = 0.55, 0.62, b = 0.50, 0.58: va + vb = 0.00565, d = 0.045: at n = 22, df = 41.3,
    2.869 sqrt(0.00565 / 22) = 0.04598 > d; at 23, df = 43.2, 2.866 sqrt(0.00565 / 23) = 0.04492 <= d:
    23. Two seeds bound the spread loosely (ν = 1.965, χ²(0.05, ν) = 0.0965: 20x V): more than 100.
    Judged at 98.33 % (a 3-look plan) a difference needs more seeds than at 95 %."""
    a, b = stats.describe([0.55, 0.62]), stats.describe([0.50, 0.58])
    assert stats.seeds_needed(a, b) == (23, None)
    low, high = stats.seeds_needed(stats.describe([0.60, 0.62, 0.64]), stats.describe([0.57, 0.59, 0.61]), stats.Rule(3, 5))
    assert (low, high) == (11, 54)
