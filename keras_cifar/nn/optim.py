"""Optimizers and learning-rate schedules by recipe name: the OPTIMIZERS registry (``optimizer.name``)
and the SCHEDULES registry (``schedule.name``), stepped per batch. Keras is imported when they are
built, so that recipes are checked without it; the Keras classes are in custom_objects.py."""

import math

from keras_cifar.registry import Registry

OPTIMIZERS = Registry("optimizer")  # factory(config.OptimizerConfig, learning-rate schedule) -> optimizer
SCHEDULES = Registry("schedule")  # f(t, s) -> learning rate, t = steps after warm-up; s: lengths in steps (tensors)


@OPTIMIZERS.add("sgd", "SGD with optimizer.momentum and .nesterov; weight decay added to the gradient, as PyTorch does")
def sgd(opt, learning_rate):
    from keras_cifar.custom_objects import SGD

    return SGD(learning_rate=learning_rate, momentum=opt.momentum, nesterov=opt.nesterov, l2=opt.weight_decay)


@OPTIMIZERS.add("adam", "Adam; weight decay added to the gradient, as PyTorch does")
def adam(opt, learning_rate):
    from keras_cifar.custom_objects import Adam

    return Adam(learning_rate=learning_rate, l2=opt.weight_decay)


@OPTIMIZERS.add("adamw", "AdamW: Keras's decoupled weight decay")
def adamw(opt, learning_rate):
    from keras_cifar.custom_objects import AdamW

    return AdamW(learning_rate=learning_rate, weight_decay=opt.weight_decay)


@SCHEDULES.add("constant", "the learning rate throughout")
def constant(t, s):
    from keras import ops

    return ops.ones_like(t) * s.peak


@SCHEDULES.add(
    "cosine",
    "annealed to 0 along a half cosine over the run, per step; at epoch ends it equals "
    "PyTorch's CosineAnnealingLR(T_max=epochs)",
)
def cosine(t, s):
    from keras import ops

    span = ops.maximum(s.total_steps - s.warmup_steps, 1.0)
    return 0.5 * s.peak * (1.0 + ops.cos(math.pi * ops.minimum(t / span, 1.0)))


@SCHEDULES.add("cosine_restarts", "cosine from the peak to 0 every schedule.restart_epochs")
def cosine_restarts(t, s):
    from keras import ops

    return 0.5 * s.peak * (1.0 + ops.cos(math.pi * ((t % s.period_steps) / s.period_steps)))


@SCHEDULES.add("step", "times schedule.gamma at each of schedule.step_epochs")
def step(t, s):
    from keras import ops

    drops = sum(ops.cast(t + s.warmup_steps >= b, "float32") for b in s.boundaries) if s.boundaries else 0.0
    return s.peak * ops.power(s.gamma, drops)


def make_schedule(schedule, learning_rate, epochs, steps_per_epoch):
    """The learning-rate schedule of a config's ``schedule`` section (a config.ScheduleConfig)."""
    from keras_cifar.custom_objects import Schedule

    return Schedule(
        schedule.name,
        learning_rate,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=round(schedule.warmup_epochs * steps_per_epoch),
        period_steps=round(schedule.restart_epochs * steps_per_epoch),
        boundaries=[e * steps_per_epoch for e in schedule.step_epochs],
        gamma=schedule.gamma,
    )


def make_optimizer(config, steps_per_epoch):
    """The optimizer of a config.Config (sections ``optimizer``, ``schedule``, ``train``)."""
    opt = config.optimizer
    lr = make_schedule(config.schedule, opt.learning_rate, config.train.epochs, steps_per_epoch)
    return OPTIMIZERS[opt.name](opt, lr)
