"""Recipe schema: precedence, overrides, and one test per kind of error (named file, key, what's allowed)."""

import pytest

from keras_cifar import config as cfg
from keras_cifar.core.errors import ConfigError
from tests.helpers import REPO, tiny_recipe


def test_precedence_defaults_base_variant_command_line(tmp_path):
    path = tiny_recipe(tmp_path, "  a: {}\n  b: {model: {width: 16}, optimizer: {momentum: 0.0}}\n")
    recipe = cfg.load_recipe(path)
    runs = cfg.sweep(recipe, cfg.parse_sets(["optimizer.learning_rate=0.05", "train.epochs=3"]), seeds=[1, 2])
    assert [(r.variant, r.seed) for r in runs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    a, b = runs[0].config, runs[2].config
    assert a.model.width == 8 and b.model.width == 16  # base, then variant
    assert a.optimizer.momentum == 0.9 and b.optimizer.momentum == 0.0  # default, then variant
    assert a.optimizer.learning_rate == b.optimizer.learning_rate == 0.05  # command line wins
    assert a.train.epochs == 3 and a.data.batch_size == 32
    assert runs[1].config.train.seeds == (2,)  # each run names its own seed


def test_activations_are_the_keras_activations_a_network_can_use():
    """config.ACTIVATIONS, which model.activation is checked against without importing Keras, is exactly
    the set of names keras.activations.get accepts whose function takes a tensor alone and keeps its
    shape: a Keras that adds or drops one fails here, so the list cannot go stale."""
    import keras

    x = keras.ops.ones((2, 4))
    usable = set()
    for name in dir(keras.activations):
        try:
            if keras.activations.get(name)(x).shape == x.shape:
                usable.add(name)
        except (ValueError, TypeError):  # not an activation (get, serialize), or one that needs more arguments
            pass
    assert usable == set(cfg.ACTIVATIONS) and len(cfg.ACTIVATIONS) == len(usable)


def test_every_shipped_recipe_is_valid_and_matches_the_report_variants():
    expected = {
        "baseline": ["baseline"],
        "bn": ["bn", "no_bn"],
        "shortcut": ["shortcut", "no_shortcut"],
        "momentum": ["momentum", "no_momentum"],
        "activation": ["relu", "tanh", "sigmoid"],
        "loss": ["cross_entropy", "multi_margin"],
        "lr": ["cosine", "fixed"],
        "batch_size": ["batch64", "batch128", "batch256"],
    }
    for name, variants in expected.items():
        recipe = cfg.load_recipe(REPO / "recipes" / f"{name}.yaml")
        assert list(recipe.variants) == variants
        assert recipe.description
        for config in recipe.variants.values():
            assert config.train.epochs == 200 and config.model.width == 64
    act = cfg.load_recipe(REPO / "recipes" / "activation.yaml").variants
    assert [c.model.activation for c in act.values()] == ["relu", "tanh", "sigmoid"]
    assert cfg.load_recipe(REPO / "recipes" / "bn.yaml").variants["no_bn"].model.batch_norm is False


def test_yaml_float_written_without_dot_is_read_as_a_number(tmp_path):
    path = tiny_recipe(tmp_path, extra_base="  optimizer: {weight_decay: 5e-4}\n")
    assert cfg.load_recipe(path).variants["a"].optimizer.weight_decay == 5e-4


@pytest.mark.parametrize(
    "base, variants, message",
    [
        ("  model: {depth: 34}\n", "  a: {}\n", "unknown key 'model.depth'; allowed: name, width, batch_norm"),
        ("  model: {width: wide}\n", "  a: {}\n", "model.width: expected an integer, got 'wide'"),
        ("  train: {epochs: -3}\n", "  a: {}\n", "train.epochs: -3 is not allowed; use a positive integer"),
        ("  data: {batch_size: 0}\n", "  a: {}\n", "data.batch_size: 0 is not allowed"),
        ("  model: {batch_norm: 1}\n", "  a: {}\n", "model.batch_norm: expected true or false"),
        (
            "",
            "  a: {model: {activation: swishy}}\n",
            "variants.a: model.activation: 'swishy' is not allowed; use relu, tanh, sigmoid",
        ),
        ("", "  a: {loss: hinge}\n", "loss: 'hinge' is not allowed; use cross_entropy / multi_margin"),
        ("", "  a: {optimizer: 0.1}\n", "'optimizer' must be a mapping"),
    ],
)
def test_bad_values_name_file_key_and_allowed(tmp_path, base, variants, message):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nbase:\n" + (base or "  {}\n") + "variants:\n" + variants)
    with pytest.raises(ConfigError) as err:
        cfg.load_recipe(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nbase:\n  model: {width: 4\nvariants: {a: {}}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line \d+"):
        cfg.load_recipe(path)


def test_unknown_top_level_key_and_missing_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nvariant: {a: {}}\n")
    with pytest.raises(ConfigError, match="unknown top-level key 'variant'; allowed: name, description"):
        cfg.load_recipe(path)
    with pytest.raises(ConfigError, match="nope.yaml: cannot read recipe"):
        cfg.load_recipe(tmp_path / "nope.yaml")


def test_unknown_variant_lists_the_recipe_variants(tmp_path):
    recipe = cfg.load_recipe(tiny_recipe(tmp_path, "  a: {}\n  b: {}\n"))
    with pytest.raises(ConfigError, match="unknown variant c; this recipe has a, b"):
        cfg.sweep(recipe, variants=["c"])


def test_set_values_are_typed_and_validated():
    assert cfg.parse_sets(["model.width=16", "model.batch_norm=false", "train.seeds=[0, 1]"]) == {
        "model": {"width": 16, "batch_norm": False},
        "train": {"seeds": [0, 1]},
    }
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        cfg.parse_sets(["model.width"])
    with pytest.raises(ConfigError, match="command line: unknown key 'optimizer.lr'"):
        cfg.merge(cfg.defaults(), cfg.parse_sets(["optimizer.lr=0.1"]), "command line")


def test_cli_config_error_exits_2_and_writes_nothing(tmp_path, cli):
    path = tiny_recipe(tmp_path)
    result = cli("run", path, "--data", "synthetic:100", "--out", tmp_path / "out", "--set", "train.epochs=0")
    assert result.exit_code == 2
    assert "train.epochs: 0 is not allowed" in result.output
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_runs_without_training(tmp_path, cli):
    result = cli("run", tiny_recipe(tmp_path, "  a: {}\n  b: {}\n"), "--seeds", "0,1", "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 0
    assert [line.split(":")[0] for line in result.output.splitlines()] == [
        "tiny/a/seed0",
        "tiny/a/seed1",
        "tiny/b/seed0",
        "tiny/b/seed1",
        "estimated total",
    ]
    assert "tiny/a/seed0: new, width 8, 1 epoch, batch 32, no timing yet at this scale" in result.output
    assert "estimated total: unknown until the first epoch (nothing timed yet at this scale)" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "section, message",
    [
        ("report: {title: T, source: Fig. 1, claim: c, verdict: x}", "unknown key 'report.verdict'"),
        ("report: {title: T, source: Fig. 1}", "report.claim: expected a string"),
        ("report: {title: T, source: Fig. 1, claim: c, order: [a, z]}", "report.order: z is not a variant of this recipe"),
        ("report: {title: T, source: Fig. 1, claim: c, accuracy: {a: 120}}", "report.accuracy.a: expected a percentage"),
        ("report: [a, b]", "'report' must be a mapping"),
    ],
)
def test_bad_report_sections_name_file_and_key(tmp_path, section, message):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\n{section}\nvariants: {{a: {{}}, b: {{}}}}\n")
    with pytest.raises(ConfigError) as err:
        cfg.load_recipe(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_shipped_recipes_carry_the_reports_claims_and_the_readme_shows_them():
    from keras_cifar.study.compare import claims_table

    claim = cfg.load_recipe(REPO / "recipes" / "activation.yaml").claim
    assert claim.order == ("relu", "tanh", "sigmoid") and claim.accuracy["tanh"] == 92.37 and claim.figure == 6
    readme = (REPO / "README.md").read_text()
    generated = readme.split("<!-- recipes: made by `keras-cifar recipes --into` -->\n")[1].split("<!-- /recipes -->")[0]
    assert generated == claims_table() + "\n"  # keras-cifar recipes --into README.md remakes it
