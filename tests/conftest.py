"""Shared fixtures. Tests run under whatever KERAS_BACKEND is set; `tests/run.sh` runs all three.

Tests marked ``backend`` exercise Keras numerics and run on every backend; the rest (config, data
parsing, reports) are backend-independent and run under TensorFlow only.
"""

import tarfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
JPEG_COPY = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _seed_everything(tmp_path_factory, monkeypatch):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    monkeypatch.setenv("KERAS_CIFAR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("KERAS_CIFAR_DATA", raising=False)
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="session")
def jpeg_slice(tmp_path_factory):
    """A class-folder tar.gz with a slice of the shared CIFAR-10 JPEG copy: 30 train / 10 test per class."""
    if not JPEG_COPY.exists():
        pytest.skip(f"{JPEG_COPY} not found")
    out = tmp_path_factory.mktemp("jpeg") / "cifar10-slice.tar.gz"
    keep = {"train": 30, "test": 10}
    with tarfile.open(JPEG_COPY) as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] in keep:
                if int(Path(parts[-1]).stem) < keep[parts[-3]]:
                    dst.addfile(member, src.extractfile(member))
    return out


@pytest.fixture
def cli():
    """Invoke the keras-cifar CLI in-process; returns click's Result."""
    from keras_cifar.cli import main

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def tiny_recipe(tmp_path, variants="  a: {}\n", extra_base=""):
    """Write a small recipe file and return its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\ndescription: test recipe\nbase:\n"
        "  model: {width: 4}\n  data: {batch_size: 32, eval_subset: 40}\n  train: {epochs: 1}\n"
        + extra_base + "variants:\n" + variants
    )
    return path


def as_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))

