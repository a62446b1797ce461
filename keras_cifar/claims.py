"""What the report claims about an experiment, and whether our runs agree.

A recipe's ``report:`` section holds the claim (parsed here when the recipe is loaded):

    report:
      title: Activation function        # the experiment, in words
      source: Table 1, Fig. 6           # where the report shows it
      claim: relu > tanh > sigmoid      # its verdict, in its words
      order: [relu, tanh, sigmoid]      # its ranking of the variants, best first (leave out: no ranking)
      accuracy: {relu: 95.48, tanh: 92.37, sigmoid: 87.63}   # its test accuracies, % (optional)

Agreement is judged on final-epoch test accuracy over completed seeds, pair by pair along the report's
ordering (claimed better variant first), from the 95 % Welch interval of the difference of the two
means (stats.py has the formulas):
- "yes" / "no": the interval lies above 0 / below 0: the report's order holds / is reversed;
- "can't tell": the interval holds 0, or a variant has a single seed (no interval); the reason says how
  many seeds per variant would resolve a difference of the observed size at the observed spread.
The worst pair decides (no > can't tell > yes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_cifar import stats as intervals
from keras_cifar.errors import ConfigError

RANKS = ("no", "can't tell", "yes")
Stats = dict[str, Any]  # a variant's test-accuracy stats, as stats.describe gives them
KEYS = ("title", "source", "claim", "order", "accuracy")


@dataclass(frozen=True)
class Claim:
    """What the report says about one experiment (recipe): its words, its ranking, its accuracies (%)."""

    title: str
    source: str
    verdict: str
    order: tuple[str, ...] = ()  # variants, best first; () when the report ranks nothing
    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def figure(self) -> int:
        """The number of the report's figure ("Table 1, Fig. 6" -> 6), to list experiments in its order."""
        found = re.search(r"Fig\. (\d+)", self.source)
        return int(found.group(1)) if found else 1000


def parse(section: Any, variants: list[str], where: str | Path) -> Claim | None:
    """The Claim of a recipe's ``report:`` section (None without one); `variants` are the recipe's."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'report' must be a mapping with keys {', '.join(KEYS)}")
    for key in section:
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key 'report.{key}'; allowed: {', '.join(KEYS)}")
    for key in ("title", "source", "claim"):
        if not isinstance(section.get(key), str) or not section[key].strip():
            raise ConfigError(f"{where}: report.{key}: expected a string (the report's words)")
    order = section.get("order") or []
    accuracy = section.get("accuracy") or {}
    if not isinstance(order, list) or not isinstance(accuracy, dict):
        raise ConfigError(f"{where}: report.order is a list of variants, report.accuracy maps variants to %")
    for key, names in (("order", order), ("accuracy", list(accuracy))):
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise ConfigError(
                f"{where}: report.{key}: {', '.join(map(str, unknown))} is not a variant of this "
                f"recipe; it has {', '.join(variants)}"
            )
    for name, value in accuracy.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ConfigError(f"{where}: report.accuracy.{name}: expected a percentage, got {value!r}")
    return Claim(
        section["title"],
        section["source"],
        section["claim"],
        tuple(order),
        {name: float(value) for name, value in accuracy.items()},
    )


# -------------------------------------------------------------------------------------- judging


def _points(x: float) -> str:
    return f"{100 * x:+.2f}"


def _pair(a: Stats, b: Stats, name_a: str, name_b: str) -> tuple[str, str]:
    """(verdict, why) on "`name_a` beats `name_b`" from their test-accuracy stats (stats.describe)."""
    single = [f"{name} has 1 seed" for name, s in ((name_a, a), (name_b, b)) if s["n"] < 2]
    if single:
        return "can't tell", " and ".join(single) + ": no interval; run 2 seeds or more"
    d = intervals.welch(a, b)
    assert d is not None  # both have 2 seeds or more
    text = f"{name_a} − {name_b} = {_points(d.diff)} pt, 95 % CI [{_points(d.low)}, {_points(d.high)}]"
    if d.sign:
        return ("yes" if d.sign > 0 else "no"), text
    needed = intervals.seeds_needed(a, b)
    return "can't tell", text + (
        f"; about {needed} seeds per variant would resolve it" if needed else "; equal means: no number of seeds would"
    )


def judge(order: Sequence[str], stats: dict[str, Any]) -> tuple[str, str]:
    """(answer, reason) for the claim that `order` is best-first, given {variant: test-accuracy stats}."""
    if not order:
        return "n/a", "the report states no ordering"
    lacking = [v for v in order if not stats.get(v)]
    if lacking:
        return "no data", f"no completed run of {', '.join(lacking)}"
    verdicts = [_pair(stats[a], stats[b], a, b) for a, b in zip(order, order[1:])]
    worst = min((v for v, _ in verdicts), key=RANKS.index)
    return worst, "; ".join(why for v, why in verdicts if v == worst)


def seeds_wanted(order: Sequence[str], stats: dict[str, Any], cap: int) -> int:
    """The seeds per variant (at most `cap`) that the undecided pairs of `order` call for: 2 where a
    variant has 1 seed, else the power estimate of each "can't tell" pair; 0 when nothing more is wanted
    (every pair decided, or no pair that `cap` seeds could resolve)."""
    wanted = 0
    for a, b in zip(order, order[1:]):
        if not (stats.get(a) and stats.get(b)):
            continue
        if min(stats[a]["n"], stats[b]["n"]) < 2:
            wanted = max(wanted, 2)
        elif _pair(stats[a], stats[b], a, b)[0] == "can't tell":
            needed = intervals.seeds_needed(stats[a], stats[b])
            if needed and needed <= cap:
                wanted = max(wanted, needed)
    return min(wanted, cap)


def by_mean(stats: dict[str, Any]) -> list[str]:
    """The variants that have stats, by mean test accuracy, best first."""
    return sorted((v for v, s in stats.items() if s), key=lambda v: stats[v]["mean"], reverse=True)


def relation(a: str, b: str, stats: dict[str, Any]) -> str:
    """How `a` and `b` compare: 'a > b' (the difference's interval excludes 0), else 'a ≈ b'."""
    verdict = _pair(stats[a], stats[b], a, b)[0]
    if verdict == "can't tell":
        return f"{a} ≈ {b}" + (" (1 seed)" if min(stats[a]["n"], stats[b]["n"]) < 2 else "")
    better, worse = (a, b) if verdict == "yes" else (b, a)
    return f"{better} > {worse}"


def our_ordering(stats: dict[str, Any], order: Sequence[str] = ()) -> str:
    """Our result in words. With the report's ordering `order`, the relation of each pair it ranks,
    in its order (the pairs the verdict judges): 'batch128 ≈ batch256; batch64 > batch256'. Without one,
    the variants by mean test accuracy, best first, '≈' where the difference's interval holds 0."""
    lacking = "".join(f"; {v}: no completed run" for v, s in stats.items() if not s)
    if order and all(stats.get(v) for v in order):
        return "; ".join(relation(a, b, stats) for a, b in zip(order, order[1:])) + lacking
    ranked = by_mean(stats)
    text = ranked[0] if ranked else ""
    for better, worse in zip(ranked, ranked[1:]):
        text += (" ≈ " if _pair(stats[better], stats[worse], better, worse)[0] == "can't tell" else " > ") + worse
    return text + lacking
