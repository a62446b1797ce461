"""Serving: export to SavedModel / .keras, reload, predict image files, evaluate on the test split."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import SimpleNamespace

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
from keras_cifar.tools import export, serving
from keras_cifar.training.runs import RunFolder
from keras_cifar.training.train import compile_model
from tests.helpers import REPO, WIDTH, Command, as_numpy, tiny_network


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
    return export.export(saved[0], tmp_path_factory.mktemp("export") / "cifar")


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
    assert export.export(path, exported.parent) == exported.parent / "2"
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
    version = export.export(path, tmp_path / "k", fmt="keras")
    model = keras.saving.load_model(version / "model.keras", safe_mode=True)
    assert "augment" not in [layer.name for layer in model.layers]
    np.testing.assert_allclose(as_numpy(model.predict(images.astype(np.float32), verbose=0)), logits, atol=1e-5)
    assert (version / "labels.txt").read_text().split() == list(data_lib.CLASS_NAMES)


def test_onnx_and_litert_exports_agree_with_keras_in_their_own_runtimes(saved, tmp_path, cli):
    """The classifier of `saved` (BatchNorm statistics far from 0 and 1), exported by the command as ONNX
    and LiteRT, runs in ONNX Runtime and the LiteRT interpreter (never Keras) as the Keras model does:
    every top-1 class the same and logits within 1e-4. Both are float32 throughout; the logits differ only
    by the order of float32 sums, a few 1e-7 relative per layer (docs/serving.md has the gap measured on
    real data), where a wrong weight, layer or normalization is off by 1e-2 or more. The probabilities are
    the logits' softmax; `predict`, `evaluate` and `serve` read the export folder through the same
    runtimes, and with --tta flip_translate the views around them give with_tta's logits. Every format
    is written by TensorFlow's Keras, whichever backend trained the model (on JAX and PyTorch, `export`
    loads the .keras file in a TensorFlow subprocess: the SavedModel test above runs that route on every
    backend), so this test runs in the TensorFlow pass."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from keras_cifar.data.augment import with_tta

    keras_file, images, expected = saved
    images = images.astype(np.float32)
    tta = as_numpy(with_tta(serving.inference_model(serving.load_keras(keras_file)), "flip_translate")(images))
    runtimes = {
        "onnx": lambda f: onnxruntime.InferenceSession(str(f)).run(["logits", "probabilities"], {"images": images}),
        "litert": lambda f: Interpreter(model_path=str(f)).get_signature_runner()(images=images).values(),
    }
    for fmt, run in runtimes.items():
        result = cli("export", keras_file, "--out", tmp_path / fmt, "--format", fmt)
        assert result.exit_code == 0, result.output
        version = tmp_path / fmt / "1"
        assert sorted(p.name for p in version.iterdir()) == sorted([serving.MODEL_FILES[fmt], "labels.txt"])
        logits, probabilities = run(version / serving.MODEL_FILES[fmt])
        assert len(logits) == len(images) == 8
        assert (logits.argmax(-1) == expected.argmax(-1)).all(), fmt
        assert np.abs(logits - expected).max() < 1e-4, fmt
        np.testing.assert_allclose(probabilities, _softmax(logits), atol=1e-6)
        np.testing.assert_array_equal(serving.load_classifier(tmp_path / fmt).logits(images), logits)
        assert np.abs(serving.load_classifier(tmp_path / fmt, "flip_translate").logits(images) - tta).max() < 1e-4, fmt


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


def _run_with_tta(folder, keras_file, tta):
    """A run folder as far as predict, evaluate and export read one: its model.keras and a config.yaml
    with eval.tta `tta`."""
    folder.mkdir()
    shutil.copy(keras_file, folder / "model.keras")
    (folder / "config.yaml").write_text(f"eval: {{tta: {tta}}}\n")
    return folder


@pytest.mark.backend
def test_tta_at_inference_is_the_views_mean_that_with_tta_computes(saved, exported):
    """The numpy views predict and evaluate apply around any runtime (tta.view; here Keras and the
    SavedModel, ONNX and LiteRT in the test below) give with_tta's logits for every mode, flip the mean of
    the plain model's logits on a hand-mirrored batch and its own; the first view of each mode is the
    image itself, whose logits evaluate reports as the plain scores."""
    from keras_cifar.data.augment import with_tta
    from keras_cifar.data.tta import TTA_VIEWS

    path, images, logits = saved
    model = serving.inference_model(serving.load_keras(path))
    mirrored = as_numpy(model(images[:, :, ::-1].astype(np.float32)))
    classifiers = [serving.load_classifier(path), serving.load_classifier(exported)]
    assert [c.tta for c in classifiers] == ["none", "none"]
    np.testing.assert_allclose(replace(classifiers[0], tta="flip").logits(images), (logits + mirrored) / 2, atol=1e-5)
    for mode, views in TTA_VIEWS.items():
        assert views[0][1:] == (False, 0), mode
        expected = as_numpy(with_tta(model, mode)(images.astype(np.float32)))
        for classifier in classifiers:
            tta_logits, plain = replace(classifier, tta=mode).scores(images)
            np.testing.assert_allclose(tta_logits, expected, atol=1e-5, err_msg=f"{mode} {classifier.source}")
            np.testing.assert_allclose(plain, logits, atol=1e-5, err_msg=f"{mode} {classifier.source}")


@pytest.mark.backend
def test_evaluate_and_predict_with_tta_flip_average_each_image_and_its_mirror(saved, jpeg_tree, tmp_path, cli):
    """evaluate of a run with eval.tta: flip scores the mean of the logits of the test images and of their
    hand-made mirrors, with the plain scores beside; predict --tta flip of the bare .keras file (no run:
    none by default) gives those logits' softmax."""
    path, _, _ = saved
    run = _run_with_tta(tmp_path / "run", path, "flip")
    x, y = data_lib.split(data_lib.load(jpeg_tree[0])).test
    model = keras.saving.load_model(path, safe_mode=True)
    plain = as_numpy(model.predict(x, verbose=0))
    mean = (plain + as_numpy(model.predict(x[:, :, ::-1], verbose=0))) / 2
    cross_entropy = {
        k: -np.log(_softmax(v.astype(np.float64))[np.arange(len(y)), y]).mean() for k, v in (("tta", mean), ("plain", plain))
    }
    assert abs(cross_entropy["tta"] - cross_entropy["plain"]) > 1e-5  # an untrained model's logits barely move

    result = cli("evaluate", run, "--data", jpeg_tree[0], "--figure", tmp_path / "cm.png", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["tta"] == "flip" and out["images"] == len(y)
    assert out["cross_entropy"] == pytest.approx(cross_entropy["tta"], abs=1e-6)
    assert out["plain_cross_entropy"] == pytest.approx(cross_entropy["plain"], abs=1e-6)
    assert out["accuracy"] == (mean.argmax(-1) == y).mean() and out["plain_accuracy"] == (plain.argmax(-1) == y).mean()

    files = [tmp_path / f"{i}.png" for i in range(2)]
    for file, image in zip(files, x):
        Image.fromarray(image).save(file)
    predicted = cli("predict", path, *files, "--tta", "flip", "--top-k", "10", "--json")
    assert predicted.exit_code == 0, predicted.output
    out = json.loads(predicted.stdout)
    assert out["tta"] == "flip"
    names = list(data_lib.CLASS_NAMES)
    probabilities = [
        [p for _, p in sorted((names.index(t["class"]), t["probability"]) for t in row["top"])] for row in out["predictions"]
    ]
    np.testing.assert_allclose(probabilities, _softmax(mean[:2]), atol=1e-6)
    assert np.abs(_softmax(mean[:2]) - _softmax(plain[:2])).max() > 1e-5


def test_an_export_with_tta_computes_it_in_every_format_and_is_not_applied_again(saved, tmp_path, cli):
    """`export` of a run with eval.tta: flip builds it into the model in every format, and `--tta
    flip_translate` overrides it (the .keras file: the formats converted from TensorFlow take several
    seconds a view); tta.txt names the mode. Each export's own runtime gives with_tta's logits, and
    predict and evaluate load it with that mode without applying it a second time (which would change
    flip_translate's logits: its shifts add up); a --tta it cannot undo is one line. (The TensorFlow
    subprocess that writes the exports of JAX and PyTorch models passes the mode on as it passes the
    format: the backend tests above run it.)"""
    from keras_cifar.data.augment import with_tta

    path, images, _ = saved
    images = images.astype(np.float32)
    run = _run_with_tta(tmp_path / "run", path, "flip")
    model = serving.inference_model(serving.load_keras(path))
    expected = {mode: as_numpy(with_tta(model, mode)(images)) for mode in ("flip", "flip_translate")}
    for fmt, mode, args in (
        ("saved_model", "flip", ()),
        ("keras", "flip_translate", ("--tta", "flip_translate")),
        ("onnx", "flip", ()),
        ("litert", "flip", ()),
    ):
        result = cli("export", run, "--out", tmp_path / fmt, "--format", fmt, *args)
        assert result.exit_code == 0 and f"(test-time augmentation: {mode})" in result.stdout, result.output
        assert (tmp_path / fmt / "1" / "tta.txt").read_text() == f"{mode}\n", fmt
        classifier = serving.load_classifier(tmp_path / fmt)
        assert classifier.tta == mode and classifier.tta_inside, fmt
        own = classifier.logits_fn(images)  # the runtime's logits, nothing around them
        np.testing.assert_allclose(own, expected[mode], atol=1e-4, err_msg=fmt)
        np.testing.assert_array_equal(classifier.logits(images), own)
        if fmt == "keras":  # what applying it twice would give
            assert np.abs(replace(classifier, tta_inside=False).logits(images) - own).max() > 1e-5

    Image.fromarray(images[0].astype(np.uint8)).save(tmp_path / "a.png")
    predicted = cli("predict", tmp_path / "onnx", tmp_path / "a.png", "--json")
    assert predicted.exit_code == 0 and json.loads(predicted.stdout)["tta"] == "flip", predicted.output
    refused = cli("evaluate", tmp_path / "keras", "--data", "synthetic:20", "--tta", "none")
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.output
    assert "computes test-time augmentation flip_translate (export --tta flip_translate)" in refused.stderr


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
        export._write_in_tensorflow(bad, tmp_path / "out" / "1", "saved_model")
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


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """One `keras-cifar serve` in a subprocess for the server's tests: a copy of the SavedModel export as
    model `cifar`, version 1, on a free port."""
    folder = tmp_path_factory.mktemp("serve") / "cifar"
    shutil.copytree(exported, folder / "1")
    command = Command("serve", folder, "--port", "0")
    url = command.wait_for(r"^serving cifar at http://").split()[-1]
    yield SimpleNamespace(url=url, folder=folder, command=command)
    command.proc.terminate()
    command.finish(30)


def _http(url, body=None, content_type="application/json"):
    """(status, JSON answer) of a GET (no body) or POST to `url`, with the standard library's client."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_server_answers_as_tf_serving_does_and_as_predict_does(server, saved, tmp_path, cli):
    """Status, metadata, :predict in row and columnar form on both signatures (the logits of the Keras
    model), a version by number, :classify_image equal to `predict --json` for the same files, and 8
    client threads sending 400 requests in all getting 400 right answers."""
    _, images, logits = saved
    assert _http(server.url) == (
        200,
        {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]},
    )
    code, meta = _http(server.url + "/metadata")
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert code == 200 and {"serving_default", "serve_uint8"} <= set(signatures)
    uint8 = signatures["serve_uint8"]["inputs"]["images"]
    assert uint8["dtype"] == "DT_UINT8" and signatures["serving_default"]["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in uint8["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]

    code, rows = _http(server.url + ":predict", {"instances": images.tolist()})
    assert code == 200, rows
    np.testing.assert_allclose([p["logits"] for p in rows["predictions"]], logits, atol=1e-5)
    np.testing.assert_allclose([p["probabilities"] for p in rows["predictions"]], _softmax(logits), atol=1e-5)
    columnar = {"signature_name": "serve_uint8", "inputs": {"images": images[:3].tolist()}}
    code, columns = _http(server.url + "/versions/1:predict", columnar)
    assert code == 200 and set(columns["outputs"]) == {"logits", "probabilities"}
    np.testing.assert_allclose(columns["outputs"]["logits"], logits[:3], atol=1e-5)
    named = {"instances": [{"images": image} for image in images[:2].tolist()]}
    assert _http(server.url + ":predict", named)[1]["predictions"] == rows["predictions"][:2]
    assert _http(server.url + "/versions/7:predict", named) == (
        404,
        {"error": "Servable not found for request: Specific(cifar, 7)"},
    )

    for image in _write_images(tmp_path / "imgs")[:2]:
        code, top = _http(server.url + ":classify_image?top_k=3", image.read_bytes(), "image/png")
        assert code == 200 and top["model_version"] == 1, top
        by_predict = json.loads(cli("predict", server.folder, image, "--json").stdout)["predictions"][0]["top"]
        assert [t["class"] for t in top["top"]] == [t["class"] for t in by_predict]
        np.testing.assert_allclose([t["probability"] for t in top["top"]], [t["probability"] for t in by_predict], atol=1e-6)

    def one(i):
        code, answer = _http(server.url + ":predict", {"instances": images[i % 8 : i % 8 + 1].tolist()})
        return code == 200 and np.allclose(answer["predictions"][0]["logits"], logits[i % 8], atol=1e-5)

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(one, range(400))) == 400


def test_bad_input_is_a_400_with_a_json_error_and_the_server_stays_up(server, saved):
    images = saved[1]
    bad = {
        ":predict": [
            (b"{not json", "not JSON"),
            ({"instances": [[1, 2, 3]]}, "images must be [N, 32, 32, 3]"),
            ({"instances": [[[["a"] * 3] * 32] * 32]}, "must be numbers"),
            ({"instances": (images[:1] / 2).tolist(), "signature_name": "serve_uint8"}, "serve_uint8 takes integers"),
            (
                {"inputs": (images[:1].astype(int) + 256).tolist(), "signature_name": "serve_uint8"},
                "serve_uint8 takes integers",
            ),
            ({"instances": images[:1].tolist(), "signature_name": "nope"}, "signature_name 'nope' is not served"),
            ({"examples": []}, '"instances" or "inputs"'),
            ({"instances": [{"pixels": images[0].tolist()}]}, "named 'images'"),
            ({"instances": [images[0].tolist(), [[1, 2]]]}, "images must be"),
        ],
        ":classify_image": [(b"GIF89a not an image", "not a readable image"), (b"", "not a readable image")],
        "/versions/x:predict": [({"instances": []}, "bad request")],
    }
    good = {"instances": images[:1].tolist()}
    for route, cases in bad.items():
        for body, message in cases:
            code, answer = _http(server.url + route, body)
            assert code == 400 and message in answer["error"], (route, body if isinstance(body, bytes) else "", answer)
            assert _http(server.url + ":predict", good)[0] == 200
    host, port = server.url.split("/")[2].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)  # a body over the limit: refused from its length
    connection.putrequest("POST", "/v1/models/cifar:predict")
    connection.putheader("Content-Length", str(64 * 2**20))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 400 and "over the limit" in json.loads(answer.read())["error"]
    assert _http(server.url + ":predict", good)[0] == 200


def test_a_new_version_is_served_without_a_restart_and_a_half_written_one_never(server, saved):
    """A version folder still being copied (no saved_model.pb yet) is passed over; one renamed into place
    whole, as `export` writes it, is served within the poller's second, and the old one is retired."""
    (server.folder / "2" / "variables").mkdir(parents=True)  # half-written
    shutil.copytree(server.folder / "1", server.folder / ".3.tmp")
    os.replace(server.folder / ".3.tmp", server.folder / "3")
    server.command.wait_for("^serving version 3 ", timeout=60)
    assert _http(server.url)[1]["model_version_status"][0]["version"] == "3"
    code, answer = _http(server.url + "/versions/3:predict", {"instances": saved[1][:1].tolist()})
    assert code == 200 and np.allclose(answer["predictions"][0]["logits"], saved[2][0], atol=1e-5)
    assert _http(server.url + "/versions/1:predict", {"instances": saved[1][:1].tolist()})[0] == 404
    assert "serving version 2" not in server.command.output


def test_a_missing_extra_is_one_line_naming_it(saved, tmp_path, cli, monkeypatch):
    (tmp_path / "exp" / "1").mkdir(parents=True)
    (tmp_path / "exp" / "1" / "model.onnx").write_bytes(b"")
    (tmp_path / "model.tflite").write_bytes(b"")
    image = _write_images(tmp_path / "imgs")[0]
    for module, args, extra in (
        ("tf2onnx", ("export", saved[0], "--format", "onnx", "--out", tmp_path / "out"), "onnx"),
        ("onnxruntime", ("predict", tmp_path / "exp", image), "onnx"),
        ("ai_edge_litert", ("evaluate", tmp_path / "model.tflite", "--data", "synthetic:20"), "litert"),
        ("uvicorn", ("serve", tmp_path / "exp"), "serve"),
    ):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # importlib.util.find_spec finds nothing: not installed
            result = cli(*args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert f'pip install "keras-cifar[{extra}]"' in result.stderr and module in result.stderr
    assert not (tmp_path / "out").exists()
