"""Recipes: loading a recipe file (or a shipped recipe by name) into its variants' resolved Configs,
command-line overrides (``--set``), and the sweep of runs (variant x seed) a command trains.

Precedence: built-in defaults < recipe ``base`` < recipe ``variants.<name>`` < command line. A recipe's
optional ``tune`` section configures ``keras-cifar tune`` (search.py), its optional ``report`` section
is the report's claim about the experiment (claim.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keras_cifar.config.claim import Claim, parse_claim
from keras_cifar.config.schema import Config, defaults, merge
from keras_cifar.config.search import merge_tune, tune_defaults
from keras_cifar.core.errors import ConfigError

RECIPE_KEYS = ("name", "description", "report", "base", "variants", "tune")


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep: a recipe's variant at one seed, with its resolved config."""

    recipe: str
    variant: str
    seed: int
    config: Config

    @property
    def key(self) -> str:
        return f"{self.recipe}/{self.variant}/seed{self.seed}"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    path: str
    variants: dict[str, Config]  # by variant name, resolved over defaults and base (no command line yet)
    tune: dict  # the tune section resolved over tune_defaults() (no command line yet)
    claim: Claim | None = None  # what the report found (the `report:` section), if it says


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read recipe ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with keys {', '.join(RECIPE_KEYS)}")
    return data


SHIPPED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # package data: the report's experiments


def shipped_recipes() -> dict[str, Path]:
    """The recipe files that come with keras-cifar, by name."""
    return {path.stem: path for path in sorted(SHIPPED_RECIPES.glob("*.yaml"))}


def recipe_file(text: str | Path) -> Path:
    """A RECIPE argument: a recipe file, or the name of a shipped recipe (``bn``, ``bn.yaml``)."""
    path = Path(text)
    if path.exists() or path.parent != Path("."):
        return path
    shipped = shipped_recipes()
    if path.stem in shipped and path.suffix in ("", ".yaml"):
        return shipped[path.stem]
    raise ConfigError(
        f"{text}: no such recipe file, and no shipped recipe of that name; shipped: "
        f"{', '.join(shipped)} (keras-cifar recipes lists them)"
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (or a shipped recipe, by name); every variant is resolved so errors
    surface before training."""
    path = recipe_file(path)
    data = _read_yaml(path)
    for key in data:
        if key not in RECIPE_KEYS:
            raise ConfigError(f"{path}: unknown top-level key '{key}'; allowed: {', '.join(RECIPE_KEYS)}")
    name = data.get("name") or Path(path).stem
    if not isinstance(name, str) or not _is_folder_name(name):
        raise ConfigError(f"{path}: name must be letters, digits, '_', '-' or '.', got {name!r}")
    base = merge(defaults(), data.get("base") or {}, str(path), "")
    variants = data.get("variants") or {"default": {}}
    if not isinstance(variants, dict):
        raise ConfigError(f"{path}: 'variants' must map variant names to partial configs")
    resolved = {}
    for vname, override in variants.items():
        if not isinstance(vname, str) or not _is_folder_name(vname):
            raise ConfigError(f"{path}: variant name {vname!r} must be letters, digits, '_', '-' or '.'")
        where = f"{path}: variants.{vname}"
        resolved[vname] = Config.from_dict(merge(base, override or {}, where, ""), where)
    tune = merge_tune(tune_defaults(), data.get("tune") or {}, path)
    claim = parse_claim(data.get("report"), list(resolved), path)
    return Recipe(name, str(data.get("description") or ""), str(path), resolved, tune, claim)


def load_recipes(paths: Iterable[str | Path]) -> list[Recipe]:
    """load_recipe for each path; recipes write to OUT/<name>/, so two of one name are refused."""
    recipes: list[Recipe] = []
    seen: dict[str, str | Path] = {}
    for path in paths:
        recipe = load_recipe(path)
        if recipe.name in seen:
            raise ConfigError(
                f"{path}: its name {recipe.name!r} is also the name of {seen[recipe.name]}; "
                "recipes of one run need distinct names"
            )
        seen[recipe.name] = path
        recipes.append(recipe)
    return recipes


def _is_folder_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "_-." for c in name) and not name.startswith(".")


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c.d=[0,1]"]`` into a nested override dict; values are read as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set model.width=16")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{p}' is set twice as a value and a section")
        node[leaf] = value
    return out


def sweep(
    recipe: Recipe,
    overrides: dict[str, Any] | None = None,
    variants: list[str] | None = None,
    seeds: Iterable[int] | None = None,
) -> list[RunSpec]:
    """Resolve the runs of `recipe`: each selected variant at each seed, command-line overrides last."""
    if variants:
        unknown = [v for v in variants if v not in recipe.variants]
        if unknown:
            raise ConfigError(
                f"{recipe.path}: unknown variant {', '.join(unknown)}; this recipe has {', '.join(recipe.variants)}"
            )
    runs = []
    for vname in variants or list(recipe.variants):
        config = _with_epoch_fraction(recipe.variants[vname].updated(overrides or {}, "command line"))
        if seeds is not None:
            config = config.updated({"train": {"seeds": list(seeds)}}, "--seeds")
        for seed in config.train.seeds:  # each run's config names its own seed only
            runs.append(RunSpec(recipe.name, vname, seed, config.updated({"train": {"seeds": [seed]}})))
    return runs


def _with_epoch_fraction(config: Config) -> Config:
    """`config` with train.epoch_fraction f applied, once the command line has had its say on train.epochs:
    f * epochs epochs rounded, halves up (at least 1) and f = 1, so that the run's config.yaml says what it trains."""
    train = config.train
    if train.epoch_fraction == 1:
        return config
    epochs = max(1, math.floor(train.epochs * train.epoch_fraction + 0.5))  # halves round up: 5 x 0.5 is 3
    return config.updated({"train": {"epochs": epochs, "epoch_fraction": 1.0}}, "train.epoch_fraction")


@dataclass(frozen=True)
class Search:
    """What ``keras-cifar tune`` searches: one recipe variant's resolved config and its tune section."""

    recipe: str
    variant: str
    config: Config
    tune: dict


def search_of(recipe: Recipe, overrides: dict[str, Any] | None = None, variant: str | None = None) -> Search:
    """The Search for a loaded Recipe, command-line overrides (``tune.*`` included) applied last."""
    overrides = dict(overrides or {})
    tune = merge_tune(recipe.tune, overrides.pop("tune", {}), "command line")
    if variant is None:
        if len(recipe.variants) > 1:
            raise ConfigError(
                f"{recipe.path}: has variants {', '.join(recipe.variants)}; choose the one to tune with --variant NAME"
            )
        variant = next(iter(recipe.variants))
    spec = sweep(recipe, overrides, variants=[variant])[0]  # its first seed seeds the trials
    return Search(recipe.name, variant, spec.config, tune)
