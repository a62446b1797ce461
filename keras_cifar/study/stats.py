"""How sure the numbers over seeds are: the rule a recipe's verdicts follow, intervals for one variant
and for the difference of two, and a planning estimate of the seeds a difference would need.
Keras-free; accuracies are fractions. A variant's numbers are `describe`'s dict; in `welch`,
`could_resolve` and `spread` its mean and std may also be numpy arrays, one value per simulated study
(tests/test_sequential.py runs the whole `--seeds auto` procedure on many at once), element by element.

- The rule (`Rule`). Seeds fixed in advance are judged once, at the two-sided level ALPHA = 5 %.
  `run --seeds auto` looks after each seed, at every number of seeds from `first` to `cap`:
  K = cap - first + 1 looks, each judged at ALPHA / K (Bonferroni over the looks). The chance that some
  look shows a difference where there is none is then at most ALPHA, whatever the looks see and
  whenever the procedure stops, and the interval of any look, the last one included, covers the true
  value with probability 1 - ALPHA or more: repeated confidence intervals (Jennison and Turnbull, Group
  Sequential Methods with Applications to Clinical Trials, 2000, chapter 9). α below is the rule's
  level per look, ALPHA / K (K = 1 for fixed seeds).
- A variant's spread s: the sample standard deviation of its seeds' scores, never taken below the
  binomial standard error sqrt(m (1 - m) / n_test) that one test set of n_test images implies (m the
  mean): each score is itself a measurement on those images, so equal scores are not certainty.
- One variant, n seeds: m ± t(1 - α/2, n - 1) · s / sqrt(n), clipped to [0, 1], the possible range.
- Two variants a and b: Welch's interval of the difference of means, d = m_a - m_b,
  se = sqrt(s_a²/n_a + s_b²/n_b), d ± t(1 - α/2, df) · se, clipped to [-1, 1], with the
  Welch–Satterthwaite df = se⁴ / ((s_a²/n_a)² / (n_a-1) + (s_b²/n_b)² / (n_b-1)); its p-value is
  K · 2 P(T_df > |d| / se) (at most 1), at most ALPHA exactly when the interval excludes 0.
- Seeds needed, a planning estimate: the smallest n ≥ 2 per variant at which Welch's test at α would have
  power 0.8 for a true difference of |d|, with t quantiles in place of the noncentral t:
  |d| ≥ (t(1 - α/2, df_n) + t(0.8, df_n)) · sqrt(V / n), V = s_a² + s_b²,
  df_n = V² (n - 1) / (s_a⁴ + s_b⁴). Its low end takes V as observed, its high end V's 95 % upper
  confidence bound ν V / χ²(0.05, ν), with Satterthwaite's ν = V² / (s_a⁴/(n_a-1) + s_b⁴/(n_b-1)).
  The observed |d| is uncertain too, which the range does not show. n is searched up to SEARCH.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05  # two-sided, over all the looks of a rule
POWER = 0.8
SEARCH = 100  # the most seeds per variant a planning estimate names
Stats = dict[str, Any]  # a variant's numbers, as `describe` gives them


def _t(df: Any, p: Any) -> Any:
    """The p quantile of Student's t with `df` (not necessarily whole) degrees of freedom."""
    from scipy.special import stdtrit  # here: importing scipy takes half a second, and the CLI starts without it

    return stdtrit(df, p)


def _percent(x: float) -> str:
    """0.95 -> '95', 0.98333 -> '98.33': a confidence level in words."""
    return f"{100 * x:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Rule:
    """How a recipe's seeds were gathered, which sets the level of each look (module docstring): fixed
    in advance (FIXED: cap 0, one look), or by `--seeds auto` with a look at every number of seeds from
    `first` to `cap`."""

    first: int = 0
    cap: int = 0

    @property
    def looks(self) -> int:
        return max(1, self.cap - self.first + 1)

    @property
    def alpha(self) -> float:
        """The two-sided level of each look."""
        return ALPHA / self.looks

    @property
    def level(self) -> str:
        """The confidence of each look's intervals: '95 %', or '98.33 %' for a 3-look plan."""
        return f"{_percent(1 - self.alpha)} %"

    @property
    def ci(self) -> str:
        return f"{self.level} CI"

    def __str__(self) -> str:
        if not self.cap:
            return f"seeds fixed in advance: one look, {self.level} intervals"
        return (
            f"`--seeds auto`, a look at every number of seeds from {self.first} to {self.cap}: "
            f"{self.level} intervals at each of its {self.looks} looks, {_percent(1 - ALPHA)} % over all"
        )


FIXED = Rule()


def spread(s: Stats) -> Any:
    """A variant's spread: its standard deviation over seeds, at least one test set's binomial standard
    error where that is known; None with a single seed."""
    if s["std"] is None:
        return None
    return np.maximum(s["std"], 0.0 if s["binomial_se"] is None else s["binomial_se"])


def describe(values: Iterable[float | None], n_test: int | None = None, rule: Rule = FIXED) -> Stats | None:
    """mean, std, min, max, n, `binomial_se` (None without `n_test`) and `ci`, the t-interval at
    `rule`'s level ([low, high]; None below 2 values or without any spread), of the finite `values`;
    None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    n, mean = len(finite), statistics.fmean(finite)
    out: Stats = {
        "mean": mean,
        "std": statistics.stdev(finite) if n > 1 else None,
        "min": min(finite),
        "max": max(finite),
        "n": n,
        "ci": None,
        "binomial_se": math.sqrt(mean * (1 - mean) / n_test) if n_test else None,
    }
    s = spread(out)
    if s:
        half = float(_t(n - 1, 1 - rule.alpha / 2)) * float(s) / math.sqrt(n)
        out["ci"] = [max(0.0, mean - half), min(1.0, mean + half)]
    return out


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b), its Welch interval [low, high] at a rule's level, and the rule's p-value
    (floats, or arrays of them)."""

    diff: Any
    low: Any
    high: Any
    p: Any

    @property
    def sign(self) -> Any:
        """+1 where the interval lies above 0, -1 below, 0 where it holds 0 (can't tell)."""
        return np.where(self.low > 0, 1, np.where(self.high < 0, -1, 0))


def welch(a: Stats, b: Stats, rule: Rule = FIXED) -> Difference | None:
    """The Difference of two variants at `rule`'s level; None unless each has 2 values or more and
    some spread (no spread at all, with no test set to bound the noise, is no interval)."""
    from scipy.special import stdtr

    if a["n"] < 2 or b["n"] < 2:
        return None
    va, vb = spread(a) ** 2 / a["n"], spread(b) ** 2 / b["n"]
    if not np.all(va + vb > 0):
        return None
    diff = a["mean"] - b["mean"]
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    half = _t(df, 1 - rule.alpha / 2) * se
    p = np.minimum(1.0, rule.looks * 2 * stdtr(df, -np.abs(diff) / se))
    return Difference(diff, np.maximum(-1.0, diff - half), np.minimum(1.0, diff + half), p)


def _resolves(diff: Any, va: Any, vb: Any, n: Any, alpha: float) -> Any:
    """Whether n seeds per variant give Welch's test at `alpha` power POWER at a true difference `diff`,
    with per-seed variances va, vb (module docstring)."""
    df = (va + vb) ** 2 * (n - 1) / (va**2 + vb**2)
    return np.abs(diff) >= (_t(df, 1 - alpha / 2) + _t(df, POWER)) * np.sqrt((va + vb) / n)


def could_resolve(a: Stats, b: Stats, n: int, rule: Rule) -> Any:
    """Whether the planning estimate's low end is at most `n` seeds per variant: at the observed
    difference and spread, n seeds would resolve it with power 0.8 at `rule`'s level."""
    with np.errstate(invalid="ignore"):  # no spread at all: nothing to plan with (False)
        return _resolves(a["mean"] - b["mean"], spread(a) ** 2, spread(b) ** 2, n, rule.alpha)


def seeds_needed(a: Stats, b: Stats, rule: Rule = FIXED) -> tuple[int | None, int | None]:
    """The planning estimate (module docstring) of the seeds per variant that would resolve the difference
    of `a` and `b` (2 seeds or more each): (low end, high end), None for an end beyond SEARCH seeds (or
    where no number would: equal means, or no spread to plan with)."""
    from scipy.special import chdtri

    va, vb = spread(a) ** 2, spread(b) ** 2
    if not va + vb > 0:
        return None, None
    nu = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    grid = np.arange(2, SEARCH + 1)

    def fewest(scale: float) -> int | None:
        enough = _resolves(a["mean"] - b["mean"], scale * va, scale * vb, grid, rule.alpha)
        return int(grid[enough][0]) if enough.any() else None

    return fewest(1.0), fewest(nu / chdtri(nu, 1 - ALPHA))
