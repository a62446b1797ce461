"""What the report claims about an experiment, and whether our runs agree.

A recipe's ``report:`` section holds the claim (parsed here when the recipe is loaded):

    report:
      title: Activation function        # the experiment, in words
      source: Table 1, Fig. 6           # where the report shows it
      claim: relu > tanh > sigmoid      # its verdict, in its words
      order: [relu, tanh, sigmoid]      # its ranking of the variants, best first (leave out: no ranking)
      accuracy: {relu: 95.48, tanh: 92.37, sigmoid: 87.63}   # its test accuracies, % (optional)

Agreement is judged on final-epoch test accuracy over completed seeds, pair by pair along the report's
ordering (claimed better variant first):
- "yes" / "no": every seed of one variant beats every seed of the other (the min-max bands of the
  figures do not overlap at the last epoch), in the report's order / against it;
- "can't tell": the two variants' seed ranges overlap: the difference is within the seed spread;
- with a single seed on either side the spread is unknown: the answer follows the means and says so.
The worst pair decides (no > no with one seed > can't tell > yes with one seed > yes).
"""

import re
from dataclasses import dataclass, field

from keras_cifar.errors import ConfigError

RANKS = ("no", "no, 1 seed", "can't tell", "yes, 1 seed", "yes")
KEYS = ("title", "source", "claim", "order", "accuracy")


@dataclass(frozen=True)
class Claim:
    """What the report says about one experiment (recipe): its words, its ranking, its accuracies (%)."""

    title: str
    source: str
    verdict: str
    order: tuple = ()  # variants, best first; () when the report ranks nothing
    accuracy: dict = field(default_factory=dict)

    @property
    def figure(self):
        """The number of the report's figure ("Table 1, Fig. 6" -> 6), to list experiments in its order."""
        found = re.search(r"Fig\. (\d+)", self.source)
        return int(found.group(1)) if found else 1000


def parse(section, variants, where):
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
            raise ConfigError(f"{where}: report.{key}: {', '.join(map(str, unknown))} is not a variant of this "
                              f"recipe; it has {', '.join(variants)}")
    for name, value in accuracy.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ConfigError(f"{where}: report.accuracy.{name}: expected a percentage, got {value!r}")
    return Claim(section["title"], section["source"], section["claim"], tuple(order),
                 {name: float(value) for name, value in accuracy.items()})


# -------------------------------------------------------------------------------------- judging


def _pair(a, b):
    """Verdict on "a beats b" from their test-accuracy stats (mean/min/max/n, or None)."""
    if a["n"] < 2 or b["n"] < 2:
        return "yes, 1 seed" if a["mean"] > b["mean"] else "no, 1 seed" if a["mean"] < b["mean"] else "can't tell"
    if a["min"] > b["max"]:
        return "yes"
    return "no" if b["min"] > a["max"] else "can't tell"


def judge(order, stats):
    """(answer, reason) for the claim that `order` is best-first, given {variant: test-accuracy stats}."""
    if not order:
        return "n/a", "the report states no ordering"
    lacking = [v for v in order if not stats.get(v)]
    if lacking:
        return "no data", f"no completed run of {', '.join(lacking)}"
    verdicts = [(_pair(stats[a], stats[b]), a, b) for a, b in zip(order, order[1:])]
    worst = min(verdicts, key=lambda t: RANKS.index(t[0]))[0]
    pairs = [f"{a} vs {b}" for v, a, b in verdicts if v == worst]
    reasons = {"no": "against the report in every seed: ", "no, 1 seed": "means against the report: ",
               "can't tell": "within the seed spread: ", "yes, 1 seed": "means in the report's order: ",
               "yes": "in the report's order in every seed: "}
    return worst, reasons[worst] + ", ".join(pairs)


def relation(a, b, stats):
    """How `a` and `b` compare: 'a > b' (every seed), 'a ≈ b' (seed ranges overlap), '... (1 seed)'."""
    verdict = _pair(stats[a], stats[b])
    if verdict == "can't tell":
        return f"{a} ≈ {b}" + (" (1 seed)" if min(stats[a]["n"], stats[b]["n"]) < 2 else "")
    better, worse = (a, b) if verdict.startswith("yes") else (b, a)
    return f"{better} > {worse}" + (" (1 seed)" if verdict.endswith("1 seed") else "")


def our_ordering(stats, order=()):
    """Our result in words. With the report's ordering `order`, the relation of each pair it ranks,
    in its order (the pairs the verdict judges): 'batch128 ≈ batch256; batch64 > batch256'. Without one,
    the variants by mean test accuracy, best first, '≈' where the seed ranges overlap."""
    lacking = "".join(f"; {v}: no completed run" for v, s in stats.items() if not s)
    if order and all(stats.get(v) for v in order):
        return "; ".join(relation(a, b, stats) for a, b in zip(order, order[1:])) + lacking
    ranked = sorted((v for v, s in stats.items() if s), key=lambda v: stats[v]["mean"], reverse=True)
    text = ranked[0] if ranked else ""
    for better, worse in zip(ranked, ranked[1:]):
        text += (" ≈ " if _pair(stats[better], stats[worse]) == "can't tell" else " > ") + worse
    return text + lacking
