"""The Keras classes of ours that a compiled model holds, so that a saved ``.keras`` file refers to
them by name (``keras_cifar>...``): PyTorch's MultiMarginLoss, SGD and Adam with PyTorch-style weight
decay, and the per-step learning-rate schedule. The recipe names that choose them, and their
factories, are in losses.py, optim.py and schedules.py, which import this module only when a model is built.
``save`` writes a model or checkpoint with the state of its random generators, and ``load`` reads any
``.keras`` file of ours (model, checkpoint), every class it may name registered."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

# A .keras archive holds the weights and the optimizer's variables, not the state of the model's random
# generators (keras.random.SeedGenerator: the augmentation's): save adds them, so that a resumed run draws
# what the uninterrupted one would have drawn.
RANDOM_STATE = "random_state.json"

if TYPE_CHECKING:  # the mixins below (_ScheduleSteps, _CoupledL2) join Keras optimizers, untyped: Any to mypy
    _Optimizer = Any
else:
    _Optimizer = object


def random_state(model: keras.Model) -> list[Any]:
    """The variables of the model's random generators: its variables that are not weights."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def save(model: keras.Model, path: str | Path) -> None:
    """``model.save(path)``, with the state of the model's random generators added to the archive."""
    model.save(path)
    state = [np.asarray(ops.convert_to_numpy(v.value)).tolist() for v in random_state(model)]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(RANDOM_STATE, json.dumps(state))


def load(path: str | Path, compile: bool = True) -> keras.Model:
    """A saved keras-cifar model or checkpoint, with ``safe_mode`` on (no code from the file is run), its
    random generators where ``save`` left them. Registers our layers, initializer, losses, optimizers
    and schedule first: a process that built no model (a resumed run, export, predict) has not
    imported them yet."""
    from keras_cifar.nn import resnet as models  # noqa: F401  (their decorators register the classes)

    model = keras.saving.load_model(path, safe_mode=True, compile=compile)
    with zipfile.ZipFile(path) as archive:
        saved = json.loads(archive.read(RANDOM_STATE)) if RANDOM_STATE in archive.namelist() else []
    for variable, value in zip(random_state(model), saved):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return model


@keras.saving.register_keras_serializable("keras_cifar")
class SmoothedCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy of integer labels smoothed by `label_smoothing` s: Keras's categorical
    cross-entropy of the one-hot labels with its label_smoothing (Keras's sparse loss has none), that is
    against 1 - s + s/C on the label's class and s/C on the others."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "cross_entropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.cast(y_pred, "float32")
        onehot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), y_pred.shape[-1], dtype="float32")
        return keras.losses.categorical_crossentropy(onehot, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable("keras_cifar")
class MultiMarginLoss(keras.losses.Loss):
    """PyTorch ``nn.MultiMarginLoss`` (p=1): mean over the C classes of max(0, margin - x[y] + x[i]), i != y.

    ``y_true`` holds integer labels, ``y_pred`` raw logits.
    """

    def __init__(self, margin: float = 1.0, name: str = "multi_margin", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.cast(y_pred, "float32")
        classes = y_pred.shape[-1]
        onehot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes, dtype="float32")
        correct = ops.sum(y_pred * onehot, axis=-1, keepdims=True)
        margins = ops.maximum(0.0, self.margin - correct + y_pred) * (1.0 - onehot)
        return ops.sum(margins, axis=-1) / classes

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}


def _replicas() -> int:
    """How many replicas' gradients TensorFlow's distribution strategy sums (1 elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class _ScheduleSteps(_Optimizer):
    """An optimizer whose learning-rate Schedule reads its lengths in steps (total, warm-up, period) from
    one of the optimizer's variables instead of Python numbers. A compiled training step then takes
    them as state rather than constants, so one program serves runs of any number of epochs (a bench
    and then the run, on JAX a program in the compilation cache). ``last_rate`` is the rate its last
    step used."""

    def build(self, variables: list[Any]) -> None:
        super().build(variables)
        if isinstance(self._learning_rate, Schedule) and self._learning_rate.steps is None:
            # Initialized with the values (TensorFlow may build the optimizer while tracing a step, where an
            # assign would be left in that trace's graph).
            self._learning_rate.steps = self.add_variable(
                (3,), keras.initializers.Constant(self._learning_rate.lengths()), "float32", name="schedule_steps"
            )

    def last_rate(self) -> float:
        """The learning rate of the step before ``iterations`` (the last one taken), as a float."""
        rate = self._learning_rate
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(ops.maximum(self.iterations - 1, 0))
        return float(ops.convert_to_numpy(rate))


class _CoupledL2(_Optimizer):
    """Weight decay as PyTorch's SGD/Adam apply it: ``l2 * w`` is added to every gradient before the
    update, so momentum carries it (Keras's own ``weight_decay`` is decoupled, like AdamW's). Under a
    TensorFlow distribution strategy each replica adds its share, since the replicas' gradients are
    summed after this."""

    def __init__(self, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.l2 = l2

    def apply(self, grads: list[Any], trainable_variables: list[Any] | None = None) -> Any:
        if self.l2:
            variables = trainable_variables if trainable_variables is not None else self._trainable_variables
            l2 = self.l2 / _replicas()
            grads = [g if g is None else g + ops.cast(l2 * v, g.dtype) for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable("keras_cifar")
class SGD(_CoupledL2, _ScheduleSteps, keras.optimizers.SGD):
    """``torch.optim.SGD`` (dampening 0): the buffer b = momentum * b + g holds gradients, and the step is
    w -= lr * b (nesterov: lr * (g + momentum * b)). Keras's SGD keeps the rate inside its buffer
    (m = momentum * m - lr * g; w += m), which agrees only while the rate is constant: under a schedule
    every step differs. Checkpoints of keras-cifar 0.2 (Keras's form) load with ``keras_form`` set, so
    that a run is not resumed in the other form (train.py refuses them)."""

    def __init__(self, *args: Any, keras_form: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keras_form = keras_form

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> SGD:
        config = dict(config)
        config["keras_form"] = not config.pop("torch_form", False)
        return super().from_config(config, custom_objects)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if not self.momentum or self.keras_form:
            return super().update_step(gradient, variable, learning_rate)
        buffer = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        self.assign(buffer, ops.add(ops.multiply(buffer, momentum), gradient))
        step = ops.add(gradient, ops.multiply(buffer, momentum)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(step, ops.cast(learning_rate, variable.dtype)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "torch_form": not self.keras_form}


@keras.saving.register_keras_serializable("keras_cifar")
class Adam(_CoupledL2, _ScheduleSteps, keras.optimizers.Adam):
    pass


@keras.saving.register_keras_serializable("keras_cifar")
class AdamW(_ScheduleSteps, keras.optimizers.AdamW):
    pass


@keras.saving.register_keras_serializable("keras_cifar")
class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at a training step: the registered schedule `name` (schedules.SCHEDULES) after an
    optional linear warm-up from 0. Lengths are in steps (batches); once an optimizer holds the
    schedule, `steps` is its variable of them (_ScheduleSteps) and the schedule reads that."""

    def __init__(
        self,
        name: str,
        peak: float,
        total_steps: int,
        warmup_steps: int = 0,
        period_steps: int = 1,
        boundaries: Iterable[int] = (),
        gamma: float = 0.1,
    ) -> None:
        self.name = name
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.period_steps = max(1, int(period_steps))
        self.boundaries = [int(b) for b in boundaries]
        self.gamma = float(gamma)
        self.steps: Any = None  # the optimizer's variable of the lengths, once one holds the schedule

    def lengths(self) -> list[int]:
        return [self.total_steps, self.warmup_steps, self.period_steps]

    def __call__(self, step: Any) -> Any:
        from keras_cifar.nn.schedules import SCHEDULES

        step = ops.cast(step, "float32")
        s = self if self.steps is None else _Lengths(self, *(self.steps[i] for i in range(3)))
        lr = SCHEDULES[self.name](ops.maximum(step - s.warmup_steps, 0.0), s)
        if self.warmup_steps:
            lr = ops.where(step < s.warmup_steps, self.peak * step / ops.maximum(s.warmup_steps, 1.0), lr)
        return lr

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "period_steps": self.period_steps,
            "boundaries": self.boundaries,
            "gamma": self.gamma,
        }


class _Lengths:
    """What a schedule function reads of a Schedule, its lengths in steps taken from its variable."""

    def __init__(self, schedule: Schedule, total_steps: Any, warmup_steps: Any, period_steps: Any) -> None:
        self.peak, self.boundaries, self.gamma = schedule.peak, schedule.boundaries, schedule.gamma
        self.total_steps, self.warmup_steps, self.period_steps = total_steps, warmup_steps, period_steps
