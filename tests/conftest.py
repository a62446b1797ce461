"""Fixtures. Tests run under whatever KERAS_BACKEND is set; `tests/run.sh` runs all three.

Tests marked ``backend`` exercise Keras numerics and run on every backend; the rest (config, data
parsing, reports, orchestration) are backend-independent and run under TensorFlow only. Helpers
that are not fixtures live in tests/helpers.py.
"""

import errno
import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest
from click.testing import CliRunner

from tests.helpers import Command, tiny_recipe, write_jpeg_tree

# A real copy of CIFAR-10 for the one larger test that wants it, read before the fixture below
# clears the variable for every test.
REAL_DATA = os.environ.get("KERAS_CIFAR_DATA")


def pytest_collection_modifyitems(config, items):
    """Tests marked real_data need KERAS_CIFAR_DATA; without it they are deselected, not skipped. The first
    test to ask for the `trained` sweep trains it in its set-up (two minutes on an idle 2-core CPU): those
    tests get twice the usual timeout, so that the sweep's time is not taken for a hang."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(600))
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
    """One small sweep, trained through the installed `keras-cifar` once per backend and read by the
    tests of training: `a` (the defaults at width 8, 8 epochs on 320 images, with every trick of
    recipes/tricks.yaml that changes training or evaluation: alternating flip, weight averaging, label
    smoothing and flip TTA, so that stopping and resuming covers them too), `bf16` (what a GPU takes by
    default: mixed_bfloat16, and where the backend allows them 8 steps per execution, more than its 5
    steps an epoch, and XLA compilation; on 160 images) and `boom` (no BN, learning rate 1e12: it
    diverges), 2 epochs each, on the JPEG tree.

    `a` is stopped three times, as users' runs are: SIGKILL once its first epoch is checkpointed,
    then SIGTERM and SIGINT, each after an epoch of a resumed run that checkpoints only hourly (so
    what the signal itself writes keeps that epoch). The same command then finishes the sweep.
    `stops` holds, per stop, the signal, exit code and output, and the history rows and newest
    checkpoint of `a` right after it; `output` and `exit_code` are the last command's. `straight` is
    the folder of `a` trained again by the same command without a stop, into another OUT."""
    from keras_cifar.training.runs import RunFolder

    tmp = tmp_path_factory.mktemp("trained")
    spe = ", steps_per_execution: 8, jit_compile: true" if keras.backend.backend() != "torch" else ""
    recipe = tiny_recipe(
        tmp,
        "  a: {train: {epochs: 8}, data: {subset: 320, flip: alternating}, optimizer: {ema_momentum: 0.9},\n"
        "      loss_options: {label_smoothing: 0.1}, eval: {tta: flip}}\n"
        "  bf16: {train: {epochs: 2, mixed_precision: true" + spe + "}, data: {subset: 160}}\n"
        "  boom: {train: {epochs: 2}, optimizer: {learning_rate: 1.0e+12}, model: {batch_norm: false}}\n",
        extra_base="  optimizer: {learning_rate: 0.05}\n",
    )
    args = ["run", recipe, "--data", jpeg_tree[0], "--out", tmp / "out"]
    hourly = ["--set", "train.checkpoint_seconds=3600"]
    folder = RunFolder(tmp / "out" / "tiny" / "a" / "seed0")
    stops = []
    for signum, extra in ((signal.SIGKILL, []), (signal.SIGTERM, hourly), (signal.SIGINT, hourly)):
        command = Command(*args, *extra)
        resumed = int(command.wait_for(r"resuming after epoch \d+").split()[-1]) if stops else 0
        command.wait_for(rf"tiny/a/seed0 epoch +{resumed + 1}/8")
        code = command.stop(signum)
        stops.append(
            SimpleNamespace(
                signal=signum,
                exit_code=code,
                output=command.output,
                resumed=resumed,
                history=folder.read_history(),
                checkpoint=folder.checkpoint()[1],
                files=sorted(p.name for p in folder.path.iterdir()),
            )
        )
    last = Command(*args)
    exit_code = last.finish()
    straight = Command(*args[:-1], tmp / "straight", "--variants", "a")
    assert straight.finish() == 0, straight.output
    return SimpleNamespace(
        out=tmp / "out",
        recipe=recipe,
        data=jpeg_tree[0],
        stops=stops,
        output=last.output,
        exit_code=exit_code,
        straight=RunFolder(tmp / "straight" / "tiny" / "a" / "seed0"),
    )


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """(folder, free): a folder on a full disk, and `free()` that makes room. A 256 KiB tmpfs where one can
    be mounted (as root), which holds a run's config and history but not a checkpoint; elsewhere a
    patched writer that fails with ENOSPC for files over 64 KiB."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True).returncode == 0
        if shutil.which("mount")
        else False
    )
    if mounted:
        yield folder, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    from keras_cifar.core import files

    replace = files.os.replace

    def full(src, dst):
        if Path(src).stat().st_size > 64 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full)
    yield folder, lambda: monkeypatch.setattr(files.os, "replace", replace)
