"""Optimizers by recipe name: the OPTIMIZERS registry (``optimizer.name``), and the optimizer and
learning-rate schedule (schedules.py) a config asks for. Keras is imported when they are built, so
that recipes are checked without it; the Keras classes are in custom_objects.py. A config's sections are
typed Any here: nn sits below the config package and imports nothing of it."""

from __future__ import annotations

from typing import Any

from keras_cifar.core.registry import Registry

OPTIMIZERS = Registry("optimizer")  # factory(config.OptimizerConfig, learning-rate schedule) -> optimizer


@OPTIMIZERS.add("sgd", "SGD with optimizer.momentum and .nesterov; weight decay added to the gradient, as PyTorch does")
def sgd(opt: Any, learning_rate: Any) -> Any:  # opt: a config.OptimizerConfig
    from keras_cifar.nn.custom_objects import SGD

    return SGD(learning_rate=learning_rate, momentum=opt.momentum, nesterov=opt.nesterov, l2=opt.weight_decay, **ema(opt))


@OPTIMIZERS.add("adam", "Adam; weight decay added to the gradient, as PyTorch does")
def adam(opt: Any, learning_rate: Any) -> Any:
    from keras_cifar.nn.custom_objects import Adam

    return Adam(learning_rate=learning_rate, l2=opt.weight_decay, **ema(opt))


@OPTIMIZERS.add("adamw", "AdamW: Keras's decoupled weight decay")
def adamw(opt: Any, learning_rate: Any) -> Any:
    from keras_cifar.nn.custom_objects import AdamW

    return AdamW(learning_rate=learning_rate, weight_decay=opt.weight_decay, **ema(opt))


def ema(opt: Any) -> dict[str, Any]:
    """Keras's own weight averaging for ``optimizer.ema_momentum`` m: after every step each average moves
    to m * average + (1 - m) * weight (Keras's ``use_ema``); {} without one."""
    return {} if opt.ema_momentum is None else {"use_ema": True, "ema_momentum": opt.ema_momentum}


def make_schedule(schedule: Any, learning_rate: float, epochs: int, steps_per_epoch: int) -> Any:
    """The learning-rate schedule of a config's ``schedule`` section (a config.ScheduleConfig)."""
    from keras_cifar.nn.custom_objects import Schedule

    return Schedule(
        schedule.name,
        learning_rate,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=round(schedule.warmup_epochs * steps_per_epoch),
        period_steps=round(schedule.restart_epochs * steps_per_epoch),
        boundaries=[e * steps_per_epoch for e in schedule.step_epochs],
        gamma=schedule.gamma,
    )


def make_optimizer(config: Any, steps_per_epoch: int) -> Any:
    """The optimizer of a config.Config (sections ``optimizer``, ``schedule``, ``train``)."""
    opt = config.optimizer
    lr = make_schedule(config.schedule, opt.learning_rate, config.train.epochs, steps_per_epoch)
    return OPTIMIZERS[opt.name](opt, lr)
