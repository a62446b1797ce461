"""Serving: export to SavedModel / .keras, reload, predict image files, evaluate on the test split."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from keras_cifar import config as cfg
from keras_cifar.core.errors import ModelError
from keras_cifar.core.record import RunRecord
from keras_cifar.core.registry import Entry
from keras_cifar.data import sources as data_lib
from keras_cifar.nn.networks import MODELS
from keras_cifar.tools import serving
from keras_cifar.training.runs import RunFolder
from keras_cifar.training.train import compile_model
from tests.helpers import REPO, WIDTH, as_numpy, tiny_network


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A compiled width-8 classifier with random BatchNorm statistics (so inference differs from training
    mode), saved as a .keras file, with its logits on random uint8 images from the current backend."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    config = cfg.Config.from_dict({"model": {"width": WIDTH}})
    model = compile_model(config, steps_per_epoch=2)
    rng = np.random.default_rng(0)
    for layer in model.get_layer("resnet18").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    model.save(path)
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    logits = as_numpy(model.predict(images, verbose=0))
    keras.backend.clear_session()
    return path, images, logits


@pytest.fixture(scope="module")
def exported(saved, tmp_path_factory):
    """The trained model exported as a SavedModel (on JAX/PyTorch through a TensorFlow subprocess)."""
    return serving.export(saved[0], tmp_path_factory.mktemp("export") / "cifar")


def _softmax(z):
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@pytest.mark.backend
def test_saved_model_reloads_with_the_keras_models_predictions(saved, exported):
    import tensorflow as tf

    _, images, logits = saved
    assert exported.name == "1" and (exported / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(exported))
    out = loaded.serve(images.astype(np.float32))
    np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), _softmax(logits), atol=1e-5, rtol=0)
    out_uint8 = loaded.serve_uint8(tf.constant(images))  # a uint8 tensor: the uint8 signature
    np.testing.assert_allclose(out_uint8["logits"].numpy(), out["logits"].numpy(), atol=1e-6, rtol=0)
    serving = loaded.signatures["serving_default"](images=tf.constant(images, tf.float32))
    np.testing.assert_allclose(serving["probabilities"].numpy(), out["probabilities"].numpy(), atol=1e-6)
    names = [n.decode() for n in loaded.class_names()["class_names"].numpy()]
    assert names == list(data_lib.CLASS_NAMES)
    assert (exported / "labels.txt").read_text().split() == names


def test_export_numbers_versions_and_reloads_in_plain_tensorflow(saved, exported, tmp_path):
    """A second export adds version 2; a python with only TensorFlow imported serves the SavedModel."""
    path, images, logits = saved
    assert serving.export(path, exported.parent) == exported.parent / "2"
    assert sorted(p.name for p in exported.parent.iterdir()) == ["1", "2"]  # no temporary folders left
    np.save(tmp_path / "images.npy", images)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(exported)!r})\n"
        f"x = np.load({str(tmp_path / 'images.npy')!r})\n"
        "np.save(sys.argv[1], m.signatures['serve_uint8'](images=tf.constant(x))['probabilities'].numpy())\n"
        "assert 'keras_cifar' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "probs.npy")], check=True, cwd=tmp_path)
    probs = np.load(tmp_path / "probs.npy")
    np.testing.assert_allclose(probs, _softmax(logits), atol=1e-5)
    assert (probs.argmax(-1) == logits.argmax(-1)).all()


@pytest.mark.backend
def test_keras_format_export_loads_in_safe_mode(saved, tmp_path):
    path, images, logits = saved
    version = serving.export(path, tmp_path / "k", fmt="keras")
    model = keras.saving.load_model(version / "model.keras", safe_mode=True)
    assert "augment" not in [layer.name for layer in model.layers]
    np.testing.assert_allclose(as_numpy(model.predict(images.astype(np.float32), verbose=0)), logits, atol=1e-5)
    assert (version / "labels.txt").read_text().split() == list(data_lib.CLASS_NAMES)


def _write_images(folder):
    """A non-square PNG, a 32x32 JPEG, a corrupt .jpg and a hidden file; returns their paths."""
    folder.mkdir()
    wide = np.zeros((60, 100, 3), np.uint8)
    wide[:, :, 2] = 255  # blue sides ...
    wide[:, 20:80] = (255, 0, 0)  # ... around a red centre square
    Image.fromarray(wide).save(folder / "wide.png")
    small = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(small).save(folder / "small.jpg", quality=95)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / ".hidden.png").write_bytes(b"ignored")
    return folder / "wide.png", folder / "small.jpg", folder / "corrupt.jpg"


def test_read_image_crops_the_centre_square_and_resizes(tmp_path):
    wide, small, _ = _write_images(tmp_path / "imgs")
    image = serving.read_image(wide)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image == (255, 0, 0)).all()  # the blue sides were cropped away
    assert serving.image_files([tmp_path / "imgs"]) == sorted([wide, small, tmp_path / "imgs" / "corrupt.jpg"])


@pytest.mark.backend
def test_predict_reads_png_and_jpeg_and_names_the_corrupt_file(saved, exported, tmp_path, cli):
    path, _, _ = saved
    wide, small, corrupt = _write_images(tmp_path / "imgs")
    by_model = {}
    for model in (path, exported.parent):  # a .keras file and an export folder (highest version)
        result = cli("predict", model, tmp_path / "imgs", "--json", "--top-k", "2")
        assert result.exit_code == 1  # something failed ...
        out = json.loads(result.stdout)
        assert [e["file"] for e in out["errors"]] == [str(corrupt)]
        assert str(corrupt) in result.stderr
        assert [p["file"] for p in out["predictions"]] == [str(small), str(wide)]  # ... the rest predicted
        by_model[model] = [[t["class"] for t in p["top"]] for p in out["predictions"]]
        assert all(len(p["top"]) == 2 for p in out["predictions"])
    classifier = serving.load_classifier(path)
    expected = classifier.logits(np.stack([serving.read_image(small), serving.read_image(wide)])).argmax(-1)
    assert [c[0] for c in by_model[path]] == [data_lib.CLASS_NAMES[i] for i in expected]
    assert by_model[path] == by_model[exported.parent]

    table = cli("predict", exported, wide, small)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["image", "top-1", "top-2", "top-3"]
    assert str(wide) in table.stdout and str(small) in table.stdout


@pytest.mark.backend
def test_evaluate_matches_model_evaluate(saved, exported, jpeg_tree, tmp_path, cli):
    path, _, _ = saved
    jpeg_slice = jpeg_tree[0]
    x, y = data_lib.split(data_lib.load(jpeg_slice)).test
    model = keras.saving.load_model(path, safe_mode=True)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    expected = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    for source in (path, exported):
        figure = tmp_path / f"cm-{source.name}.png"
        result = cli("evaluate", source, "--data", jpeg_slice, "--figure", figure, "--json")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["images"] == len(y) == 80
        assert out["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)  # Keras sums in float32
        assert out["cross_entropy"] == pytest.approx(expected["loss"], abs=1e-5)
        confusion = np.array(out["confusion"])
        assert confusion.sum() == len(y) and (confusion.sum(1) == np.bincount(y, minlength=10)).all()
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unusable_paths_are_one_line_errors(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    RunFolder(run).write_metrics(RunRecord("failed", "x", "a", 0))
    result = cli("export", run)
    assert result.exit_code == 2
    assert "found no model.keras or saved_model.pb; the run's status is failed" in result.stderr
    (tmp_path / "a.png").write_bytes(b"")
    result = cli("predict", run, tmp_path / "a.png")
    assert result.exit_code == 2 and str(run) in result.stderr
    result = cli("predict", run, tmp_path / "run")  # a folder with no image files
    assert result.exit_code == 2 and "no image files" in result.stderr


def test_export_of_a_corrupt_keras_file_names_it(tmp_path, cli):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip file")
    result = cli("export", bad, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {bad}: cannot load the Keras model")
    assert not (tmp_path / "out").exists()
    # Under JAX and PyTorch export runs in a TensorFlow subprocess: its error comes back the same
    with pytest.raises(ModelError, match=f"^{bad}: cannot load the Keras model"):
        serving._write_in_tensorflow(bad, tmp_path / "out" / "1")
    assert not (tmp_path / "out").exists()


def test_a_second_registered_network_exports_predicts_and_evaluates(tmp_path, cli, monkeypatch):
    """Export finds the inference model by role, not by the network's name: a tiny network registered
    as docs/development.md says goes through export, predict and evaluate."""
    monkeypatch.setitem(MODELS.entries, "tiny", Entry(tiny_network, "a tiny test network"))
    model = compile_model(cfg.Config.from_dict({"model": {"name": "tiny", "width": WIDTH}}), steps_per_epoch=1)
    model.save(tmp_path / "model.keras")
    assert cli("export", tmp_path / "model.keras", "--out", tmp_path / "exp").exit_code == 0
    x, y = data_lib.split(data_lib.load("synthetic:100")).test
    Image.fromarray(x[0]).save(tmp_path / "a.png")
    predicted = cli("predict", tmp_path / "exp", tmp_path / "a.png", "--json")
    assert predicted.exit_code == 0, predicted.output
    logits = as_numpy(model.predict(x, verbose=0))
    assert json.loads(predicted.stdout)["predictions"][0]["top"][0]["class"] == data_lib.CLASS_NAMES[logits[0].argmax()]
    evaluated = cli("evaluate", tmp_path / "exp", "--data", "synthetic:100", "--figure", tmp_path / "cm.png", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx((logits.argmax(-1) == y).mean())


def test_an_empty_or_unfinished_version_folder_is_passed_over(tmp_path):
    for version, content in (("1", "saved_model.pb"), ("3", "model.keras"), ("4", None), ("10", "notes.txt")):
        (tmp_path / "exp" / version).mkdir(parents=True)
        if content:
            (tmp_path / "exp" / version / content).write_bytes(b"")
    assert serving.model_path(tmp_path / "exp") == ("keras", tmp_path / "exp" / "3" / "model.keras")


def test_a_model_saved_before_the_packages_still_loads_with_its_classes_and_predictions():
    """tests/data/layout-0.2-model.keras was written when every module sat in keras_cifar/ (width 2, a step of
    SGD on the multi-margin loss): its classes are registered by the same names since the move into
    packages, so keras_cifar.load_model reads it in safe mode and it predicts what it did, and the compiled
    file brings back its loss, optimizer (PyTorch's form of SGD) and step count."""
    import keras_cifar
    from keras_cifar.nn import custom_objects

    data = REPO / "tests" / "data"
    expected = json.loads((data / "layout-0.2-model.json").read_text())
    probe = np.stack([np.full((32, 32, 3), v, np.uint8) for v in expected["pixels"]])
    model = keras_cifar.load_model(data / "layout-0.2-model.keras")
    np.testing.assert_allclose(model.predict(probe, verbose=0), expected["logits"], rtol=1e-5, atol=1e-6)
    compiled = custom_objects.load(data / "layout-0.2-model.keras")
    assert isinstance(compiled.loss, custom_objects.MultiMarginLoss)
    assert isinstance(compiled.optimizer, custom_objects.SGD) and not compiled.optimizer.keras_form
    assert int(as_numpy(compiled.optimizer.iterations)) == expected["iterations"]
