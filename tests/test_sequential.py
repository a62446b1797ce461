"""`run --seeds auto` as a whole procedure, simulated with the project's own functions: 20,000 studies
at once per setting (the stats dicts hold numpy arrays, one value per study), each looking after every
seed from its first look to its cap, stopping where the verdict's interval excludes 0 (stats.welch
under the plan's Rule) or where the planning estimate says the cap could not decide
(stats.could_resolve), as claims.wants_seed and cli._seeds_wanted do. No binomial floor: the floor only
widens intervals and stops sooner, so this is the procedure at its least careful.

    python -m pytest tests/test_sequential.py -s      # prints the table docs/reports.md quotes
"""

import numpy as np

from keras_cifar.study import stats

SEED = 27
TRIALS = 20_000
SD = 0.01  # the quieter variant's spread over seeds (accuracy as a fraction); the other's is RATIO x SD
SETTINGS = [(ratio, first, cap) for ratio in (1, 5) for first in (2, 3) for cap in (5, 10)]
BOUND = stats.ALPHA + 3 * np.sqrt(stats.ALPHA * (1 - stats.ALPHA) / TRIALS)  # 5 % + 3 Monte Carlo SEs: 5.46 %


def _stats(scores):
    """stats.describe's numbers of each row of `scores` (studies x seeds)."""
    return {"mean": scores.mean(1), "std": scores.std(1, ddof=1), "n": scores.shape[1], "binomial_se": None}


def simulate(ratio, first, cap, shift, rng):
    """(share of studies with a verdict, mean seeds per variant) of `--seeds auto` from `first` seeds to
    `cap`, where variant a's spread is `ratio` times b's and its true mean `shift` of its spreads above."""
    rule = stats.Rule(first, cap)
    a = rng.normal(0.6 + shift * ratio * SD, ratio * SD, (TRIALS, cap))
    b = rng.normal(0.6, SD, (TRIALS, cap))
    going, decided, seeds = np.ones(TRIALS, bool), np.zeros(TRIALS, bool), np.zeros(TRIALS)
    for n in range(first, cap + 1):
        still = np.flatnonzero(going)  # the studies that took seed n
        seeds[still] = n
        sa, sb = _stats(a[still, :n]), _stats(b[still, :n])
        verdict = stats.welch(sa, sb, rule).sign != 0
        decided[still[verdict]] = True
        going[still] = ~verdict & stats.could_resolve(sa, sb, cap, rule)
    return decided.mean(), seeds.mean()


def fixed_power(ratio, cap, rng):
    """The share of verdicts of one look at `cap` seeds (FIXED) at a true difference of 1 spread of a."""
    a = rng.normal(0.6 + ratio * SD, ratio * SD, (TRIALS, cap))
    b = rng.normal(0.6, SD, (TRIALS, cap))
    return np.mean(stats.welch(_stats(a), _stats(b)).sign != 0)


def test_seeds_auto_keeps_its_5_percent_whatever_the_spreads_start_and_cap():
    """Under no difference, `--seeds auto` gives a verdict in at most 5 % of studies (plus Monte Carlo
    error) in every setting; beside it, its power at a true difference of 1 and 2 standard deviations of
    the noisier variant, the seeds it spends, and the power of one look at the cap for comparison."""
    rng = np.random.default_rng(SEED)
    rows, rates, powers = [], [], []
    for ratio, first, cap in SETTINGS:
        rate, seeds0 = simulate(ratio, first, cap, 0.0, rng)
        power, seeds1 = simulate(ratio, first, cap, 1.0, rng)
        power2, _ = simulate(ratio, first, cap, 2.0, rng)
        rule = stats.Rule(first, cap)
        once = fixed_power(ratio, cap, rng)
        rows.append(
            f"| {ratio}:1 | {first} | {cap} | {rule.looks} | {100 * rule.alpha:.2f} % | {100 * rate:.2f} % | "
            f"{100 * power:.1f} % | {100 * power2:.1f} % | {seeds0:.2f} / {seeds1:.2f} | {100 * once:.1f} % |"
        )
        rates.append(rate)
        powers.append(power)
    print(
        f"\n{TRIALS:,} studies per setting and per true difference, seed {SEED}\n"
        "| spread ratio | first look | cap | looks | level per look | verdicts, no difference | power, "
        "1 sd | power, 2 sd | seeds per variant (no difference / 1 sd) | power, 1 sd, one look at the cap |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    assert max(rates) <= BOUND, rows
    assert all(p > 2 * r for p, r in zip(powers, rates)), rows  # and it does decide real differences
