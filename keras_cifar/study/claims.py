"""Whether our runs agree with what the report claims about an experiment (a recipe's ``report:``
section, config/claim.py).

Agreement is judged on final-epoch test accuracy over completed seeds, on every pair the report's
ordering implies (for a > b > c: a - b, a - c and b - c; claimed better variant first), from Welch's
interval of the difference of the two means at the level of the rule the seeds were gathered under
(stats.py has the rule and the formulas; `--seeds auto` records its plan in OUT/<recipe>/seeds_auto.json):
- a pair is "yes" / "no" where its interval lies above 0 / below 0: the report's order holds / is reversed;
- "can't tell" where the interval holds 0, a variant has a single seed, or no variant's scores spread
  and no test-set size bounds their noise; the reason gives a planning estimate of the seeds that would
  resolve it.
The claim is "no" if any pair is "no" (the reason names it), "yes" if every pair is, else "can't tell".
Over a page of several claims, `holm` says which pairs' decisions survive a family-wise correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from keras_cifar.core.files import make_dirs, read_json, write_json
from keras_cifar.study import stats as intervals

RANKS = ("no", "can't tell", "yes")
Stats = dict[str, Any]  # a variant's test-accuracy stats, as stats.describe gives them
PLAN = "seeds_auto.json"  # in OUT/<recipe>/: the plan `--seeds auto` gathered the recipe's seeds under


def plan_of(recipe_dir: Path | str) -> intervals.Rule:
    """The rule a recipe folder's seeds were gathered under: its recorded `--seeds auto` plan, else FIXED."""
    recorded = read_json(Path(recipe_dir) / PLAN)
    return intervals.Rule(recorded["first"], recorded["cap"]) if recorded else intervals.FIXED


def record_plan(recipe_dir: Path | str, rule: intervals.Rule) -> None:
    make_dirs(recipe_dir)
    write_json(Path(recipe_dir) / PLAN, {"first": rule.first, "cap": rule.cap})


def _points(x: float) -> str:
    return f"{100 * x:+.2f}"


@dataclass(frozen=True)
class Pair:
    """One pair of a claimed ordering (`better` claimed above `worse`) as judged: its verdict, the words
    that say why, and its p-value under the rule (1 where there is no test), for the page-wide correction."""

    better: str
    worse: str
    verdict: str
    why: str
    p: float = 1.0


def _planning(a: Stats, b: Stats, rule: intervals.Rule) -> str:
    """The planning estimate of the seeds that would resolve a pair, as a range, in words."""
    low, high = intervals.seeds_needed(a, b, rule)
    if low is None:
        return f"planning estimate: more than {intervals.SEARCH} seeds per variant would be needed"
    seeds = f"{low}–{high}" if high and high > low else f"{low}" if high else f"{low} to more than {intervals.SEARCH}"
    beyond = f", more than the cap of {rule.cap}" if rule.cap and low > rule.cap else ""
    return f"planning estimate: {seeds} seeds per variant would resolve it{beyond}"


def judge_pair(a: Stats, b: Stats, name_a: str, name_b: str, rule: intervals.Rule = intervals.FIXED) -> Pair:
    """The Pair "`name_a` beats `name_b`" from their test-accuracy stats (stats.describe) under `rule`."""
    single = [f"{name} has 1 seed" for name, s in ((name_a, a), (name_b, b)) if s["n"] < 2]
    if single:
        return Pair(name_a, name_b, "can't tell", " and ".join(single) + ": no interval; run 2 seeds or more")
    d = intervals.welch(a, b, rule)
    if d is None:
        return Pair(
            name_a,
            name_b,
            "can't tell",
            f"{name_a} and {name_b} each scored the same on every seed, and no test-set size bounds that "
            "measurement's noise: no interval",
        )
    p = float(d.p)
    text = f"{name_a} − {name_b} = {_points(d.diff)} pt, {rule.ci} [{_points(d.low)}, {_points(d.high)}], p = {p:.2g}"
    sign = int(d.sign)
    if sign:
        return Pair(name_a, name_b, "yes" if sign > 0 else "no", text, p)
    return Pair(name_a, name_b, "can't tell", f"{text}; {_planning(a, b, rule)}", p)


class Verdict(NamedTuple):
    """A claim's answer (yes, no, can't tell, no data, n/a), the reason (the pairs that decide it) and
    every pair judged; `answer, reason = verdict[:2]`."""

    answer: str
    reason: str
    pairs: tuple[Pair, ...] = ()

    def standing(self, kept: Sequence[bool]) -> str:
        """The answer when only the decisions of the pairs `kept` marks stand (the others: can't tell)."""
        if not self.pairs:
            return self.answer
        pairs = [p if k else Pair(p.better, p.worse, "can't tell", p.why, p.p) for p, k in zip(self.pairs, kept)]
        return _answer(pairs)[0]


def _answer(pairs: Sequence[Pair]) -> tuple[str, str]:
    """The worst verdict of `pairs` (no > can't tell > yes) and the pairs that have it, in words."""
    worst = min((p.verdict for p in pairs), key=RANKS.index)
    return worst, "; ".join(p.why for p in pairs if p.verdict == worst)


Order = Sequence[str] | Sequence[Sequence[str]]  # an ordering, best first, or several (config/claim.py)


def ordered_pairs(order: Order) -> list[tuple[str, str]]:
    """Every pair an ordering (best first) implies, claimed better first: a > b > c gives a-b, a-c, b-c;
    for several orderings, the pairs of each in turn, each once."""
    if order and not isinstance(order[0], str):
        return list(dict.fromkeys(pair for one in order for pair in ordered_pairs(one)))
    names = [str(n) for n in order]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def variants_of(order: Order) -> list[str]:
    """The variants an ordering (or several) names, each once, in order."""
    return list(dict.fromkeys(name for pair in ordered_pairs(order) for name in pair)) or [str(n) for n in order]


def judge(order: Order, stats: dict[str, Any], rule: intervals.Rule = intervals.FIXED) -> Verdict:
    """The Verdict on the claim that `order` is best-first, given {variant: test-accuracy stats}."""
    if not order:
        return Verdict("n/a", "the report states no ordering")
    lacking = [v for v in variants_of(order) if not stats.get(v)]
    if lacking:
        return Verdict("no data", f"no completed run of {', '.join(lacking)}")
    pairs = tuple(judge_pair(stats[a], stats[b], a, b, rule) for a, b in ordered_pairs(order))
    return Verdict(*_answer(pairs), pairs)


def holm(ps: Sequence[float], alpha: float = intervals.ALPHA) -> list[bool]:
    """Which p-values Holm's step-down procedure rejects at family-wise level `alpha` (Holm 1979): the
    k-th smallest (k = 0, 1, ...) while each is at most alpha / (m - k), m = len(ps)."""
    rejected = [False] * len(ps)
    for k, i in enumerate(sorted(range(len(ps)), key=lambda i: ps[i])):
        if ps[i] > alpha / (len(ps) - k):
            break
        rejected[i] = True
    return rejected


def wants_seed(order: Order, stats: dict[str, Any], rule: intervals.Rule) -> str | None:
    """With `--seeds auto` (`rule`), below its cap: the first pair of `order` that one more seed could
    help, in words (a variant with fewer than 2 completed seeds, or an undecided pair whose planning
    estimate's low end is within the cap), or None when no pair is."""
    for a, b in ordered_pairs(order):
        if not (stats.get(a) and stats.get(b)):
            continue
        if min(stats[a]["n"], stats[b]["n"]) < 2:
            return f"{a} or {b} has fewer than 2 completed seeds"
        if judge_pair(stats[a], stats[b], a, b, rule).verdict == "can't tell" and intervals.could_resolve(
            stats[a], stats[b], rule.cap, rule
        ):
            return f"{a} − {b} is undecided and the planning estimate says {rule.cap} seeds could decide it"
    return None


def by_mean(stats: dict[str, Any]) -> list[str]:
    """The variants that have stats, by mean test accuracy, best first."""
    return sorted((v for v, s in stats.items() if s), key=lambda v: stats[v]["mean"], reverse=True)


def relation(a: str, b: str, stats: dict[str, Any], rule: intervals.Rule = intervals.FIXED) -> str:
    """How `a` and `b` compare: 'a > b' (the difference's interval excludes 0), else 'a ≈ b'."""
    verdict = judge_pair(stats[a], stats[b], a, b, rule).verdict
    if verdict == "can't tell":
        return f"{a} ≈ {b}" + (" (1 seed)" if min(stats[a]["n"], stats[b]["n"]) < 2 else "")
    better, worse = (a, b) if verdict == "yes" else (b, a)
    return f"{better} > {worse}"


def our_ordering(stats: dict[str, Any], order: Order = (), rule: intervals.Rule = intervals.FIXED) -> str:
    """Our result in words. With the report's ordering `order`, the relation of every pair it implies
    (the pairs the verdict judges), in its order: 'batch128 ≈ batch256; batch128 ≈ batch64; batch64 >
    batch256'. Without one, the variants by mean test accuracy, best first, '≈' where the difference's
    interval holds 0."""
    lacking = "".join(f"; {v}: no completed run" for v, s in stats.items() if not s)
    if order and all(stats.get(v) for v in variants_of(order)):
        return "; ".join(relation(a, b, stats, rule) for a, b in ordered_pairs(order)) + lacking
    ranked = by_mean(stats)
    text = ranked[0] if ranked else ""
    for better, worse in zip(ranked, ranked[1:]):
        same = judge_pair(stats[better], stats[worse], better, worse, rule).verdict == "can't tell"
        text += (" ≈ " if same else " > ") + worse
    return text + lacking
