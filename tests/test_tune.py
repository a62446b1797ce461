"""keras-cifar tune: the tune section, the search space, the HyperModel, searches, resume, distribution."""

import csv
import gc
import json
import os
import socket
import subprocess
import sys
import weakref

import keras
import keras_tuner as kt
import pytest
import yaml

from keras_cifar import config as cfg
from keras_cifar.core.errors import ConfigError
from keras_cifar.core.registry import Entry
from keras_cifar.data import sources as data_lib
from keras_cifar.nn.networks import MODELS
from keras_cifar.tools import trials, tune
from keras_cifar.training.runs import RunFolder
from keras_cifar.training.sweep import run_sweep
from tests.helpers import REPO, tiny_compile_model, tiny_network, tiny_recipe

TUNE = "tune:\n  max_trials: 3\n  epochs: 1\n  space: {learning_rate: {min: 0.01, max: 0.2}, batch_size: [32, 64]}\n"
DATA = "synthetic:200"


def tune_recipe(tmp_path, section=TUNE):
    return tiny_recipe(tmp_path, variants="  a: {}\n" + section)


def search_of(tmp_path, section=TUNE, sets=()):
    return cfg.search_of(cfg.load_recipe(tune_recipe(tmp_path, section)), cfg.parse_sets(sets))


@pytest.fixture
def tiny_model(monkeypatch):
    """Trials train a model of a few hundred weights: these tests are about the search's bookkeeping."""
    monkeypatch.setattr(tune, "compile_model", tiny_compile_model)


def read_rows(folder):
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------- the section


def test_tune_section_defaults_recipe_and_command_line(tmp_path):
    plain = cfg.load_recipe(tiny_recipe(tmp_path))
    assert plain.tune == {
        "tuner": "random",
        "objective": "val_accuracy",
        "max_trials": 10,
        "epochs": 10,
        "executions_per_trial": 1,
        "seed": 1,
        "space": {"learning_rate": {"min": 0.01, "max": 0.3}, "batch_size": [64, 128, 256]},
    }
    search = search_of(
        tmp_path,
        sets=[
            "tune.max_trials=2",
            "tune.space.momentum=[0.0, 0.9]",
            "tune.space.batch_size=null",
            "tune.space.weight_decay={min: 1e-5, max: 1e-3}",
            "model.width=8",
        ],
    )
    assert search.tune["max_trials"] == 2 and search.tune["epochs"] == 1
    assert search.tune["space"] == {
        "learning_rate": {"min": 0.01, "max": 0.2},
        "momentum": [0.0, 0.9],
        "weight_decay": {"min": 1e-5, "max": 1e-3},
    }
    assert search.config.model.width == 8 and search.variant == "a"  # from --set; the recipe's is 8 too


def test_shipped_tune_recipe_searches_the_baseline():
    recipe = cfg.load_recipe(REPO / "recipes" / "tune.yaml")
    baseline = cfg.load_recipe(REPO / "recipes" / "baseline.yaml")
    assert list(recipe.variants.values()) == list(baseline.variants.values())
    assert set(recipe.tune["space"]) == {"learning_rate", "batch_size"}
    assert recipe.tune["objective"] == "val_accuracy"


@pytest.mark.parametrize(
    "section, message",
    [
        ("tune: {tuner: grid}", "tune.tuner: 'grid' is not allowed; use random / bayesian / hyperband"),
        ("tune: {objective: test_accuracy}", "tune.objective: 'test_accuracy' is not allowed; use val_accuracy or val_loss"),
        ("tune: {max_trials: many}", "tune.max_trials: expected an integer, got 'many'"),
        ("tune: {epochs: 0}", "tune.epochs: 0 is not allowed"),
        (
            "tune: {trials: 3}",
            "unknown key 'tune.trials'; allowed: tuner, objective, max_trials, epochs, executions_per_trial, seed, space",
        ),
        ("tune: {space: {dropout: [0.1]}}", "unknown key 'tune.space.dropout'; allowed: learning_rate, batch_size"),
        ("tune: {space: {learning_rate: {min: 0.2, max: 0.1}}}", "tune.space.learning_rate: min (0.2) must be below max (0.1)"),
        ("tune: {space: {weight_decay: {min: 0, max: 1.0e-3}}}", "tune.space.weight_decay: a range is sampled log-uniformly"),
        ("tune: {space: {learning_rate: {low: 0.1}}}", "tune.space.learning_rate: a range has exactly the keys min and max"),
        (
            "tune: {space: {batch_size: {min: 32, max: 256}}}",
            "tune.space.batch_size: expected a non-empty list of choices, got",
        ),
        ("tune: {space: {batch_size: [64, -1]}}", "tune.space.batch_size[1]: -1 is not allowed; use a positive integer"),
        ("tune: {space: {momentum: [0.9, 1.5]}}", "tune.space.momentum[1]: 1.5 is not allowed"),
        ("tune: {space: {batch_size: [64, 64]}}", "tune.space.batch_size: choices repeat"),
        ("tune: {space: {learning_rate: null, batch_size: null}}", "tune.space is empty"),
        ("tune: [random]", "'tune' must be a mapping"),
    ],
)
def test_bad_tune_sections_name_file_and_key(tmp_path, section, message):
    path = tune_recipe(tmp_path, section + "\n")
    with pytest.raises(ConfigError) as err:
        cfg.load_recipe(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_bad_command_line_and_options_are_one_line_errors(tmp_path, cli):
    path = tune_recipe(tmp_path)
    for args, message in [
        (["--set", "tune.tuner=grid"], "command line: tune.tuner: 'grid' is not allowed"),
        (["--worker", "1"], "--worker needs --chief HOST:PORT"),
        (["--chief", "localhost"], "--chief: expected HOST:PORT"),
        (["--worker", "chief1", "--chief", "127.0.0.1:1"], "--worker: a worker ID is a name"),
        (["--variant", "b"], "unknown variant b"),
    ]:
        result = cli("tune", path, "--data", DATA, *args)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_tune_needs_a_variant_when_the_recipe_has_several(tmp_path):
    path = tiny_recipe(tmp_path, variants="  a: {}\n  b: {model: {width: 16}}\n")
    with pytest.raises(ConfigError, match="choose the one to tune with --variant"):
        cfg.search_of(cfg.load_recipe(path))
    assert cfg.search_of(cfg.load_recipe(path), variant="b").config.model.width == 16


# ------------------------------------------------------------------------------------- the space


def test_search_space_types_ranges_and_defaults(tmp_path):
    search = search_of(
        tmp_path,
        sets=[
            "optimizer.learning_rate=0.5",
            "tune.space.momentum={min: 0.5, max: 0.95}",
            "tune.space.weight_decay=[0.0, 5.0e-4]",
        ],
    )
    hp = kt.HyperParameters()
    values = trials.trial_values(hp, search)
    space = {p.name: p for p in hp.space}
    lr, batch, momentum, wd = (space[n] for n in ("learning_rate", "batch_size", "momentum", "weight_decay"))
    assert isinstance(lr, kt.engine.hyperparameters.Float) and lr.sampling == "log"
    assert (lr.min_value, lr.max_value, lr.default) == (0.01, 0.2, 0.2)  # the recipe's 0.5, clipped
    assert isinstance(batch, kt.engine.hyperparameters.Choice) and batch.values == [32, 64] and batch.default == 32
    assert momentum.sampling == "linear" and momentum.default == 0.9
    assert wd.values == [0.0, 5e-4] and wd.default == 5e-4
    assert values == {"learning_rate": 0.2, "batch_size": 32, "momentum": 0.9, "weight_decay": 5e-4}
    hp.values.update(learning_rate=0.03, batch_size=64)
    config = trials.trial_config(search, trials.trial_values(hp, search), 3, [7])
    assert config.optimizer.learning_rate == 0.03 and config.data.batch_size == 64
    assert config.train.epochs == 3 and config.train.seeds == (7,)
    assert type(config.data.batch_size) is int


def test_search_folder_refuses_a_different_search(tmp_path):
    folder = tmp_path / "out" / "tiny" / "search"
    tune.check_folder(folder, search_of(tmp_path), DATA)
    tune.check_folder(folder, search_of(tmp_path, sets=["tune.max_trials=9"]), DATA)  # extending is fine
    with pytest.raises(
        ConfigError,
        match=r"already holds a different search \(differs in model.width, "
        r"tune.space.batch_size\)",
    ):
        tune.check_folder(folder, search_of(tmp_path, sets=["model.width=16", "tune.space.batch_size=[8]"]), DATA)
    with pytest.raises(ConfigError, match="differs in data_source"):
        tune.check_folder(folder, search_of(tmp_path), "synthetic:300")


def test_best_recipe_is_the_trial_as_a_run_recipe(tmp_path):
    search = search_of(tmp_path, sets=["tune.executions_per_trial=2", "tune.epochs=3"])
    hp = kt.HyperParameters()
    trials.trial_values(hp, search)
    hp.values.update(learning_rate=0.05, batch_size=64)
    trial = kt.engine.trial.Trial(hp, trial_id="4", status="COMPLETED")
    trial.score = 0.5
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(trials.best_recipe(search, trial)))
    recipe = cfg.load_recipe(path)
    assert recipe.name == "tiny" and list(recipe.variants) == ["trial_4"]
    runs = cfg.sweep(recipe)
    assert [r.seed for r in runs] == [0, 1]  # one run per execution, seeded as the executions were
    config = recipe.variants["trial_4"]
    assert config == trials.trial_config(search, {"learning_rate": 0.05, "batch_size": 64}, 3, [0, 1])
    assert "val_accuracy 50.00% after 3 epoch(s)" in recipe.description


# ------------------------------------------------------------------------------------- the model


class StepCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def test_batch_size_reaches_fit_and_the_schedule(tmp_path, tiny_model):
    search = search_of(tmp_path)
    splits = data_lib.split(data_lib.synthetic(200), None, None)
    model_of = tune.ResNetHyperModel(search, len(splits.train[1]))
    hp = kt.HyperParameters()
    assert trials.trial_values(hp, search)["batch_size"] == 32  # the recipe's
    hp.values["batch_size"] = 64  # the trial's
    model = model_of.build(hp)
    schedule = model.optimizer.get_config()["learning_rate"]["config"]
    assert schedule["total_steps"] == 4  # the cosine schedule spans this trial's steps: ceil(200 / 64)
    counter = StepCounter()
    metrics = model_of.fit(hp, model, splits.train, splits.val, epochs=1, callbacks=[counter])
    assert counter.steps == 4
    assert set(metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model_of.config(hp).train.seeds == (1,)  # a second execution of this trial: the next seed


def test_each_trial_is_built_under_the_recipes_distribution(tmp_path, tiny_model, monkeypatch):
    """train.distribution reaches every trial's model, as it reaches a run's (cluster.distribute is
    what turns data_parallel on; the test suite's JAX runs with several devices are in test_cluster)."""
    asked = []
    monkeypatch.setattr(
        tune.cluster, "distribute", lambda config: asked.append(config.train.distribution) or tune.cluster.Placement()
    )
    search = search_of(tmp_path, sets=["train.distribution=data_parallel"])
    tune.ResNetHyperModel(search, 200).build(kt.HyperParameters())
    assert asked == ["data_parallel"]


# ------------------------------------------------------------------------------------- searches


def test_tiny_search_writes_results_frees_models_and_final_matches(tmp_path, cli, monkeypatch, jpeg_tree):
    alive = []  # weak references to every model built, in order

    def compile_and_watch(config, steps):
        assert all(ref() is None for ref in alive), "a finished trial's model is still in memory"
        model = compile_model(config, steps)
        alive.append(weakref.ref(model))
        return model

    compile_model = tune.compile_model
    monkeypatch.setattr(tune, "compile_model", compile_and_watch)
    out = tmp_path / "out"
    result = cli(
        "tune",
        tune_recipe(tmp_path),
        "--data",
        jpeg_tree[0],
        "--subset",
        "256",
        "--out",
        out,
        "--final",
        "--set",
        "tune.max_trials=2",
    )  # 256 images: whole batches of 32 and 64, one shape to compile
    assert result.exit_code == 0, result.output
    assert len(alive) == 3  # KerasTuner's first build declares the space, then one per trial
    gc.collect()
    assert all(ref() is None for ref in alive)

    folder = out / "tiny" / "search"
    rows = read_rows(folder)
    assert [r["trial"] for r in rows] == ["0", "1"] and {r["status"] for r in rows} == {"completed"}
    assert list(rows[0]) == ["trial", "learning_rate", "batch_size", "epochs", "val_accuracy", "status", "seconds"]
    assert all(0.01 <= float(r["learning_rate"]) <= 0.2 and r["batch_size"] in ("32", "64") for r in rows)
    assert all(float(r["seconds"]) > 0 for r in rows)
    md = (folder / "trials.md").read_text()
    assert "| trial | learning_rate | batch_size | epochs | val_accuracy | status | seconds |" in md
    assert (folder / "objective.png").stat().st_size > 10_000
    assert "trial 1 completed: val_accuracy" in result.output and "epoch 1/1" in result.output

    best = yaml.safe_load((folder / "best.yaml").read_text())
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    (variant,) = best["variants"]
    assert variant == f"trial_{best_row['trial']}"
    assert best["base"]["data"]["batch_size"] == int(best_row["batch_size"])
    assert best["base"]["optimizer"]["learning_rate"] == pytest.approx(float(best_row["learning_rate"]))
    assert cli("run", folder / "best.yaml", "--data", jpeg_tree[0], "--dry-run").exit_code == 0
    assert best["base"]["data"]["subset"] == 256

    # --final trained best.yaml as `run` does: same val accuracy as the trial, plus a test accuracy
    metrics = RunFolder(out / "tiny" / variant / "seed0").read_metrics()
    assert metrics.status == "completed" and metrics.test_accuracy is not None
    assert metrics.val_accuracy == pytest.approx(float(best_row["val_accuracy"]), abs=1e-6)
    assert f"final: trial {best_row['trial']}, test accuracy" in result.output


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches(tmp_path, tuner, tiny_model):
    search = search_of(tmp_path, sets=[f"tune.tuner={tuner}", "tune.max_trials=2", "tune.epochs=3"])
    best = tune.run_search(search, data_lib.load(DATA), tmp_path / "out")
    rows = read_rows(tmp_path / "out" / "tiny" / "search")
    assert [r["status"] for r in rows] == ["completed", "completed"]  # hyperband too stops at max_trials
    assert [r["epochs"] for r in rows] == (["1", "1"] if tuner == "hyperband" else ["3", "3"])
    assert best in ("0", "1") and cfg.load_recipe(tmp_path / "out" / "tiny" / "search" / "best.yaml")


def test_a_promoted_hyperband_trial_scores_what_its_best_yaml_retrains(tmp_path, monkeypatch):
    """Hyperband's later round trains a trial's values again for 3 epochs: its score is that of the
    run its best.yaml trains (same weights, schedule and data order), not of the earlier trial's
    weights trained on with a fresh optimizer. A tiny registered network keeps both short."""
    monkeypatch.setitem(MODELS.entries, "tiny", Entry(tiny_network, "a tiny test network"))
    search = search_of(tmp_path, sets=["model.name=tiny", "tune.tuner=hyperband", "tune.max_trials=4", "tune.epochs=3"])
    cifar = data_lib.load(DATA)
    tune.run_search(search, cifar, tmp_path / "out")
    tuner = tune.make_tuner(search, tmp_path / "out" / "tiny" / "search", 200)
    (promoted,) = [t for t in tuner.oracle.trials.values() if "tuner/trial_id" in t.hyperparameters.values]
    assert promoted.status == "COMPLETED" and trials.trial_epochs(promoted.hyperparameters, search) == 3
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(trials.best_recipe(search, promoted)))
    ((_, metrics),) = run_sweep(cfg.sweep(cfg.load_recipe(tmp_path / "best.yaml")), cifar, tmp_path / "retrain")
    assert metrics.val_loss == pytest.approx(promoted.metrics.get_last_value("val_loss"), abs=1e-5)


def test_resume_retries_the_interrupted_trial_only(tmp_path, cli, monkeypatch, tiny_model):
    fits = []
    fit = tune.ResNetHyperModel.fit

    def fit_or_interrupt(self, hp, model, *args, **kwargs):
        fits.append(dict(hp.values))
        if interrupt and len(fits) == 2:
            raise KeyboardInterrupt
        return fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(tune.ResNetHyperModel, "fit", fit_or_interrupt)
    args = ("tune", tune_recipe(tmp_path), "--data", DATA, "--out", tmp_path / "out", "--set", "tune.max_trials=2")
    interrupt = True
    assert cli(*args).exit_code == 130
    folder = tmp_path / "out" / "tiny" / "search"
    assert [r["status"] for r in read_rows(folder)] == ["completed"]
    assert json.loads((folder / "oracle.json").read_text())["ongoing_trials"] == {"tuner0": "1"}

    interrupt = False
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "resuming: 1 trial(s) already ended" in result.output
    assert len(fits) == 3 and fits[2] == fits[1]  # only the interrupted trial ran again, same values
    assert [r["status"] for r in read_rows(folder)] == ["completed", "completed"]
    assert json.loads((folder / "oracle.json").read_text())["run_times"] == {"0": 1, "1": 1}


def test_failed_trials_are_reported(tmp_path, cli, monkeypatch, tiny_model):
    def fail(self, hp, model, *args, **kwargs):
        raise ValueError("batch too large for the device")

    monkeypatch.setattr(tune.ResNetHyperModel, "fit", fail)
    result = cli("tune", tune_recipe(tmp_path), "--data", DATA, "--out", tmp_path / "out", "--set", "tune.max_trials=4")
    assert result.exit_code == 1  # no trial completed
    assert "trial 1 failed: ValueError: batch too large for the device" in result.output
    assert "search stopped: Number of consecutive failures exceeded the limit of 3" in result.output
    folder = tmp_path / "out" / "tiny" / "search"
    assert [r["status"] for r in read_rows(folder)] == ["failed"] * 3
    assert "Trial 0 failed: ValueError: batch too large for the device" in (folder / "trials.md").read_text()
    assert not (folder / "best.yaml").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_two_workers_on_loopback(tmp_path):
    """One worker through --worker, one through KerasTuner's own variables; a third, whose recipe
    differs from the chief's (--set model.width=16), stops at once without running a trial."""
    recipe = tune_recipe(tmp_path)
    host, port = "127.0.0.1", _free_port()
    address = f"{host}:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow"}
    base = [
        sys.executable,
        "-c",
        "import sys; from tests.helpers import tune_with_tiny_model; sys.exit(tune_with_tiny_model(sys.argv[1:]))",
        "tune",
        str(recipe),
        "--data",
        DATA,
    ]
    roles = {  # name: (options, environment, exit code)
        "chief": (["--chief", address], {}, 0),
        "w1": (["--worker", "1", "--chief", address], {}, 0),
        "w2": ([], {"KERASTUNER_TUNER_ID": "worker-2", "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port)}, 0),
        "other": (["--worker", "other", "--chief", address, "--set", "model.width=16"], {}, 2),
    }
    procs = {}
    for name, (extra, variables, _) in roles.items():  # each with its own folder, as on separate machines
        log = open(tmp_path / f"{name}.log", "w")
        procs[name] = subprocess.Popen(
            base + ["--out", str(tmp_path / name), *extra],
            cwd=REPO,
            env={**env, **variables},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for name, proc in procs.items():
            assert proc.wait(timeout=240) == roles[name][2], (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    other = (tmp_path / "other.log").read_text()
    assert f"this worker's search differs from the one the chief at {address} serves" in other
    assert "[worker-other] trial" not in other
    ran = {}
    for name in ("w1", "w2"):
        log = (tmp_path / f"{name}.log").read_text()
        ran[name] = {
            line.split()[2]
            for line in log.splitlines()
            if line.startswith(f"[worker-{name[1]}] trial ") and " completed: " in line
        }
    assert ran["w1"] and ran["w2"], ran  # both workers took part
    assert ran["w1"].isdisjoint(ran["w2"]) and ran["w1"] | ran["w2"] == {"0", "1", "2"}
    folder = tmp_path / "chief" / "tiny" / "search"
    assert json.loads((folder / "oracle.json").read_text())["run_times"] == {"0": 1, "1": 1, "2": 1}
    assert [r["status"] for r in read_rows(folder)] == ["completed"] * 3
    assert (folder / "best.yaml").exists() and (folder / "objective.png").exists()
    assert not (tmp_path / "w1" / "tiny" / "search" / "trials.csv").exists()  # only the chief writes results
