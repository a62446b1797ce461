"""How sure the numbers over seeds are: intervals for one variant, for the difference of two, and the
seeds a difference would need. Keras-free; accuracies are fractions.

- One variant, n seeds with mean m and sample standard deviation s: the 95 % t-interval
  m ± t(0.975, n-1) · s / sqrt(n), and beside it the standard error that one run's test set alone
  implies, sqrt(m (1 - m) / n_test) (binomial: each of n_test test images right or wrong).
- Two variants a and b: Welch's interval for the difference of means,
  d = m_a - m_b, se = sqrt(s_a²/n_a + s_b²/n_b), d ± t(0.975, df) · se, with the Welch–Satterthwaite
  df = se⁴ / ((s_a²/n_a)² / (n_a-1) + (s_b²/n_b)² / (n_b-1)).
- Seeds needed per variant to resolve a difference of size d at spread s_a, s_b: a power estimate for
  Welch's two-sided test at α = 0.05 with power 0.8, with t quantiles in place of the noncentral t:
  the smallest n ≥ 2 with |d| ≥ (t(0.975, df_n) + t(0.8, df_n)) · sqrt((s_a² + s_b²) / n), where
  df_n = (s_a² + s_b²)² (n - 1) / (s_a⁴ + s_b⁴) is Welch's df at n seeds each. (With z in place of t
  it is the textbook n = (z(0.975) + z(0.8))² (s_a² + s_b²) / d², where the search starts: with few
  seeds that one promises decisions that 2 or 3 seeds cannot give.)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95
POWER = 0.8


def _t(df: float, p: float = (1 + CONFIDENCE) / 2) -> float:
    """The p quantile of Student's t with `df` (not necessarily whole) degrees of freedom; by default
    the one of a two-sided CONFIDENCE interval."""
    from scipy.special import stdtrit  # here: importing scipy takes half a second, and the CLI starts without it

    return float(stdtrit(df, p))


def _z(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def describe(values: Iterable[float | None], n_test: int | None = None) -> dict[str, Any] | None:
    """mean, std, min, max, n, the 95 % t-interval `ci` ([low, high], None below 2 values) and
    `binomial_se` (None without `n_test`) of the finite `values`; None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    n, mean = len(finite), statistics.fmean(finite)
    std = statistics.stdev(finite) if n > 1 else None
    ci = None
    if std is not None:
        half = _t(n - 1) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {
        "mean": mean,
        "std": std,
        "min": min(finite),
        "max": max(finite),
        "n": n,
        "ci": ci,
        "binomial_se": math.sqrt(mean * (1 - mean) / n_test) if n_test else None,
    }


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its 95 % Welch interval [low, high]."""

    diff: float
    low: float
    high: float

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 below, 0 when it holds 0 (can't tell)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def welch(a: dict[str, Any], b: dict[str, Any]) -> Difference | None:
    """The Difference of two `describe` results (None unless each has 2 values or more)."""
    if a["n"] < 2 or b["n"] < 2:
        return None
    diff = a["mean"] - b["mean"]
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    se = math.sqrt(va + vb)
    if se == 0:  # every seed of each variant scored the same
        return Difference(diff, diff, diff)
    df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    half = _t(df) * se
    return Difference(diff, diff - half, diff + half)


def seeds_needed(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """Seeds per variant that would resolve a difference of the observed size at the observed spread
    (module docstring), or None where the means are equal (no number of seeds would)."""
    diff = abs(a["mean"] - b["mean"])
    if diff == 0:
        return None
    va, vb = (a["std"] or 0) ** 2, (b["std"] or 0) ** 2
    if va + vb == 0:
        return 2
    n = max(2, math.ceil((_z((1 + CONFIDENCE) / 2) + _z(POWER)) ** 2 * (va + vb) / diff**2))
    while True:  # t's quantiles exceed z's, so the answer is at or after the normal one
        df = (va + vb) ** 2 * (n - 1) / (va**2 + vb**2)
        if diff >= (_t(df) + _t(df, POWER)) * math.sqrt((va + vb) / n):
            return n
        n += 1
