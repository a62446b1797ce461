"""The config of a run and the recipes that make it: the schema (a typed, frozen Config), recipe files
and their sweeps, a recipe's tune section and its report claim. The names below are the package's API."""

from keras_cifar.config.claim import Claim, parse_claim
from keras_cifar.config.recipes import (
    RECIPE_KEYS,
    SHIPPED_RECIPES,
    Recipe,
    RunSpec,
    Search,
    load_recipe,
    load_recipes,
    parse_sets,
    recipe_file,
    search_of,
    shipped_recipes,
    sweep,
)
from keras_cifar.config.schema import ACTIVATIONS, DISTRIBUTIONS, EXECUTION_KEYS, PIPELINES, SCHEMA, Config, defaults, merge
from keras_cifar.config.search import OBJECTIVES, SPACE, TUNE_SCHEMA, TUNERS, merge_tune, tune_defaults

__all__ = [
    "ACTIVATIONS", "DISTRIBUTIONS", "EXECUTION_KEYS", "OBJECTIVES", "PIPELINES", "RECIPE_KEYS", "SCHEMA", "SHIPPED_RECIPES",
    "SPACE", "TUNERS", "TUNE_SCHEMA", "Claim", "Config", "Recipe", "RunSpec", "Search", "defaults", "load_recipe",
    "load_recipes", "merge", "merge_tune", "parse_claim", "parse_sets", "recipe_file", "search_of", "shipped_recipes",
    "sweep", "tune_defaults",
]  # fmt: skip
