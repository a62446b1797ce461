"""The intervals and the seeds estimate against values computed by hand (t and z quantiles from tables)."""

import math

import pytest

from keras_cifar import stats


def test_describe_gives_the_t_interval_and_one_test_sets_binomial_error():
    """0.60, 0.62, 0.64: mean 0.62, sd 0.02; t(0.975, 2) = 4.3027, so the half-width is
    4.3027 * 0.02 / sqrt(3) = 0.049683. One test set of 5,000: sqrt(0.62 * 0.38 / 5000) = 0.0068644."""
    d = stats.describe([0.60, 0.62, 0.64, float("nan"), None], n_test=5000)
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.62) and d["std"] == pytest.approx(0.02)
    assert d["ci"] == pytest.approx([0.570317, 0.669683], abs=1e-6)
    assert d["binomial_se"] == pytest.approx(0.0068644, abs=1e-7)
    one = stats.describe([0.5])
    assert one["ci"] is None and one["std"] is None and one["binomial_se"] is None
    assert stats.describe([None]) is None


def test_welch_interval_of_a_difference():
    """a = 0.60, 0.62, 0.64 and b = 0.50, 0.52, 0.54: d = 0.10, se = sqrt(2 * 0.0004 / 3) = 0.016330,
    df = 4 (equal spreads and sizes), t(0.975, 4) = 2.7764: [0.054661, 0.145339]."""
    a, b = stats.describe([0.60, 0.62, 0.64]), stats.describe([0.50, 0.52, 0.54])
    d = stats.welch(a, b)
    assert d.diff == pytest.approx(0.10) and (d.low, d.high) == pytest.approx((0.054661, 0.145339), abs=1e-6)
    assert d.sign == 1 and stats.welch(b, a).sign == -1
    assert stats.welch(a, stats.describe([0.5])) is None
    same = stats.welch(stats.describe([0.6, 0.6]), stats.describe([0.5, 0.5]))  # no spread: a point
    assert (same.low, same.high, same.sign) == (pytest.approx(0.1), pytest.approx(0.1), 1)


def test_welch_with_unequal_spreads_uses_satterthwaite_degrees_of_freedom():
    """a = 0.55, 0.62 (var 0.00245), b = 0.50, 0.58 (var 0.0032): va = 0.001225, vb = 0.0016,
    df = 0.002825^2 / (0.001225^2 + 0.0016^2) = 1.9654, where t(0.975, df) = 4.376 (between 4.303 at
    df 2 and 12.71 at df 1): the half-width is 4.376 se and the interval holds 0."""
    a, b = stats.describe([0.55, 0.62]), stats.describe([0.50, 0.58])
    d = stats.welch(a, b)
    se = math.sqrt(0.001225 + 0.0016)
    half = (d.high - d.low) / 2
    assert d.diff == pytest.approx(0.045) and half / se == pytest.approx(4.376, abs=1e-3) and d.sign == 0


def test_seeds_needed_is_the_t_power_estimate():
    """a = 0.55, 0.62, b = 0.50, 0.58: va + vb = 0.00565, d = 0.045. The normal estimate,
    (1.95996 + 0.84162)^2 0.00565 / 0.045^2 = 21.9, starts the search at 22: there df = 41.3,
    t(0.975) + t(0.8) = 2.019 + 0.850 and 2.869 sqrt(0.00565 / 22) = 0.04598 > d; at 23, df = 43.2,
    2.866 sqrt(0.00565 / 23) = 0.04492 <= d. So 23. Equal means: None. No spread: 2."""
    a, b = stats.describe([0.55, 0.62]), stats.describe([0.50, 0.58])
    assert stats.seeds_needed(a, b) == 23 == stats.seeds_needed(b, a)
    assert stats.seeds_needed(a, a) is None
    assert stats.seeds_needed(stats.describe([0.6, 0.6]), stats.describe([0.5, 0.5])) == 2


def test_seeds_needed_exceeds_the_seeds_of_an_undecided_pair():
    """a = 0.60, 0.62, b = 0.55, 0.56 (d = 0.055, va + vb = 0.00025) is undecided at 2 seeds (df 1.47);
    the normal formula would say 2 (0.65 -> 2); at n = 3, df = 2.94, (3.19 + 0.98) sqrt(0.00025 / 3) =
    0.038 <= d: 3."""
    a, b = stats.describe([0.60, 0.62]), stats.describe([0.55, 0.56])
    assert stats.welch(a, b).sign == 0 and stats.seeds_needed(a, b) == 3
