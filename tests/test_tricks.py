"""The training tricks beyond the report (recipes/tricks.yaml, fast.yaml), each against a hand computation
on every backend: label smoothing's loss, the weights' moving average (EMA) and what is evaluated with it,
test-time augmentation's views and scores, the alternating flip's pattern in both input pipelines and
after a resume; then the config keys' checks, epoch_fraction, and claims judged pair by pair. That a
run with them all stops and resumes to the bit is tests/test_train.py's (the `trained` sweep)."""

import keras
import numpy as np
import pytest
import yaml
from scipy.special import log_softmax

from keras_cifar import config as cfg
from keras_cifar.config import Config
from keras_cifar.config.schema import TTA_MODES
from keras_cifar.core.errors import ConfigError
from keras_cifar.data.augment import TTA_VIEWS, with_tta
from keras_cifar.data.pipelines import Feeder, alternating_flips
from keras_cifar.nn.losses import get_loss
from keras_cifar.nn.optim import make_optimizer
from keras_cifar.nn.resnet import build_classifier
from keras_cifar.study import claims, stats
from keras_cifar.training.callbacks import Evaluation, Stop, averaged_weights
from keras_cifar.training.runs import RunFolder
from keras_cifar.training.train import compile_tta
from tests.helpers import WIDTH, as_numpy, make_run, tiny_network, tiny_recipe


def _cross_entropy(logits, labels, smoothing=0.0):
    """Mean softmax cross-entropy of integer `labels` against one-hot * (1 - s) + s / C, in numpy."""
    classes = logits.shape[-1]
    target = np.eye(classes)[labels] * (1 - smoothing) + smoothing / classes
    return float(-(target * log_softmax(logits.astype(np.float64), axis=-1)).sum(-1).mean())


@pytest.mark.backend
def test_label_smoothing_is_cross_entropy_against_smoothed_one_hot_labels():
    logits = np.random.default_rng(0).normal(size=(5, 10)).astype("float32") * 3
    labels = logits.argmax(-1).astype(np.int32)  # confident and right: smoothing costs them most
    smoothed = float(as_numpy(get_loss("cross_entropy", 0.2)(labels, logits)))
    assert smoothed == pytest.approx(_cross_entropy(logits, labels, 0.2), rel=1e-5)
    assert float(as_numpy(get_loss("cross_entropy")(labels, logits))) == pytest.approx(_cross_entropy(logits, labels), rel=1e-5)
    assert abs(smoothed - _cross_entropy(logits, labels)) > 0.1  # the smoothing counts
    with pytest.raises(TypeError):  # not cross-entropy in its place (the config refuses it in one line)
        get_loss("multi_margin", 0.2)


# ------------------------------------------------------------------------------------------------ EMA


def _weights(model):
    return [as_numpy(w).copy() for w in model.trainable_weights]


@pytest.mark.backend
def test_weight_averaging_follows_keras_formula_and_is_what_evaluation_scores():
    """optimizer.ema_momentum m: after the first step the average is the weights, then m * average +
    (1 - m) * weights after each step. averaged_weights puts it in the model and swaps the trained
    weights back to the bit afterwards; Evaluation scores the test split on it; finalize_variable_values
    (train.py, before model.keras is saved) leaves it in the model."""
    m = 0.8
    config = Config.from_dict({"optimizer": {"ema_momentum": m, "learning_rate": 0.5}, "train": {"epochs": 1}})
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch=4),
        loss=get_loss("cross_entropy"),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16).astype(np.int32)
    average = None
    for step in range(4):
        model.train_on_batch(x[4 * step : 4 * step + 4], y[4 * step : 4 * step + 4])
        average = _weights(model) if average is None else [m * a + (1 - m) * w for a, w in zip(average, _weights(model))]
    trained = _weights(model)
    assert not np.allclose(trained[0], average[0])  # training moved on from the average
    with averaged_weights(model):
        for inside, expected in zip(_weights(model), average):
            np.testing.assert_allclose(inside, expected, rtol=1e-5, atol=1e-6)
    for after, before in zip(_weights(model), trained):
        np.testing.assert_array_equal(after, before)  # swapped back exactly: training goes on from its own weights

    logs = {}
    evaluation = Evaluation(Feeder(8, "numpy").evaluate(x, y), Feeder(8, "numpy").evaluate(x, y), Stop())
    evaluation.set_model(model)
    evaluation.on_epoch_end(0, logs)
    kernel, bias = average
    assert logs["test_loss"] == pytest.approx(_cross_entropy(x @ kernel + bias, y), rel=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), trained))
    model.optimizer.finalize_variable_values(model.trainable_weights)
    for final, expected in zip(_weights(model), average):
        np.testing.assert_allclose(final, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ TTA


def _views_by_hand(images, mode):
    """TTA_VIEWS[mode]'s views of uint8 images [B, H, W, C], in numpy: (weight, view) pairs."""
    views = []
    for weight, mirrored, shift in TTA_VIEWS[mode]:
        x = images[:, :, ::-1] if mirrored else images
        if shift:  # moved `shift` pixels down and right, the border reflected
            s, (h, w) = abs(shift), x.shape[1:3]
            padded = np.pad(x, [(0, 0), (s, s), (s, s), (0, 0)], mode="reflect")
            x = padded[:, s - shift : s - shift + h, s - shift : s - shift + w]
        views.append((weight, x))
    return views


@pytest.mark.backend
@pytest.mark.parametrize("mode", ["flip", "flip_translate"])
def test_tta_averages_the_logits_of_the_views_and_scores_them(mode):
    """with_tta's logits equal the weighted mean of the plain model's logits on mirrored and shifted
    copies made in numpy; under Evaluation (what fit's epochs end with), the validation and test scores
    with eval.tta are the hand-made logits' accuracy and loss."""
    assert set(TTA_VIEWS) == set(TTA_MODES)
    assert all(sum(w for w, _, _ in views) == pytest.approx(1) for views in TTA_VIEWS.values())
    model = build_classifier(tiny_network(Config.from_dict({"model": {"width": WIDTH}}).model, 10))
    model.compile(loss=get_loss("cross_entropy"), metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    images = np.random.default_rng(2).integers(0, 256, (24, 32, 32, 3)).astype(np.uint8)
    plain = model.predict(images, verbose=0)
    expected = sum(w * model.predict(view, verbose=0) for w, view in _views_by_hand(images, mode))
    assert not np.allclose(expected, plain, atol=1e-4)  # the views count
    np.testing.assert_allclose(with_tta(model, mode).predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)

    labels = plain.argmax(-1).astype(np.int32)
    labels[::3] = expected[::3].argmin(-1)  # some right, some wrong
    logs = {}
    inputs = Feeder(8, "numpy").evaluate(images, labels)
    evaluation = Evaluation(inputs, inputs, Stop(), compile_tta(model, Config.from_dict({"eval": {"tta": mode}})))
    evaluation.set_model(model)
    evaluation.on_epoch_end(0, logs)
    for split in ("val", "test"):
        assert logs[f"{split}_tta_accuracy"] == pytest.approx(float(np.mean(expected.argmax(-1) == labels)))
        assert logs[f"{split}_tta_loss"] == pytest.approx(_cross_entropy(expected, labels), rel=1e-5)
    assert compile_tta(model, Config()) is None


# ------------------------------------------------------------------------------------- alternating flip


def test_alternating_flip_mirrors_each_image_in_one_of_two_epochs():
    n, seed = 1000, 4
    first, second = alternating_flips(n, seed, 0), alternating_flips(n, seed, 1)
    assert np.all(first ^ second)  # each image once mirrored, once not, in epochs 0 and 1
    assert 0.45 < first.mean() < 0.55  # about half in epoch 0
    for epoch in (2, 3, 10):
        np.testing.assert_array_equal(alternating_flips(n, seed, epoch), first if epoch % 2 == 0 else second)
    np.testing.assert_array_equal(alternating_flips(n, seed, 0), first)  # the seed decides it
    assert not np.array_equal(alternating_flips(n, seed + 1, 0), first)


def _batches(stream, epochs):
    """{epoch: [(images, labels)]} of a Feeder.train stream, each epoch's pass as fit makes it."""
    out = {}
    for epoch in epochs:
        stream.epoch_begins(epoch)
        if isinstance(stream.x, keras.utils.PyDataset):
            out[epoch] = [stream.x[i] for i in range(len(stream.x))]
        else:
            out[epoch] = list(stream.x.as_numpy_iterator())
    return out


@pytest.mark.backend
@pytest.mark.parametrize("pipeline", ["tf_data", "numpy"])
def test_alternating_flip_through_the_pipeline_and_after_a_resume(pipeline):
    """With data.flip: alternating the pipeline's batches of epochs 0-3 are those of data.flip: random (whose
    model flips instead) with image i mirrored where alternating_flips says; a stream started at epoch 2,
    as a resumed run's, gives epochs 2 and 3 as the straight one did."""
    n, seed, batch = 20, 5, 8
    x = np.random.default_rng(3).integers(0, 256, (n, 6, 6, 3)).astype(np.uint8)
    y = np.arange(n, dtype=np.int32)  # image i is labelled i
    plain = _batches(Feeder(batch, pipeline).train(x, y, seed, 4), range(4))
    straight = _batches(Feeder(batch, pipeline, flip="alternating").train(x, y, seed, 4), range(4))
    mirrored = 0
    for epoch in range(4):
        flips = alternating_flips(n, seed, epoch)
        for (images, labels), (unflipped, same_labels) in zip(straight[epoch], plain[epoch], strict=True):
            np.testing.assert_array_equal(labels, same_labels)
            expected = np.where(flips[labels][:, None, None, None], unflipped[:, :, ::-1], unflipped)
            np.testing.assert_array_equal(images, expected)
            mirrored += int(flips[labels].sum())
    assert 0 < mirrored < 4 * 3 * batch
    resumed = _batches(Feeder(batch, pipeline, flip="alternating").train(x, y, seed, 4, start=2), range(2, 4))
    for epoch in (2, 3):
        for (a, b), (c, d) in zip(resumed[epoch], straight[epoch], strict=True):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


# ---------------------------------------------------------------------------------------------- config


def test_epoch_fraction_applies_after_the_command_line(tmp_path):
    """fast.yaml's variant trains half of train.epochs as --epochs sets it: 5 of 10; its config.yaml says 5."""
    recipe = cfg.load_recipe(tiny_recipe(tmp_path, "  a: {}\n  half: {train: {epoch_fraction: 0.5}}\n"))
    a, half = cfg.sweep(recipe, cfg.parse_sets(["train.epochs=10"]))
    assert (a.config.train.epochs, half.config.train.epochs) == (10, 5)
    folder = RunFolder.of(tmp_path / "out", half)
    folder.write_config(half, "synthetic:100")
    written = yaml.safe_load((folder.path / "config.yaml").read_text())
    assert (written["train"]["epochs"], written["train"]["epoch_fraction"]) == (5, 1.0)
    fast = {r.variant: r.config.train.epochs for r in cfg.sweep(cfg.load_recipe("fast"), {"train": {"epochs": 10}})}
    assert fast == {"baseline": 10, "fast": 5}
    odd = {r.variant: r.config.train.epochs for r in cfg.sweep(cfg.load_recipe("fast"), {"train": {"epochs": 5}})}
    assert odd == {"baseline": 5, "fast": 3}  # halves round up (Python's round would give 2)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["eval.tta=flips"], "eval.tta: 'flips' is not allowed; use none, flip (the mean"),
        (["data.flip=sometimes"], "data.flip: 'sometimes' is not allowed; use random (each image"),
        (["data.flip=alternating", "data.augment=false"], "data.flip: alternating needs data.augment: true"),
        (
            ["loss=multi_margin", "loss_options.label_smoothing=0.1"],
            "loss_options.label_smoothing applies to the cross_entropy loss only, not multi_margin",
        ),
        (["optimizer.ema_momentum=1"], "optimizer.ema_momentum: 1.0 is not allowed; use a number in (0, 1)"),
    ],
)
def test_trick_settings_that_cannot_work_are_refused(tmp_path, sets, message):
    """One line naming where the setting came from: the command line, or the recipe's file and variant
    (both said 'config:' before). tests/test_cli.py checks one of them through the installed command."""
    with pytest.raises(ConfigError) as err:
        cfg.sweep(cfg.load_recipe(tiny_recipe(tmp_path)), cfg.parse_sets(sets))
    assert str(err.value).startswith("command line: ") and message in str(err.value) and "\n" not in str(err.value)
    path = tiny_recipe(tmp_path, f"  a: {{}}\n  b: {yaml.safe_dump(cfg.parse_sets(sets), default_flow_style=True)}")
    with pytest.raises(ConfigError) as err:
        cfg.load_recipe(path)
    assert str(err.value).startswith(f"{path}: variants.b: ") and message in str(err.value)


# ---------------------------------------------------------------------------------------------- claims


def test_a_claim_of_several_orderings_judges_their_pairs_only():
    """[[ls, baseline], [ema, baseline]]: each trick against the baseline, never the tricks against each
    other; the worst of those pairs decides, and a variant without runs is 'no data'."""
    data = {"baseline": _stats(0.60, 0.61), "ls": _stats(0.70, 0.71), "ema": _stats(0.50, 0.51)}
    order = (("ls", "baseline"), ("ema", "baseline"))
    verdict = claims.judge(order, data)
    assert [(p.better, p.worse, p.verdict) for p in verdict.pairs] == [("ls", "baseline", "yes"), ("ema", "baseline", "no")]
    assert verdict.answer == "no" and verdict.reason.startswith("ema − baseline = -10.00 pt")
    assert claims.our_ordering(data, order) == "ls > baseline; baseline > ema"
    assert claims.judge(order, {**data, "ema": None})[:2] == ("no data", "no completed run of ema")


def _stats(*accs):
    return stats.describe(accs)


@pytest.mark.parametrize(
    "order, message",
    [
        ("[a, [b, c]]", "report.order: either variants, best first, or lists of them; not both"),
        ("[[a, b], [c, z]]", "report.order: z is not a variant of this recipe"),
    ],
)
def test_a_claims_orderings_are_lists_of_variants(tmp_path, order, message):
    path = tmp_path / "r.yaml"
    path.write_text(
        f"name: r\nreport: {{title: T, cites: W, source: S, claim: c, order: {order}}}\n"
        "variants: {a: {}, b: {}, c: {}}\n"
    )
    with pytest.raises(ConfigError) as err:
        cfg.load_recipe(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_compare_lists_cited_claims_beyond_the_report_and_judges_tta_runs_with_tta(tmp_path, cli):
    """A recipe whose claim cites another work gets its own table after the report's, and its section
    names the work. Its `tta` variant trained as the baseline did (the same plain accuracy) but is judged
    on its accuracy under TTA, which its table shows beside the plain one."""
    runs, recipes = tmp_path / "runs", tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "bn.yaml").write_text(
        "name: bn\nreport: {title: BN, source: Fig. 3, claim: BN helps, order: [bn, no_bn]}\n"
        "variants: {bn: {}, no_bn: {model: {batch_norm: false}}}\n"
    )
    (recipes / "tricks.yaml").write_text(
        "name: tricks\nreport: {title: Tricks, cites: 'Page (2019)', source: part 7, claim: each trick helps,\n"
        "  order: [[ls, baseline], [tta, baseline]]}\n"
        "variants: {baseline: {}, ls: {loss_options: {label_smoothing: 0.2}}, tta: {eval: {tta: flip}}}\n"
    )
    for seed in (0, 1):
        make_run(runs, "bn", "bn", seed, 0.60 + seed / 100)
        make_run(runs, "bn", "no_bn", seed, 0.50 + seed / 100, config={"model": {"batch_norm": False}})
        make_run(runs, "tricks", "baseline", seed, 0.60 + seed / 100)
        make_run(runs, "tricks", "ls", seed, 0.70 + seed / 100, config={"loss_options": {"label_smoothing": 0.2}})
        make_run(runs, "tricks", "tta", seed, 0.60 + seed / 100, tta_acc=0.70 + seed / 100)
    result = cli("compare", runs, "--recipes", recipes)
    assert result.exit_code == 0, result.output
    page = (runs / "comparison.md").read_text()
    report_table, beyond = page.split("\n### Beyond the report\n")
    assert "| [bn](#bn) | BN helps (Fig. 3) |" in report_table and "[tricks]" not in report_table
    row = next(line for line in beyond.splitlines() if line.startswith("| [tricks](#tricks)"))
    assert row.startswith("| [tricks](#tricks) | each trick helps (Page (2019), part 7) |")
    assert row.endswith("| ls > baseline; tta > baseline | **yes** | **yes** |")
    assert "## tricks: Tricks — Page (2019), part 7: each trick helps" in page
    assert "Agrees with Page (2019): **yes**" in page
    assert "| tta (TTA: flip) | **70.50 ± 0.71** (n=2) | 60.50 ± 0.71 (n=2) |" in page  # with TTA, then without
