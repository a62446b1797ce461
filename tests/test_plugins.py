"""Plug-ins: a loss, a schedule or a data format is added by one registration beside its code, and
recipes, --data, error messages and --help accept and list it."""

import contextlib

import keras
import numpy as np
import pytest

from keras_cifar import config as cfg
from keras_cifar.core.errors import ConfigError
from keras_cifar.data import sources as data
from keras_cifar.data.formats import FORMATS
from keras_cifar.nn.losses import LOSSES, get_loss
from keras_cifar.nn.optim import OPTIMIZERS, make_schedule
from keras_cifar.nn.schedules import SCHEDULES
from tests.helpers import REPO, as_numpy, tiny_recipe


@contextlib.contextmanager
def registered(registry, name, help, factory):
    """What a plug-in's module does once, `@registry.add(name, help)`, undone after the test."""
    registry.add(name, help)(factory)
    try:
        yield
    finally:
        del registry.entries[name]


def test_a_toy_loss_is_accepted_by_recipes_and_built(tmp_path):
    def half_cross_entropy():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="half_cross_entropy")

    path = tiny_recipe(tmp_path, "  a: {loss: half_cross_entropy}\n")
    with pytest.raises(ConfigError, match="'half_cross_entropy' is not allowed; use cross_entropy / multi_margin"):
        cfg.load_recipe(path)
    with registered(LOSSES, "half_cross_entropy", "a toy", half_cross_entropy):
        config = cfg.load_recipe(path).variants["a"]
        assert get_loss(config.loss).name == "half_cross_entropy"
        assert "half_cross_entropy (a toy)" in LOSSES.help()


def test_a_toy_schedule_drives_the_learning_rate(tmp_path):
    def linear(t, s):
        return s.peak * keras.ops.maximum(1.0 - t / s.total_steps, 0.0)

    with registered(SCHEDULES, "linear", "down to 0 in a straight line", linear):
        config = cfg.load_recipe(tiny_recipe(tmp_path, "  a: {schedule: {name: linear}}\n")).variants["a"]
        schedule = make_schedule(config.schedule, 0.1, epochs=4, steps_per_epoch=5)
        assert [round(float(as_numpy(schedule(s))), 6) for s in (0, 10, 20)] == [0.1, 0.05, 0.0]


def test_a_toy_data_format_is_read_and_listed(tmp_path):
    def npz(path, files):
        if "cifar.npz" not in files:
            return None
        import io

        with np.load(io.BytesIO(files["cifar.npz"]())) as z:
            return tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))

    cifar = data.synthetic(50, 20)
    (tmp_path / "copy").mkdir()
    np.savez(
        tmp_path / "copy" / "cifar.npz", x_train=cifar.x_train, y_train=cifar.y_train, x_test=cifar.x_test, y_test=cifar.y_test
    )
    with pytest.raises(data.DataError, match="no CIFAR-10 copy found in it"):
        data.load(tmp_path / "copy")
    with registered(FORMATS, "npz", "cifar.npz with x_train, y_train, x_test, y_test", npz):
        got = data.load(tmp_path / "copy")
        np.testing.assert_array_equal(got.x_test, cifar.x_test[np.argsort(cifar.y_test, kind="stable")])  # class by class
        assert "(binary / python / images / npz)" in data.accepted()


def test_every_plugin_is_in_run_help_and_the_docs(cli):
    help_text = " ".join(cli("run", "--help").output.split())
    page = (REPO / "docs" / "recipes.md").read_text()
    for registry in (LOSSES, OPTIMIZERS, SCHEDULES, FORMATS):
        for name in registry:
            assert name in help_text, name
            assert f"`{name}`" in page, name
