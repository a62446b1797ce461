"""Learning-rate schedules and PyTorch-style coupled weight decay, on every backend."""

import math

import keras
import numpy as np
import pytest

from keras_cifar.config import Config
from keras_cifar.nn.custom_objects import SGD
from keras_cifar.nn.optim import make_optimizer, make_schedule
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


# torch.optim.SGD (momentum 0.9, weight decay 5e-4) with CosineAnnealingLR stepped per batch, 200 steps on a
# least-squares problem, in a process of its own: PyTorch's import crashes a process that imported TensorFlow.
TORCH_SGD = """
import json, sys, numpy as np, torch
rng = np.random.default_rng(0)
a, b, w0 = rng.normal(size=(16, 10)), rng.normal(size=16), rng.normal(size=10).astype("float32")
out = {}
for nesterov in (False, True):
    p = torch.nn.Parameter(torch.tensor(w0))
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=200)
    for _ in range(200):
        w = p.detach().numpy().astype("float64")
        p.grad = torch.tensor((a.T @ (a @ w - b) / 16).astype("float32"))
        sgd.step()
        schedule.step()
    out[str(nesterov)] = p.detach().numpy().tolist()
json.dump({"w0": w0.tolist(), **out}, sys.stdout)
"""


@pytest.fixture(scope="module")
def torch_sgd():
    import json
    import subprocess
    import sys

    return json.loads(subprocess.run([sys.executable, "-c", TORCH_SGD], capture_output=True, text=True, check=True).stdout)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_updates_as_pytorch_sgd_under_a_cosine_schedule(nesterov, torch_sgd):
    """optimizer.name sgd against torch.optim.SGD (TORCH_SGD) on the same problem and gradients. Keras's
    SGD keeps the rate inside its momentum buffer, which agrees only at a constant rate (this fails on the
    previous main)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(16, 10)), rng.normal(size=16)
    w0 = np.array(torch_sgd["w0"], "float32")
    config = Config.from_dict({"optimizer": {"nesterov": nesterov}, "train": {"epochs": 200}})
    ours, v = make_optimizer(config, steps_per_epoch=1), keras.Variable(w0)
    ours.build([v])
    for _ in range(200):
        w = as_numpy(v).astype("float64")
        ours.apply([keras.ops.convert_to_tensor((a.T @ (a @ w - b) / 16).astype("float32"))], [v])
    np.testing.assert_allclose(as_numpy(v), torch_sgd[str(nesterov)], atol=1e-6)
    assert np.abs(as_numpy(v) - w0).max() > 0.1  # it moved


def test_a_checkpoint_of_the_keras_form_of_sgd_is_known_as_such():
    """keras-cifar 0.2 saved SGD without `torch_form`: it loads in Keras's form, which resume refuses."""
    config = SGD(learning_rate=0.1, momentum=0.9).get_config()
    assert config["torch_form"] is True and SGD.from_config(config).keras_form is False
    del config["torch_form"]
    assert SGD.from_config(config).keras_form is True
