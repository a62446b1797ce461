"""Fixtures. Tests run under whatever KERAS_BACKEND is set; `tests/run.sh` runs all three.

Tests marked ``backend`` exercise Keras numerics and run on every backend; the rest (config, data
parsing, reports, orchestration) are backend-independent and run under TensorFlow only. Helpers
that are not fixtures live in tests/helpers.py.
"""

import os
from types import SimpleNamespace

import keras
import pytest
from click.testing import CliRunner

from tests.helpers import tiny_recipe, write_jpeg_tree

# A real copy of CIFAR-10 for the one larger test that wants it, read before the fixture below
# clears the variable for every test.
REAL_DATA = os.environ.get("KERAS_CIFAR_DATA")


def pytest_collection_modifyitems(config, items):
    """Tests marked real_data need KERAS_CIFAR_DATA; without it they are deselected, not skipped."""
    if REAL_DATA:
        return
    kept = [item for item in items if "real_data" not in item.keywords]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(autouse=True)
def _seed_everything(tmp_path_factory, monkeypatch):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    monkeypatch.setenv("KERAS_CIFAR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("KERAS_CIFAR_DATA", raising=False)
    yield
    keras.backend.clear_session(free_memory=False)  # the gc.collect of free_memory costs ~0.5 s a test


@pytest.fixture(scope="session")
def jpeg_tree(tmp_path_factory):
    """(path, arrays): a class-folder .tar.gz of JPEG images laid out like the CIFAR-10 JPEG copy,
    64 training and 16 test images per class of learnable synthetic patterns."""
    return write_jpeg_tree(tmp_path_factory.mktemp("jpeg") / "cifar10-tree.tar.gz", 64, 16)


@pytest.fixture
def cli():
    """Invoke the keras-cifar CLI in-process; returns click's Result."""
    from keras_cifar.cli import main

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def trained(tmp_path_factory, jpeg_tree):
    """One small sweep, trained once per backend and shared by the tests that read its run folders:
    `a` (the defaults at width 8), `bf16` (mixed_bfloat16, and 2 steps per execution where the
    backend allows it, on 160 images: bfloat16 is slow on CPUs without it) and `boom` (no BN,
    learning rate 1e12: it diverges), 2 epochs each on the JPEG tree.

    The first `run` is interrupted (Ctrl-C) after the first epoch of `a`; `interrupted` records the
    folder as it was left. The same command again resumes `a` and trains the rest. Returns out (the
    OUT root), recipe, data, first and output (what the two runs printed) and exit_code (the second's)."""
    from keras_cifar import train
    from keras_cifar.cli import main
    from keras_cifar.runs import RunFolder

    tmp = tmp_path_factory.mktemp("trained")
    spe = ", steps_per_execution: 2" if keras.backend.backend() != "torch" else ""
    recipe = tiny_recipe(tmp, "  a: {}\n  bf16: {train: {mixed_precision: true" + spe + "}, data: {subset: 160}}\n"
                         "  boom: {optimizer: {learning_rate: 1.0e+12}, model: {batch_norm: false}}\n",
                         extra_base="  optimizer: {learning_rate: 0.05}\n")
    args = ["run", str(recipe), "--data", str(jpeg_tree[0]), "--out", str(tmp / "out"), "--epochs", "2"]
    record = train.Recorder.on_epoch_end

    def ctrl_c_after_one_epoch(self, epoch, logs=None):
        record(self, epoch, logs)
        raise KeyboardInterrupt

    folder = RunFolder(tmp / "out" / "tiny" / "a" / "seed0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KERAS_CIFAR_CACHE", str(tmp / "cache"))
        mp.setattr(train.Recorder, "on_epoch_end", ctrl_c_after_one_epoch)
        first = CliRunner().invoke(main, args, catch_exceptions=False)
        interrupted = SimpleNamespace(exit_code=first.exit_code, history=folder.read_history(),
                                      checkpoint=folder.checkpoint()[1], metrics=folder.read_metrics())
        mp.setattr(train.Recorder, "on_epoch_end", record)
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    return SimpleNamespace(out=tmp / "out", recipe=recipe, data=jpeg_tree[0], first=first.output,
                           interrupted=interrupted, output=result.output, exit_code=result.exit_code)
