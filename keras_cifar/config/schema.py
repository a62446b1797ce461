"""The typed config: the recipe schema.

A run's resolved config is a ``Config``: frozen dataclasses, one per section, whose fields are the
recipe schema (each field's Field says its kind, default and what is allowed). Code reads it as
attributes (``config.model.width``); ``Config.from_dict`` validates a nested dict (a recipe's sections,
a config.yaml) and ``to_dict`` gives one back for YAML.

The values a key allows by name are the plug-ins that nn/ registers (networks, losses, optimizers,
schedules), so the config stands above nn/ and below what trains and reports. Every key is validated;
an unknown key, a wrong type or a bad value raises ``ConfigError`` with a
one-line message that names the file and the key and says what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_cifar.core.errors import ConfigError
from keras_cifar.data.tta import TTA_VIEWS
from keras_cifar.nn.losses import LOSSES
from keras_cifar.nn.networks import MODELS
from keras_cifar.nn.optim import OPTIMIZERS
from keras_cifar.nn.schedules import SCHEDULES

DISTRIBUTIONS = ("auto", "none", "data_parallel")  # train.distribution (training/cluster.py)


def _anything(v: Any) -> bool:
    return True


@dataclass(frozen=True)
class Field:
    kind: str  # a key of KINDS
    default: Any
    check: Callable[[Any], bool] = _anything
    allowed: Any = ""  # human words for what passes `check` (a Registry: its names)
    nullable: bool = False


def positive(v: Any) -> bool:
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
FLIPS = ("random", "alternating")  # data.flip (data/pipelines.py)
TTA_MODES = tuple(TTA_VIEWS)  # eval.tta: none, flip, flip_translate (data/tta.py)


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
    width: int = setting("int", 64, positive, "a positive integer (the report's Channel1; 64 is ResNet-18)")
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
    batch_size: int = setting("int", 128, positive, "a positive integer")
    augment: bool = setting("bool", True)
    subset: int | None = setting("int", None, positive, "a positive number of training images, or null for all", True)
    eval_subset: int | None = setting(
        "int", None, positive, "a positive number of validation/test images each, or null for all", True
    )
    pipeline: str = setting("str", "auto", lambda v: v in PIPELINES, " / ".join(PIPELINES))
    flip: str = setting(
        "str",
        "random",
        lambda v: v in FLIPS,
        "random (each image flipped with probability 1/2 at every epoch) or alternating (each image flipped at "
        "random in epoch 0, then every other epoch: airbench's alternating flip)",
    )


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = setting("str", "sgd", lambda v: v in OPTIMIZERS, OPTIMIZERS)
    learning_rate: float = setting("float", 0.1, positive, "a positive number")
    momentum: float = setting("float", 0.9, lambda v: 0 <= v < 1, "a number in [0, 1)")
    nesterov: bool = setting("bool", False)
    weight_decay: float = setting("float", 5e-4, _non_negative, "a number >= 0")
    ema_momentum: float | None = setting(
        "float",
        None,
        lambda v: 0 < v < 1,
        "a number in (0, 1): evaluate with an exponential moving average of the weights, updated every step "
        "(Keras's use_ema); null: no average",
        True,
    )


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = setting("str", "cosine", lambda v: v in SCHEDULES, SCHEDULES)
    warmup_epochs: float = setting("float", 0.0, _non_negative, "a number of epochs >= 0")
    restart_epochs: float = setting("float", 10.0, positive, "a positive number of epochs (cosine_restarts)")
    step_epochs: tuple[int, ...] = setting(
        "int_list", [60, 120, 160], lambda v: all(e > 0 for e in v), "positive epochs (step)"
    )
    gamma: float = setting("float", 0.2, positive, "a positive factor (step)")


@dataclass(frozen=True)
class LossOptions:
    label_smoothing: float = setting(
        "float", 0.0, lambda v: 0 <= v < 1, "a number in [0, 1): the share of each label spread evenly over the classes"
    )


@dataclass(frozen=True)
class EvalConfig:
    tta: str = setting(
        "str",
        "none",
        lambda v: v in TTA_MODES,
        "none, flip (the mean of the logits of each image and its mirror) or flip_translate (and of both moved by "
        "one pixel up-left and down-right)",
    )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting("int", 200, positive, "a positive integer")
    epoch_fraction: float = setting(
        "float",
        1.0,
        lambda v: 0 < v <= 1,
        "a number in (0, 1]: train that share of train.epochs, as given after the command line (--epochs): "
        "fast.yaml's half-length variant",
    )
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
    loss_options: LossOptions = section(LossOptions)
    eval: EvalConfig = section(EvalConfig)
    train: TrainConfig = section(TrainConfig)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> Config:
        """The Config of a nested dict such as a config.yaml holds: missing keys take their defaults; an
        unknown key or a bad value is a ConfigError naming `source`."""
        return _checked(_build(cls, merge(defaults(), values, source, "")), source)

    def to_dict(self) -> dict:
        """The nested dict of plain values (lists, not tuples) that config.yaml holds, in schema order."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def flat(self) -> dict[str, Any]:
        """The config as dotted keys ({"model.width": 16, ...}): parameters for tracking tools."""
        return _flatten(self.to_dict())

    def updated(self, override: dict, source: str = "") -> Config:
        """This config with the partial nested `override` applied, validated; an error names `source`."""
        return Config.from_dict(merge(self.to_dict(), override, source, ""), source or "config")

    def value(self, section: str, key: str) -> Any:
        """The value of ``section.key``, for keys named at run time (the tuner's search space)."""
        return getattr(getattr(self, section), key)

    def experiment(self) -> dict:
        """to_dict() without EXECUTION_KEYS: what two runs must share to be the same experiment."""
        out = self.to_dict()
        for part, key in EXECUTION_KEYS:
            out[part].pop(key)
        return out


def _checked(config: Config, source: str) -> Config:
    """`config`, once the keys that depend on each other agree; else a ConfigError naming `source`."""
    if config.loss_options.label_smoothing and config.loss != "cross_entropy":
        raise ConfigError(
            f"{source}: loss_options.label_smoothing applies to the cross_entropy loss only, not {config.loss}; "
            "set it to 0 or use loss: cross_entropy"
        )
    if config.data.flip != "random" and not config.data.augment:
        raise ConfigError(f"{source}: data.flip: {config.data.flip} needs data.augment: true (it flips training images)")
    return config


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


def coerce(field: Field, value: Any, where: str) -> Any:
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
            out[key] = coerce(schema[key], value, f"{source}: {full}")
        else:
            out[key] = merge(out[key], value, source, full, schema[key])
    return out
