"""What the report claims about an experiment: a recipe's ``report:`` section, parsed when the recipe
is loaded (study/claims.py judges whether runs agree with it):

    report:
      title: Activation function        # the experiment, in words
      source: Table 1, Fig. 6           # where the report shows it
      claim: relu > tanh > sigmoid      # its verdict, in its words
      order: [relu, tanh, sigmoid]      # its ranking of the variants, best first (leave out: no ranking)
      accuracy: {relu: 95.48, tanh: 92.37, sigmoid: 87.63}   # its test accuracies, % (optional)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_cifar.core.errors import ConfigError

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
