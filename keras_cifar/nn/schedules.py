"""Learning-rate schedules by recipe name: the SCHEDULES registry (``schedule.name``), stepped per
batch. Each is a function of the step t (after warm-up) and the schedule's lengths in steps, written
with keras.ops, which is imported when a schedule is first computed (recipes are checked without
Keras); custom_objects.Schedule calls them."""

from __future__ import annotations

import math
from typing import Any

from keras_cifar.core.registry import Registry

SCHEDULES = Registry("schedule")  # f(t, s) -> learning rate, t = steps after warm-up; s: lengths in steps (tensors)
# t is a tensor; s a custom_objects.Schedule, or the _Lengths that read its variable: both Any here.


@SCHEDULES.add("constant", "the learning rate throughout")
def constant(t: Any, s: Any) -> Any:
    from keras import ops

    return ops.ones_like(t) * s.peak


@SCHEDULES.add(
    "cosine",
    "annealed to 0 along a half cosine over the run, per step; at epoch ends it equals "
    "PyTorch's CosineAnnealingLR(T_max=epochs)",
)
def cosine(t: Any, s: Any) -> Any:
    from keras import ops

    span = ops.maximum(s.total_steps - s.warmup_steps, 1.0)
    return 0.5 * s.peak * (1.0 + ops.cos(math.pi * ops.minimum(t / span, 1.0)))


@SCHEDULES.add("cosine_restarts", "cosine from the peak to 0 every schedule.restart_epochs")
def cosine_restarts(t: Any, s: Any) -> Any:
    from keras import ops

    return 0.5 * s.peak * (1.0 + ops.cos(math.pi * ((t % s.period_steps) / s.period_steps)))


@SCHEDULES.add("step", "times schedule.gamma at each of schedule.step_epochs")
def step(t: Any, s: Any) -> Any:
    from keras import ops

    drops = sum(ops.cast(t + s.warmup_steps >= b, "float32") for b in s.boundaries) if s.boundaries else 0.0
    return s.peak * ops.power(s.gamma, drops)
