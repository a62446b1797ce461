"""A recipe's ``tune`` section: what ``keras-cifar tune`` searches and how (TUNE_SCHEMA, SPACE),
validated like the rest of the recipe (schema.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_cifar.config.schema import SCHEMA, Field, coerce, merge, positive
from keras_cifar.core.errors import ConfigError

# Selection uses the validation split only; the value is the direction KerasTuner optimizes.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}
TUNERS = ("random", "bayesian", "hyperband")


@dataclass(frozen=True)
class Dim:
    """A searchable hyperparameter: the config key it sets and how a {min, max} range is sampled
    (None: choices only). ``default`` is its entry in the built-in search space (None: not tuned)."""

    section: str
    key: str
    sampling: Any
    default: Any = None


SPACE = {
    "learning_rate": Dim("optimizer", "learning_rate", "log", {"min": 0.01, "max": 0.3}),
    "batch_size": Dim("data", "batch_size", None, [64, 128, 256]),
    "momentum": Dim("optimizer", "momentum", "linear"),
    "weight_decay": Dim("optimizer", "weight_decay", "log"),
}
TUNE_SCHEMA = {
    "tuner": Field("str", "random", lambda v: v in TUNERS, " / ".join(TUNERS)),
    "objective": Field(
        "str",
        "val_accuracy",
        lambda v: v in OBJECTIVES,
        " or ".join(OBJECTIVES) + " (the validation split; the test split is never used for selection)",
    ),
    "max_trials": Field("int", 10, positive, "a positive integer (hyperband: also limited by its brackets)"),
    "epochs": Field("int", 10, positive, "a positive number of epochs per trial (hyperband: the most)"),
    "executions_per_trial": Field("int", 1, positive, "a positive integer (trainings per trial, seeds seed, seed+1, ...)"),
    "seed": Field("int", 1, positive, "a positive integer (KerasTuner treats 0 as unseeded)"),
    "space": SPACE,  # merged by _merge_space
}


def tune_defaults() -> dict[str, Any]:
    """The built-in ``tune`` section."""
    out = {k: f.default for k, f in TUNE_SCHEMA.items() if isinstance(f, Field)}
    out["space"] = {name: copy.deepcopy(d.default) for name, d in SPACE.items() if d.default is not None}
    return out


def merge_tune(tune: dict[str, Any], override: Any, source: str | Path) -> dict[str, Any]:
    """Return the ``tune`` section `tune` updated by the partial `override`, validated.

    ``space`` entries replace whole entries (a list of choices or a {min, max} range); ``null``
    removes one from the search, so its value comes from the recipe's base."""
    if not isinstance(override, dict):
        raise ConfigError(f"{source}: 'tune' must be a mapping of keys, got {override!r}")
    out = merge(tune, {k: v for k, v in override.items() if k != "space"}, source, "tune", TUNE_SCHEMA)
    if "space" in override:
        out["space"] = _merge_space(out["space"], override["space"], source)
    return out


def _merge_space(space: dict[str, Any], override: Any, source: str | Path) -> dict[str, Any]:
    if not isinstance(override, dict):
        raise ConfigError(
            f"{source}: tune.space must map hyperparameters ({', '.join(SPACE)}) to a list of "
            f"choices or a {{min, max}} range, got {override!r}"
        )
    out = copy.deepcopy(space)
    for name, value in override.items():
        if name not in SPACE:
            raise ConfigError(f"{source}: unknown key 'tune.space.{name}'; allowed: {', '.join(SPACE)}")
        if value is None:
            out.pop(name, None)
        else:
            out[name] = _space_entry(SPACE[name], value, f"{source}: tune.space.{name}")
    if not out:
        raise ConfigError(f"{source}: tune.space is empty; search at least one of {', '.join(SPACE)}")
    return out


def _space_entry(dim: Dim, value: Any, where: str) -> Any:
    """A list of distinct choices, or a {min, max} range; every value must be valid for the config key."""
    field = SCHEMA[dim.section][dim.key]
    if isinstance(value, list) and value:
        choices = [coerce(field, v, f"{where}[{i}]") for i, v in enumerate(value)]
        if len(set(choices)) < len(choices):
            raise ConfigError(f"{where}: choices repeat in {choices}")
        return choices
    if isinstance(value, dict) and dim.sampling:
        if set(value) != {"min", "max"}:
            raise ConfigError(f"{where}: a range has exactly the keys min and max, got {', '.join(map(str, value))}")
        low, high = (coerce(field, value[k], f"{where}.{k}") for k in ("min", "max"))
        if not low < high:
            raise ConfigError(f"{where}: min ({low}) must be below max ({high})")
        if dim.sampling == "log" and low <= 0:
            raise ConfigError(
                f"{where}: a range is sampled log-uniformly and needs min > 0; to include 0 give a list of choices"
            )
        return {"min": low, "max": high}
    words = "a non-empty list of choices" + (" or a {min, max} range" if dim.sampling else "")
    raise ConfigError(f"{where}: expected {words}, got {value!r}")
