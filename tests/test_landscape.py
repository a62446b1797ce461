"""Loss landscapes: filter-normalized directions, the scan, and the `landscape` command."""

import json

import keras
import numpy as np
import pytest

from keras_cifar.config import load_recipe, sweep
from keras_cifar.core.record import RunRecord
from keras_cifar.data import sources as data_lib
from keras_cifar.nn.losses import get_loss
from keras_cifar.nn.resnet import build_classifier, build_resnet18
from keras_cifar.tools import landscape as ls
from keras_cifar.training.runs import RunFolder, completed_run
from keras_cifar.training.train import compile_model
from tests.helpers import WIDTH, tiny_recipe


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of two tiny models (with and without BN) on synthetic data, built as `run` saves
    them but untrained, to keep the suite fast: config.yaml and model.keras."""
    tmp = tmp_path_factory.mktemp("landscape")
    recipe = load_recipe(tiny_recipe(tmp, variants="  bn: {}\n  no_bn: {model: {batch_norm: false}}\n"))
    folders = []
    for spec in sweep(recipe):
        folder = RunFolder.of(tmp / "runs", spec)
        folder.write_config(spec, "synthetic:200")
        folder.save_model(compile_model(spec.config, steps_per_epoch=1).save)
        folders.append(folder.path)
    return folders


def tiny_classifier():
    model = build_classifier(build_resnet18(width=WIDTH), augment=True)
    model.compile(loss=get_loss("cross_entropy"), metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def weights(model):
    return [np.array(w.numpy()) for w in model.weights]


@pytest.mark.backend
def test_direction_filters_have_the_weights_norms_and_bias_bn_are_zero():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(4, name="dense")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.concatenate([kernel.numpy()[..., :4], np.zeros((3, 3, 3, 1), "float32")], axis=-1))

    direction = ls.random_direction(model.trainable_variables, seed=0)
    for v, d in zip(model.trainable_variables, direction):
        w = v.numpy()
        assert d.shape == w.shape and d.dtype == w.dtype
        if w.ndim == 1:  # conv/dense biases, BN gamma and beta
            assert not np.any(d), v.path
        else:  # one norm per filter: conv output channel, dense unit
            norms = [np.sqrt(np.sum(np.square(a.reshape(-1, a.shape[-1])), axis=0)) for a in (d, w)]
            np.testing.assert_allclose(*norms, rtol=1e-5)
            assert not np.allclose(d, w)
    assert not np.any(direction[0][..., 4])  # a zero filter does not move
    same = ls.random_direction(model.trainable_variables, seed=0)
    other = ls.random_direction(model.trainable_variables, seed=0, axis=1)
    assert all(np.array_equal(a, b) for a, b in zip(direction, same))
    assert not np.allclose(direction[0], other[0])


@pytest.mark.backend
def test_landscape_at_zero_equals_evaluate():
    model = tiny_classifier()
    cifar = data_lib.synthetic(64)
    x, y = cifar.x_train, cifar.y_train  # two full batches: one compiled shape
    expected = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    direction = ls.random_direction(model.trainable_variables, seed=0)
    surface = ls.scan(model, {"x": x, "y": y, "batch_size": 32}, [direction], ls.grid((-1, 1), 3))
    assert surface["loss"].shape == surface["accuracy"].shape == (3,)
    assert surface["loss"][1] == pytest.approx(expected["loss"], rel=1e-6)
    assert surface["accuracy"][1] == pytest.approx(expected["accuracy"])
    assert not np.allclose(surface["loss"], surface["loss"][1])  # the direction moves the loss


@pytest.mark.backend
def test_quadratic_loss_has_its_1d_minimum_at_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False)])
    w_star = model.weights[0].numpy()
    model.compile(loss="mse")  # loss(a) = a^2 * mean((x d)^2): a parabola with its minimum at a = 0
    direction = ls.random_direction(model.trainable_variables, seed=3)
    coords = ls.grid((-1, 1), 9)  # steps of 0.25: the sharpness points a = +-0.5 are on the grid
    surface = ls.scan(model, {"x": x, "y": x @ w_star, "batch_size": 64}, [direction], coords)
    np.testing.assert_allclose(surface["loss"], coords**2 * np.mean((x @ direction[0]) ** 2), rtol=1e-4, atol=1e-9)
    assert np.argmin(surface["loss"]) == 4 and coords[4] == 0
    summary = ls.surface_summary(coords, surface["loss"], np.zeros(9))
    assert summary["loss"]["min"]["at"] == [0.0]
    assert summary["sharpness"]["loss_rise"] == pytest.approx(0.25 * np.mean((x @ direction[0]) ** 2), rel=1e-3)


@pytest.mark.backend
def test_weights_are_restored_exactly_also_after_an_error():
    model = tiny_classifier()
    cifar = data_lib.synthetic(40)
    before = weights(model)
    directions = [ls.random_direction(model.trainable_variables, seed=0, axis=k) for k in (0, 1)]
    inputs = {"x": cifar.x_train, "y": cifar.y_train, "batch_size": 40}
    surface = ls.scan(model, inputs, directions, ls.grid((-1, 1), 3))
    assert surface["loss"].shape == (3, 3)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(model)))

    calls = []
    evaluate = model.evaluate

    def failing_evaluate(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(**kwargs)

    model.evaluate = failing_evaluate
    with pytest.raises(KeyboardInterrupt):
        ls.scan(model, inputs, directions, ls.grid((-1, 1), 3))
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(model)))


@pytest.mark.backend
def test_cli_1d_in_the_run_folder_matches_evaluate(runs, cli):
    result = cli("landscape", runs[0], "--points", "5", "--split", "test", "--images", "1000")
    assert result.exit_code == 0, result.output
    assert "tiny/bn/seed0: 5/5 points" in result.output  # the progress line
    report = json.loads((runs[0] / "landscape_1d.json").read_text())
    assert report["settings"]["dims"] == 1 and report["settings"]["split"] == "test"
    (entry,) = report["runs"]
    assert entry["label"] == "tiny/bn/seed0" and entry["images"] == 20  # the test half of 40 images
    assert set(entry["sharpness"]["points"]) == {"a=-0.5", "a=+0.5"}
    surface = np.load(runs[0] / "landscape_1d.npz")
    assert surface["loss"].shape == surface["accuracy"].shape == (1, 5)
    assert (runs[0] / "landscape_1d.png").stat().st_size > 10_000

    run = completed_run(runs[0])
    x, y = ls.evaluation_images(data_lib.load("synthetic:200"), run.config, "test", 1000)
    expected = ls.evaluation_model(run).evaluate(x, y, batch_size=500, verbose=0, return_dict=True)
    assert entry["centre"]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert entry["centre"]["accuracy"] == pytest.approx(expected["accuracy"])


def test_cli_2d_compares_runs_on_one_figure(runs, cli, tmp_path):
    result = cli("landscape", *runs, "--dims", "2", "--points", "3", "--images", "40", "--surface", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    surface = np.load(tmp_path / "landscape_2d.npz")
    assert surface["loss"].shape == surface["accuracy"].shape == (2, 3, 3)
    assert list(surface["labels"]) == ["tiny/bn/seed0", "tiny/no_bn/seed0"]
    np.testing.assert_array_equal(surface["coords"], [-1, 0, 1])
    report = json.loads((tmp_path / "landscape_2d.json").read_text())
    assert [r["images"] for r in report["runs"]] == [40, 40]
    assert len(report["runs"][1]["sharpness"]["points"]) == 4
    for name in ("landscape_2d.png", "landscape_2d_surface.png"):
        assert (tmp_path / name).stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "{tmp}", "--range", "0.5", "1"], "must contain 0"),
        (["--surface"], "add --dims 2"),
        (["{tmp}"], "several RUN_DIRs"),
        (["--dims", "3"], "--dims"),
    ],
)
def test_cli_rejects_bad_settings(runs, cli, tmp_path, args, message):
    result = cli("landscape", runs[0], *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and message in result.output


def test_cli_rejects_folders_without_a_model(cli, tmp_path):
    result = cli("landscape", tmp_path)
    assert result.exit_code == 2 and "not a run folder" in result.output
    (tmp_path / "config.yaml").write_text("recipe: x\n")
    RunFolder(tmp_path).write_metrics(RunRecord("failed", "x", "a", 0))
    result = cli("landscape", tmp_path)
    assert result.exit_code == 2 and "no model.keras (run status: failed)" in result.output


def test_figures_say_what_is_compared_with_labelled_log_scales(runs, tmp_path):
    """Figure text, read back from SVGs that keep their text as text."""
    import matplotlib

    from keras_cifar.study import plots

    coords = np.linspace(-1, 1, 5)
    loss = np.array([[3.0, 1.5, 1.0, 1.4, 2.9], [1.9, 1.6, 1.5, 1.6, 1.8]])
    loss2 = np.stack([np.add.outer(row, row) for row in loss])
    title = ls.title([completed_run(r) for r in runs], ls.Settings(images=40))
    assert title.startswith("tiny/bn/seed0 vs tiny/no_bn/seed0 (ResNet-18 width 8, 1 epoch, all training images)")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        one = plots.landscape_1d(tmp_path / "1d.svg", coords, ["bn", "no_bn"], loss, loss / 4, title).read_text()
        two = plots.landscape_2d(tmp_path / "2d.svg", coords, ["bn", "no_bn"], loss2, loss2 / 8, title).read_text()
    assert "loss (log scale)" in one and "tiny/bn/seed0 vs tiny/no_bn/seed0" in one
    assert two.count("loss (log scale)") == 2 and "accuracy (%)" in two
    for tick in (">2<", ">5<"):  # 1-2-5 ticks on the log colour bars (losses 2..6 here)
        assert tick in two


def test_docs_quote_the_committed_landscape():
    """docs/landscapes.md's table of the BN / no-BN landscape is what results/landscapes/bn/landscape_1d.json holds."""
    from tests.helpers import REPO

    page = (REPO / "docs" / "landscapes.md").read_text()
    for run in json.loads((REPO / "results/landscapes/bn/landscape_1d.json").read_text())["runs"]:
        s, points = run["sharpness"], run["sharpness"]["points"]
        row = (
            f"| {run['label']} | {run['centre']['loss']:.3f} | {100 * run['centre']['accuracy']:.1f} % | "
            f"{points['a=-0.5']['loss']:.3f} / {points['a=+0.5']['loss']:.3f} | {s['loss_rise']:.3f} | "
            f"{100 * s['accuracy_drop']:.1f} points |"
        )
        assert row in page, row
