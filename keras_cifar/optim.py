"""Optimizers and learning-rate schedules by recipe section, stepped per batch."""

import math

import keras
from keras import ops


class _CoupledL2:
    """Weight decay as PyTorch's SGD/Adam apply it: ``l2 * w`` is added to every gradient before the
    update, so momentum carries it (Keras's own ``weight_decay`` is decoupled, like AdamW's)."""

    def __init__(self, l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.l2 = l2

    def apply(self, grads, trainable_variables=None):
        if self.l2:
            variables = trainable_variables if trainable_variables is not None else self._trainable_variables
            grads = [g if g is None else g + ops.cast(self.l2 * v, g.dtype) for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable("keras_cifar")
class SGD(_CoupledL2, keras.optimizers.SGD):
    pass


@keras.saving.register_keras_serializable("keras_cifar")
class Adam(_CoupledL2, keras.optimizers.Adam):
    pass


@keras.saving.register_keras_serializable("keras_cifar")
class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at a training step: constant, cosine, cosine with warm restarts or step decay,
    after an optional linear warm-up from 0. Lengths are in steps (batches).

    ``cosine`` anneals from ``peak`` to 0 over ``total_steps``; at epoch ends it equals PyTorch's
    CosineAnnealingLR(T_max=epochs) stepped per epoch.
    """

    def __init__(self, name, peak, total_steps, warmup_steps=0, period_steps=1, boundaries=(), gamma=0.1):
        self.name = name
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.period_steps = max(1, int(period_steps))
        self.boundaries = [int(b) for b in boundaries]
        self.gamma = float(gamma)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        t = ops.maximum(step - self.warmup_steps, 0.0)  # position after warm-up
        if self.name == "constant":
            lr = ops.ones_like(t) * self.peak
        elif self.name == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            lr = 0.5 * self.peak * (1.0 + ops.cos(math.pi * ops.minimum(t / span, 1.0)))
        elif self.name == "cosine_restarts":
            phase = (t % self.period_steps) / self.period_steps
            lr = 0.5 * self.peak * (1.0 + ops.cos(math.pi * phase))
        elif self.name == "step":
            drops = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
            lr = self.peak * ops.power(self.gamma, drops)
        else:
            raise ValueError(f"unknown schedule {self.name!r}")
        if self.warmup_steps:
            lr = ops.where(step < self.warmup_steps, self.peak * step / self.warmup_steps, lr)
        return lr

    def get_config(self):
        return {
            "name": self.name, "peak": self.peak, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps, "period_steps": self.period_steps,
            "boundaries": self.boundaries, "gamma": self.gamma,
        }


def make_schedule(schedule, learning_rate, epochs, steps_per_epoch):
    """The Schedule for a recipe's ``schedule`` section."""
    return Schedule(
        schedule["name"], learning_rate,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=round(schedule["warmup_epochs"] * steps_per_epoch),
        period_steps=round(schedule["restart_epochs"] * steps_per_epoch),
        boundaries=[e * steps_per_epoch for e in schedule["step_epochs"]],
        gamma=schedule["gamma"],
    )


def make_optimizer(config, steps_per_epoch):
    """The optimizer for a resolved config (sections ``optimizer``, ``schedule``, ``train``)."""
    opt = config["optimizer"]
    lr = make_schedule(config["schedule"], opt["learning_rate"], config["train"]["epochs"], steps_per_epoch)
    if opt["name"] == "sgd":
        return SGD(learning_rate=lr, momentum=opt["momentum"], nesterov=opt["nesterov"], l2=opt["weight_decay"])
    if opt["name"] == "adam":
        return Adam(learning_rate=lr, l2=opt["weight_decay"])
    if opt["name"] == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=opt["weight_decay"])
    raise ValueError(f"unknown optimizer {opt['name']!r}")
