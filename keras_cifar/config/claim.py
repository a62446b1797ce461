"""What the report claims about an experiment: a recipe's ``report:`` section, parsed when the recipe
is loaded (study/claims.py judges whether runs agree with it):

    report:
      title: Activation function        # the experiment, in words
      source: Table 1, Fig. 6           # where the report shows it
      claim: relu > tanh > sigmoid      # its verdict, in its words
      order: [relu, tanh, sigmoid]      # its ranking of the variants, best first (leave out: no ranking)
      accuracy: {relu: 95.48, tanh: 92.37, sigmoid: 87.63}   # its test accuracies, % (optional)

A claim from another work than the study report names it in ``cites`` (recipes/tricks.yaml: D. Page's
"How to train your ResNet", airbench); its ``order`` may then be several orderings, each a list judged
on its own pairs: ``order: [[label_smoothing, baseline], [ema, baseline]]`` claims each trick beats the
baseline and nothing about the tricks between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_cifar.core.errors import ConfigError

KEYS = ("title", "source", "claim", "order", "accuracy", "cites")
Order = tuple[str, ...] | tuple[tuple[str, ...], ...]  # one ordering, best first, or several


@dataclass(frozen=True)
class Claim:
    """What the report says about one experiment (recipe): its words, its ranking, its accuracies (%)."""

    title: str
    source: str
    verdict: str
    order: Order = ()  # variants, best first (or several such lists); () when the report ranks nothing
    accuracy: dict[str, float] = field(default_factory=dict)
    cites: str = ""  # the work that claims it, where that is not the study report

    @property
    def figure(self) -> int:
        """The number of the report's figure ("Table 1, Fig. 6" -> 6), to list experiments in its order."""
        found = re.search(r"Fig\. (\d+)", self.source)
        return int(found.group(1)) if found else 1000


def parse_claim(section: Any, variants: list[str], where: str | Path) -> Claim | None:
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
    cites = section.get("cites", "")
    if not isinstance(order, list) or not isinstance(accuracy, dict) or not isinstance(cites, str):
        raise ConfigError(
            f"{where}: report.order is a list of variants (or of lists of them), report.accuracy maps "
            "variants to %, report.cites is the cited work"
        )
    nested = bool(order) and all(isinstance(o, list) for o in order)
    if order and not nested and not all(isinstance(o, str) for o in order):
        raise ConfigError(f"{where}: report.order: either variants, best first, or lists of them; not both")
    for key, names in (("order", [n for o in order for n in o] if nested else order), ("accuracy", list(accuracy))):
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
        tuple(tuple(o) for o in order) if nested else tuple(order),
        {name: float(value) for name, value in accuracy.items()},
        cites.strip(),
    )
