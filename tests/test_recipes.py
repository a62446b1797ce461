"""Every variant of every shipped recipe, and a run per registered loss, optimizer and schedule, trains
one tiny epoch to `completed` through the installed `keras-cifar run`, on every backend: every
activation x BN x shortcut the report uses, both losses, both schedules and the three batch sizes, and
the tricks beyond the report (tricks.yaml's one at a time only where fast.yaml's variant, which has
them all, lacks that setting)."""

import json

import pytest

from keras_cifar import config as config
from keras_cifar.nn.losses import LOSSES
from keras_cifar.nn.optim import OPTIMIZERS
from keras_cifar.nn.schedules import SCHEDULES
from tests.helpers import REPO, WIDTH, keras_cifar_each

pytestmark = pytest.mark.backend

SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))


def plugins_recipe(tmp_path):
    """A recipe with one variant per registered loss, optimizer and schedule, those of the baseline last
    (they reuse the baseline's run once it has finished)."""
    default = config.Config()
    variants = sorted(
        [(name == default.loss, f"  loss_{name}: {{loss: {name}}}") for name in LOSSES]
        + [(name == default.optimizer.name, f"  optimizer_{name}: {{optimizer: {{name: {name}}}}}") for name in OPTIMIZERS]
        + [(name == default.schedule.name, f"  schedule_{name}: {{schedule: {{name: {name}}}}}") for name in SCHEDULES],
        key=lambda v: v[0],
    )
    path = tmp_path / "plugins.yaml"
    path.write_text("name: plugins\nvariants:\n" + "\n".join(line for _, line in variants) + "\n")
    return path


# Two processes, each running its recipes in one `run`, which start with runs that are no baseline twin:
# the baseline is trained once, in the first, and the other recipes' copies of it reuse that run; then a
# third `run` of the tricks fast.yaml does not train (tricks_on_their_own).
LANES = (("baseline", "activation", "bn", "momentum", "shortcut"), ("batch_size", "plugins", "loss", "lr", "tune", "fast"))


def tricks_on_their_own():
    """tricks.yaml's variants that differ from its baseline in a setting that fast.yaml's `fast` variant
    lacks. The others (each one setting of `fast`) are trained through it, and the four that change
    training or evaluation together in tests/test_train.py's `trained` sweep: one compiled model less
    each (about 13 s on JAX)."""
    tricks = config.load_recipe(REPO / "recipes" / "tricks.yaml").variants
    fast = config.load_recipe(REPO / "recipes" / "fast.yaml").variants["fast"].flat()
    baseline = tricks["baseline"].flat()
    return [
        name
        for name, variant in tricks.items()
        if any(value != baseline[key] and value != fast[key] for key, value in variant.flat().items())
    ]


@pytest.mark.timeout(600)  # 17 models compiled, in two processes
def test_every_variant_of_every_shipped_recipe_and_plugin_completes(tmp_path, jpeg_tree):
    out = tmp_path / "out"
    scale = [
        "--data",
        jpeg_tree[0],
        "--out",
        out,
        "--epochs",
        "1",
        "--subset",
        "64",
        "--set",
        f"model.width={WIDTH}",
        "--set",
        "data.eval_subset=32",
    ]
    files = {path.stem: path for path in SHIPPED} | {"plugins": plugins_recipe(tmp_path)}
    assert sorted([*LANES[0], *LANES[1], "tricks"]) == sorted(files)  # a new recipe joins a lane
    alone = tricks_on_their_own()
    assert alone == ["tta_flip", "celu"]  # fast has flip_translate and gelu
    commands = [["run", *(files[name] for name in lane), *scale] for lane in LANES]
    for code, output in keras_cifar_each([*commands, ["run", files["tricks"], "--variants", ",".join(alone), *scale]]):
        assert code == 0, output[-3000:]
    trained = 0
    for recipe in map(config.load_recipe, files.values()):
        for variant in recipe.variants:
            if recipe.name == "tricks" and variant not in alone:
                continue
            metrics = json.loads((out / recipe.name / variant / "seed0" / "metrics.json").read_text())
            assert (metrics["status"], metrics["epochs_completed"]) == ("completed", 1), (recipe.name, variant)
            trained += "reused_from" not in metrics
    assert trained >= 17  # 13 distinct configs in the shipped recipes, 4 more plug-ins (adam, adamw, 2 schedules)
