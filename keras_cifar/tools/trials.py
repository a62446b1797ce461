"""The trials of a search, keras-free: the values a trial takes from the search space and its run
config, and what is written about the trials: trials.csv, trials.md, objective.png and best.yaml
(the best completed trial as a recipe for ``keras-cifar run``). KerasTuner's trials are read here
through their attributes only (Any here: KerasTuner has no types)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from keras_cifar.config import OBJECTIVES, SPACE, Config, Search
from keras_cifar.core.files import write_atomic, write_csv
from keras_cifar.study import plots

# ---------------------------------------------------------------------------------------- the space


def trial_values(hp: Any, search: Search) -> dict[str, Any]:
    """Declare the search space on `hp` (KerasTuner keeps a declared value) and return the trial's
    values, typed like the config keys they set. A range is sampled per config.SPACE; defaults are
    the recipe's own values, clipped into the range."""
    values = {}
    for name, entry in search.tune["space"].items():
        dim = SPACE[name]
        base = search.config.value(dim.section, dim.key)
        if isinstance(entry, list):
            value = hp.Choice(name, entry, default=base if base in entry else entry[0])
        else:
            default = min(max(base, entry["min"]), entry["max"])
            value = hp.Float(name, entry["min"], entry["max"], sampling=dim.sampling, default=default)
        values[name] = type(base)(value)  # numpy scalars from the oracle -> int / float
    return values


def trial_epochs(hp: Any, search: Search) -> int:
    """Epochs a trial trains: hyperband sets them per trial, the other tuners use tune.epochs."""
    return int(hp.values.get("tuner/epochs", search.tune["epochs"]))


def trial_config(search: Search, values: dict[str, Any], epochs: int, seeds: Iterable[int]) -> Config:
    """The resolved run config of a trial: the search's config with the trial's values."""
    override: dict[str, dict[str, Any]] = {"train": {"epochs": epochs, "seeds": list(seeds)}}
    for name, value in values.items():
        override.setdefault(SPACE[name].section, {})[SPACE[name].key] = value
    return search.config.updated(override, "trial")


# ------------------------------------------------------------------------------------------ results


def write_results(folder: Path | str, search: Search, trials: dict[str, Any]) -> str | None:
    """trials.csv, trials.md, objective.png and best.yaml from KerasTuner's trials; returns the
    best completed trial's id (None if none completed)."""
    folder = Path(folder)
    objective = search.tune["objective"]
    rows = [_row(tr, search) for _, tr in sorted(trials.items())]
    completed = [tr for tr in trials.values() if status(tr) == "COMPLETED"]  # diverged ones never win
    best = (max if OBJECTIVES[objective] == "max" else min)(completed, key=lambda tr: tr.score, default=None)
    columns = ["trial", *search.tune["space"], "epochs", objective, "status", "seconds"]
    write_csv(folder / "trials.csv", rows, columns)
    write_atomic(folder / "trials.md", _markdown(rows, columns, search, best))
    if best is not None:
        _plot(folder / "objective.png", [r for r in rows if r[objective] is not None], search, best)
    if best is not None:
        write_atomic(folder / "best.yaml", yaml.safe_dump(best_recipe(search, best), sort_keys=False))
    return best.trial_id if best is not None else None


def _row(trial: Any, search: Search) -> dict[str, Any]:
    hp = trial.hyperparameters.copy()
    metric = search.tune["objective"]
    return {
        "trial": trial.trial_id,
        **trial_values(hp, search),
        "epochs": trial_epochs(hp, search),
        metric: trial.score if trial.status == "COMPLETED" else None,
        "status": status(trial).lower(),
        "seconds": seconds(trial),
        "message": last_line(trial.message) if trial.status != "COMPLETED" else None,
    }


def status(trial: Any) -> str:
    """KerasTuner's status; a completed trial whose training loss went non-finite is DIVERGED."""
    if trial.status == "COMPLETED" and trial.metrics.exists("loss"):
        if not math.isfinite(trial.metrics.get_last_value("loss")):
            return "DIVERGED"
    return trial.status


def seconds(trial: Any) -> float | None:
    return trial.metrics.get_last_value("seconds") if trial.metrics.exists("seconds") else None


def best_recipe(search: Search, trial: Any) -> dict[str, Any]:
    """The trial as a recipe for ``keras-cifar run``: its full config as base, one variant
    ``trial_<id>``, seeds of its executions."""
    hp = trial.hyperparameters.copy()
    values = trial_values(hp, search)
    first = search.config.train.seeds[0]
    config = trial_config(search, values, trial_epochs(hp, search), range(first, first + search.tune["executions_per_trial"]))
    objective = search.tune["objective"]
    return {
        "name": search.recipe,
        "description": f"Best trial ({trial.trial_id}) of the {search.tune['tuner']} search of recipe "
        f"{search.recipe} ({search.variant}): {describe(values)}; {objective} "
        f"{value_text(objective, trial.score)} after {config.train.epochs} epoch(s).",
        "base": config.to_dict(),
        "variants": {f"trial_{trial.trial_id}": {}},
    }


def _markdown(rows: list[dict[str, Any]], columns: list[str], search: Search, best: Any) -> str:
    t = search.tune
    lines = [
        f"{t['tuner']} search of recipe `{search.recipe}` ({search.variant}), objective {t['objective']} "
        f"(validation split, last epoch), {t['max_trials']} trials; setup in search.yaml",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if c != "status" else "---" for c in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(value_text(c, row[c]) for c in columns) + " |")
    lines.append("")
    lines += [f"Trial {row['trial']} {row['status']}: {row['message']}" for row in rows if row["message"]]
    if best is not None:
        lines.append(f"Best: trial {best.trial_id}, {t['objective']} {value_text(t['objective'], best.score)} -> best.yaml")
    return "\n".join(lines) + "\n"


def _plot(path: Path, rows: list[dict[str, Any]], search: Search, best: Any) -> None:
    """The objective against each searched hyperparameter; the best trial starred."""
    space = {
        name: (entry, name == "batch_size" or (isinstance(entry, dict) and SPACE[name].sampling == "log"))
        for name, entry in search.tune["space"].items()
    }
    plots.objective(
        path,
        rows,
        space,
        search.tune["objective"],
        best.trial_id,
        f"{search.recipe}: {search.tune['tuner']} search, {len(rows)} trials, "
        f"{search.tune['epochs']} epoch(s) each (validation split)",
    )


# ------------------------------------------------------------------------------------- formatting


def value_text(name: str, value: Any) -> str:
    """A value as the trial tables show it: accuracies in %, seconds whole, floats to 4 digits."""
    if value is None:
        return "-"
    if name in ("val_accuracy", "accuracy"):
        return f"{value:.2%}"
    if name == "seconds":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value_text(name, v)}" for name, v in values.items())


def range_text(name: str, entry: Any) -> str:
    if isinstance(entry, list):
        return f"{name} {'/'.join(value_text(name, v) for v in entry)}"
    return f"{name} {value_text(name, entry['min'])}..{value_text(name, entry['max'])} ({SPACE[name].sampling})"


def last_line(message: str | None) -> str | None:
    """The last line of a trial's message (KerasTuner stores the whole traceback)."""
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else None
