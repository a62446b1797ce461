"""Learning-rate schedules and PyTorch-style coupled weight decay, on every backend."""

import math

import keras
import numpy as np
import pytest

from keras_cifar.config import Config
from keras_cifar.custom_objects import SGD
from keras_cifar.optim import make_optimizer, make_schedule
from tests.helpers import as_numpy

pytestmark = pytest.mark.backend


def _lr(schedule, step):
    return float(as_numpy(schedule(step)))


def _section(**kw):
    return Config.from_dict({"schedule": kw}).schedule


def test_cosine_equals_pytorch_cosine_annealing_at_epoch_ends():
    epochs, steps = 10, 7
    schedule = make_schedule(_section(name="cosine"), 0.1, epochs, steps)
    for e in range(epochs + 1):  # CosineAnnealingLR(T_max=epochs) after e scheduler steps
        assert _lr(schedule, e * steps) == pytest.approx(0.05 * (1 + math.cos(math.pi * e / epochs)), abs=1e-6)
    assert _lr(schedule, 3) < _lr(schedule, 2)  # annealed per step, not per epoch


def test_constant_step_restarts_and_warmup():
    assert _lr(make_schedule(_section(name="constant"), 0.1, 10, 5), 37) == pytest.approx(0.1)
    step = make_schedule(_section(name="step", step_epochs=[2, 4], gamma=0.1), 0.1, 6, 5)
    assert [round(_lr(step, s), 6) for s in (9, 10, 19, 20)] == [0.1, 0.01, 0.01, 0.001]
    restarts = make_schedule(_section(name="cosine_restarts", restart_epochs=2), 0.1, 6, 5)
    assert _lr(restarts, 10) == pytest.approx(0.1) and _lr(restarts, 5) == pytest.approx(0.05, abs=1e-6)
    warm = make_schedule(_section(name="cosine", warmup_epochs=1), 0.1, 5, 4)
    assert [_lr(warm, s) for s in (0, 2)] == pytest.approx([0.0, 0.05])
    assert _lr(warm, 4) == pytest.approx(0.1) and _lr(warm, 20) == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_is_added_to_the_gradient_like_pytorch_sgd():
    v = keras.Variable(np.ones(3, "float32"))
    opt = SGD(learning_rate=0.1, momentum=0.9, l2=0.5)
    opt.build([v])
    for _ in range(2):
        opt.apply([keras.ops.zeros(3)], [v])
    # torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.5) from w=1 with zero loss gradient:
    # g1=0.5, buf=0.5, w=0.95; g2=0.475, buf=0.925, w=0.8575
    np.testing.assert_allclose(as_numpy(v), 0.8575, rtol=1e-6)


def test_make_optimizer_by_name():
    config = Config.from_dict({"train": {"epochs": 2}})
    sgd = make_optimizer(config, steps_per_epoch=10)
    assert isinstance(sgd, SGD) and sgd.momentum == 0.9 and sgd.l2 == 5e-4
    assert isinstance(make_optimizer(config.updated({"optimizer": {"name": "adamw"}}), 10), keras.optimizers.AdamW)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(sgd))
    assert isinstance(restored, SGD) and restored.l2 == 5e-4


def test_a_built_optimizer_holds_the_schedules_lengths_as_a_variable():
    """A compiled step reads the run's length as state, so one program serves runs of any length."""
    schedule = make_schedule(_section(name="cosine"), 0.1, 10, 7)
    optimizer = SGD(learning_rate=schedule, momentum=0.9)
    optimizer.build([keras.Variable(np.ones(3, "float32"))])
    assert "schedule_steps" in [v.name for v in optimizer.variables]
    np.testing.assert_array_equal(as_numpy(schedule.steps), [70, 0, 70])  # total, warm-up, restart period
    assert _lr(schedule, 35) == pytest.approx(0.05, abs=1e-6)
    schedule.steps.assign([140.0, 0.0, 70.0])  # twice as long: read at the step, not built in
    assert _lr(schedule, 35) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)), abs=1e-6)
