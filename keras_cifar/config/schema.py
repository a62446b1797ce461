"""The typed config, recipe loading, overrides and sweeps.

A run's resolved config is a ``Config``: frozen dataclasses, one per section, whose fields are the
recipe schema (each field's Field says its kind, default and what is allowed). Code reads it as
attributes (``config.model.width``); ``Config.from_dict`` validates a nested dict (a recipe's sections,
a config.yaml) and ``to_dict`` gives one back for YAML.

Precedence: built-in defaults < recipe ``base`` < recipe ``variants.<name>`` < command line.
A recipe's optional ``tune`` section (TUNE_SCHEMA, SPACE) configures ``keras-cifar tune`` the same way;
its optional ``report`` section is the report's claim about the experiment (claims.py).
Every key is validated; an unknown key, a wrong type or a bad value raises ``ConfigError`` with a
one-line message that names the file and the key and says what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keras_cifar import claims
from keras_cifar.claims import Claim
from keras_cifar.cluster import DISTRIBUTIONS
from keras_cifar.errors import ConfigError
from keras_cifar.losses import LOSSES
from keras_cifar.networks import MODELS
from keras_cifar.optim import OPTIMIZERS, SCHEDULES


def _anything(v: Any) -> bool:
    return True


@dataclass(frozen=True)
class Field:
    kind: str  # a key of KINDS
    default: Any
    check: Callable[[Any], bool] = _anything
    allowed: Any = ""  # human words for what passes `check` (a Registry: its names)
    nullable: bool = False


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


# Keras's activations that take a tensor alone and keep its shape (the report's three first): a name is
# checked here without importing Keras, so a misspelt one is refused at once. tests/test_config.py checks
# the list against the installed Keras, so it cannot go stale.
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu6", "selu", "silu",
    "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus",
    "swish", "tanh_shrink",
)  # fmt: skip


PIPELINES = ("auto", "tf_data", "numpy")


def setting(
    kind: str, default: Any, check: Callable[[Any], bool] = _anything, allowed: Any = "", nullable: bool = False
) -> Any:
    """One config key: a dataclass field whose metadata holds the Field that validates it."""
    return dataclasses.field(
        default=tuple(default) if isinstance(default, list) else default,
        metadata={"field": Field(kind, default, check, allowed, nullable)},
    )


def section(cls: type) -> Any:
    """A config section: a dataclass field holding `cls`'s defaults."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


@dataclass(frozen=True)
class ModelConfig:
    name: str = setting("str", "resnet18", lambda v: v in MODELS, MODELS)
    width: int = setting("int", 64, _positive, "a positive integer (the report's Channel1; 64 is ResNet-18)")
    batch_norm: bool = setting("bool", True)
    shortcut: bool = setting("bool", True)
    activation: str = setting(
        "str",
        "relu",
        lambda v: v in ACTIVATIONS,
        "relu, tanh, sigmoid or another Keras activation (docs/recipes.md#recipes lists them)",
    )


@dataclass(frozen=True)
class DataConfig:
    batch_size: int = setting("int", 128, _positive, "a positive integer")
    augment: bool = setting("bool", True)
    subset: int | None = setting("int", None, _positive, "a positive number of training images, or null for all", True)
    eval_subset: int | None = setting(
        "int", None, _positive, "a positive number of validation/test images each, or null for all", True
    )
    pipeline: str = setting("str", "auto", lambda v: v in PIPELINES, " / ".join(PIPELINES))


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = setting("str", "sgd", lambda v: v in OPTIMIZERS, OPTIMIZERS)
    learning_rate: float = setting("float", 0.1, _positive, "a positive number")
    momentum: float = setting("float", 0.9, lambda v: 0 <= v < 1, "a number in [0, 1)")
    nesterov: bool = setting("bool", False)
    weight_decay: float = setting("float", 5e-4, _non_negative, "a number >= 0")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = setting("str", "cosine", lambda v: v in SCHEDULES, SCHEDULES)
    warmup_epochs: float = setting("float", 0.0, _non_negative, "a number of epochs >= 0")
    restart_epochs: float = setting("float", 10.0, _positive, "a positive number of epochs (cosine_restarts)")
    step_epochs: tuple[int, ...] = setting(
        "int_list", [60, 120, 160], lambda v: all(e > 0 for e in v), "positive epochs (step)"
    )
    gamma: float = setting("float", 0.2, _positive, "a positive factor (step)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting("int", 200, _positive, "a positive integer")
    seeds: tuple[int, ...] = setting("int_list", [0], lambda v: len(v) > 0 and all(s >= 0 for s in v), "a list of seeds >= 0")
    mixed_precision: str | bool = setting(
        "str_or_bool",
        False,
        lambda v: v in ("auto", True, False),
        "true (mixed_bfloat16), false (float32) or auto (bfloat16 on GPUs that have it)",
    )
    jit_compile: str | bool = setting("str_or_bool", "auto", lambda v: v in ("auto", True, False), "auto, true or false")
    steps_per_execution: str | int = setting(
        "str_or_int",
        "auto",
        lambda v: v == "auto" or v > 0,
        "a positive integer or auto (8 on a GPU with JAX or TensorFlow, else 1)",
    )
    checkpoint_seconds: float = setting(
        "float", 60.0, _non_negative, "seconds between checkpoints, >= 0 (0: after every epoch)"
    )
    deterministic: bool = setting("bool", False)
    distribution: str = setting(
        "str",
        "auto",
        lambda v: v in DISTRIBUTIONS,
        " / ".join(DISTRIBUTIONS) + " (data_parallel: every device shares each global batch; auto: on JAX with "
        "several accelerators and at least 256 images a device)",
    )


@dataclass(frozen=True)
class Config:
    """A resolved run config: made by the schema (from_dict validates every key), read as attributes,
    written as YAML through to_dict()."""

    model: ModelConfig = section(ModelConfig)
    data: DataConfig = section(DataConfig)
    optimizer: OptimizerConfig = section(OptimizerConfig)
    schedule: ScheduleConfig = section(ScheduleConfig)
    loss: str = setting("str", "cross_entropy", lambda v: v in LOSSES, LOSSES)
    train: TrainConfig = section(TrainConfig)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> Config:
        """The Config of a nested dict such as a config.yaml holds: missing keys take their defaults; an
        unknown key or a bad value is a ConfigError naming `source`."""
        return _build(cls, merge(defaults(), values, source, ""))

    def to_dict(self) -> dict:
        """The nested dict of plain values (lists, not tuples) that config.yaml holds, in schema order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def flat(self) -> dict[str, Any]:
        """The config as dotted keys ({"model.width": 16, ...}): parameters for tracking tools."""
        return _flatten(self.to_dict())

    def updated(self, override: dict, source: str = "") -> Config:
        """This config with the partial nested `override` applied, validated."""
        return Config.from_dict(merge(self.to_dict(), override, source, ""))

    def value(self, section: str, key: str) -> Any:
        """The value of ``section.key``, for keys named at run time (the tuner's search space)."""
        return getattr(getattr(self, section), key)

    def experiment(self) -> dict:
        """to_dict() without EXECUTION_KEYS: what two runs must share to be the same experiment."""
        out = self.to_dict()
        for part, key in EXECUTION_KEYS:
            out[part].pop(key)
        return out


def _schema(cls: type) -> dict[str, Any]:
    """The Fields of a config dataclass, nested like its sections: what merge() validates against."""
    return {
        f.name: f.metadata["field"] if "field" in f.metadata else _schema(f.metadata["section"])
        for f in dataclasses.fields(cls)
    }


def _build(cls: Any, values: dict[str, Any]) -> Any:
    """The dataclass `cls` of a validated nested dict (lists become tuples, so a Config is immutable)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = values[f.name]
        kwargs[f.name] = (
            _build(f.metadata["section"], value)
            if "section" in f.metadata
            else tuple(value)
            if isinstance(value, list)
            else value
        )
    return cls(**kwargs)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return list(value) if isinstance(value, tuple) else value


SCHEMA = _schema(Config)

# How a run executes, not what it computes: configs that differ only here are the same experiment, so a
# finished run is kept and a twin reused whatever these say.
EXECUTION_KEYS = (
    ("train", "jit_compile"),
    ("train", "steps_per_execution"),
    ("train", "checkpoint_seconds"),
    ("train", "distribution"),
    ("train", "deterministic"),
)
RECIPE_KEYS = ("name", "description", "report", "base", "variants", "tune")

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
    "max_trials": Field("int", 10, _positive, "a positive integer (hyperband: also limited by its brackets)"),
    "epochs": Field("int", 10, _positive, "a positive number of epochs per trial (hyperband: the most)"),
    "executions_per_trial": Field("int", 1, _positive, "a positive integer (trainings per trial, seeds seed, seed+1, ...)"),
    "seed": Field("int", 1, _positive, "a positive integer (KerasTuner treats 0 as unseeded)"),
    "space": SPACE,  # merged by _merge_space
}


def defaults() -> dict[str, Any]:
    """The built-in configuration, as a plain nested dict."""
    return Config().to_dict()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


KINDS = {  # a Field's kind: whether a value has it, and its name in errors
    "int": (_is_int, "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str_or_bool": (lambda v: isinstance(v, (str, bool)), "a string or boolean"),
    "str_or_int": (lambda v: isinstance(v, str) or _is_int(v), "a string or integer"),
    "int_list": (lambda v: isinstance(v, list) and all(map(_is_int, v)), "a list of integers"),
}


def _coerce(field: Field, value: Any, where: str) -> Any:
    """Return `value` converted to the field's type, or raise ConfigError naming `where`."""
    if value is None and field.nullable:
        return None
    if field.kind == "float" and isinstance(value, str):  # YAML 1.1 reads 5e-4 as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if field.kind == "int_list" and _is_int(value):
        value = [value]
    has_kind, words = KINDS[field.kind]
    if not has_kind(value):
        raise ConfigError(
            f"{where}: expected {words}, got {value!r}" + (f" (allowed: {field.allowed})" if field.allowed else "")
        )
    value = float(value) if field.kind == "float" else value
    if not field.check(value):
        raise ConfigError(f"{where}: {value!r} is not allowed; use {field.allowed}")
    return value


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"width": 16}} -> {"model.width": 16}: a nested config as dotted keys."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge(
    config: dict[str, Any], override: Any, source: str | Path, path: str = "", schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return `config` updated by the partial `override`, validating every key against `schema`
    (default: the SCHEMA section at `path`)."""
    if schema is None:
        schema = SCHEMA
        for part in path.split(".") if path else []:
            schema = schema[part]
    if not isinstance(override, dict):
        raise ConfigError(f"{source}: '{path or 'recipe'}' must be a mapping of keys, got {override!r}")
    out = copy.deepcopy(config)
    for key, value in override.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in schema:
            raise ConfigError(f"{source}: unknown key '{full}'; allowed: {', '.join(schema)}")
        if isinstance(schema[key], Field):
            out[key] = _coerce(schema[key], value, f"{source}: {full}")
        else:
            out[key] = merge(out[key], value, source, full, schema[key])
    return out


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
        choices = [_coerce(field, v, f"{where}[{i}]") for i, v in enumerate(value)]
        if len(set(choices)) < len(choices):
            raise ConfigError(f"{where}: choices repeat in {choices}")
        return choices
    if isinstance(value, dict) and dim.sampling:
        if set(value) != {"min", "max"}:
            raise ConfigError(f"{where}: a range has exactly the keys min and max, got {', '.join(map(str, value))}")
        low, high = (_coerce(field, value[k], f"{where}.{k}") for k in ("min", "max"))
        if not low < high:
            raise ConfigError(f"{where}: min ({low}) must be below max ({high})")
        if dim.sampling == "log" and low <= 0:
            raise ConfigError(
                f"{where}: a range is sampled log-uniformly and needs min > 0; to include 0 give a list of choices"
            )
        return {"min": low, "max": high}
    words = "a non-empty list of choices" + (" or a {min, max} range" if dim.sampling else "")
    raise ConfigError(f"{where}: expected {words}, got {value!r}")


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


SHIPPED_RECIPES = Path(__file__).resolve().parent / "recipes"  # package data: the report's experiments


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
        resolved[vname] = Config.from_dict(merge(base, override or {}, f"{path}: variants.{vname}", ""))
    tune = merge_tune(tune_defaults(), data.get("tune") or {}, path)
    claim = claims.parse(data.get("report"), list(resolved), path)
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
        config = recipe.variants[vname].updated(overrides or {}, "command line")
        if seeds is not None:
            config = config.updated({"train": {"seeds": list(seeds)}}, "--seeds")
        for seed in config.train.seeds:  # each run's config names its own seed only
            runs.append(RunSpec(recipe.name, vname, seed, config.updated({"train": {"seeds": [seed]}})))
    return runs


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
