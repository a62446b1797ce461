"""Every command as a user runs it: the installed `keras-cifar` in a subprocess, once each. `run` is the
shared sweep (tests/conftest.py) and the recipe matrix (test_recipes.py), on every backend; the other
commands' work on each backend is tested in-process (test_serving.py, test_landscape.py, test_tune.py),
and bench starts a process per backend itself."""

import json
import shlex
import shutil
import signal
import tarfile

import keras
import pytest
import yaml

from keras_cifar import __version__
from keras_cifar import config as config
from keras_cifar.config import SHIPPED_RECIPES
from keras_cifar.core.record import DataSizes, Epoch, RunRecord
from keras_cifar.study.compare import claims_table
from keras_cifar.training import tracking
from keras_cifar.training.runs import RunFolder
from keras_cifar.training.train import compile_model
from tests.helpers import WIDTH, Command, keras_cifar, keras_cifar_each, lacking, make_run, write_jpeg_tree


@pytest.fixture
def untrained_run(tmp_path):
    """A run folder holding a width-8 classifier as it was initialized (what the commands read of a run)."""
    cfg = config.Config.from_dict({"model": {"width": WIDTH}})
    run = make_run(tmp_path / "out", "tiny", "a", 0, 0.1)
    RunFolder(run).write_config(config.RunSpec("tiny", "a", 0, cfg), "synthetic:100")  # the whole config
    compile_model(cfg, steps_per_epoch=1).save(run / "model.keras")
    keras.backend.clear_session()
    return run


def test_export_predict_evaluate_and_landscape(untrained_run, tmp_path, jpeg_tree):
    code, output = keras_cifar("export", untrained_run, "--out", tmp_path / "export")
    assert code == 0 and output.splitlines()[-1] == f"exported SavedModel to {tmp_path / 'export' / '1'}", output
    with tarfile.open(jpeg_tree[0]) as tar:  # two test images of the JPEG tree, and half of a third
        members = [m for m in tar.getmembers() if "/test/" in m.name][:3]
        images = [tmp_path / f"{i}-{m.name.split('/')[-2]}.jpg" for i, m in enumerate(members)]
        for image, member in zip(images, members):
            image.write_bytes(tar.extractfile(member).read())
    images[2].write_bytes(images[2].read_bytes()[:200])
    (p_code, predicted), (e_code, evaluated), (l_code, landscape) = keras_cifar_each(
        [
            ["predict", tmp_path / "export", *images, "--json"],
            ["evaluate", untrained_run, "--json"],  # on the data the run recorded, its figure beside it
            [
                "landscape",
                untrained_run,
                "--points",
                "3",
                "--images",
                "64",
                "--data",
                jpeg_tree[0],
                "--out",
                tmp_path / "landscape",
            ],
        ],
        cwd=tmp_path,
    )
    assert p_code == 1, predicted  # one file could not be read: named, the others predicted
    result = json.loads(predicted[predicted.index("{") : predicted.rindex("}") + 1])
    assert [p["file"] for p in result["predictions"]] == [str(i) for i in images[:2]]
    assert [len(p["top"]) for p in result["predictions"]] == [3, 3]
    assert f"error: {images[2]}: not a readable image" in predicted
    assert e_code == 0, evaluated
    scores = json.loads(evaluated.splitlines()[-1])
    assert scores["data"] == "synthetic:100" and scores["images"] == 10 and len(scores["confusion"]) == 10
    assert scores["figure"] == str(untrained_run / "confusion_matrix.png") and not (tmp_path / "confusion_matrix.png").exists()
    assert (untrained_run / "confusion_matrix.png").stat().st_size > 10_000
    assert l_code == 0, landscape
    (landscape_run,) = json.loads((tmp_path / "landscape" / "landscape_1d.json").read_text())["runs"]
    assert landscape_run["non_finite_points"] == 0


def test_report_and_compare(tmp_path):
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.52, 0.63)]):
        make_run(tmp_path / "out", "bn", "bn", seed, b)
        make_run(tmp_path / "out", "bn", "no_bn", seed, a)
    code, output = keras_cifar("report", tmp_path / "out" / "bn", "--out", tmp_path / "figures")
    assert code == 0, output
    rows = [line for line in output.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["bn", "no_bn"]
    assert "**61.50 ± 2.12** (n=2)" in rows[1]
    assert (tmp_path / "figures" / "bn" / "test_curves.png").stat().st_size > 10_000
    code, output = keras_cifar("compare", tmp_path / "out", "--out", tmp_path / "page.md")
    assert code == 0 and output.strip() == f"wrote {tmp_path / 'page.md'}", output
    page = (tmp_path / "page.md").read_text()
    assert "| [bn](#bn) | BN better (Fig. 3) |" in page and "| shortcut (not run yet) |" in page
    code, output = keras_cifar("compare", tmp_path / "out", "--out", tmp_path / "page.md", "--notes", tmp_path / "none.md")
    assert code == 2 and "none.md" in output and "Traceback" not in output


def test_tune(tmp_path, jpeg_tree):
    recipe = tmp_path / "tune.yaml"
    recipe.write_text(
        f"name: search\nbase:\n  model: {{width: {WIDTH}}}\n  data: {{batch_size: 32, eval_subset: 32}}\n"
        "tune:\n  max_trials: 2\n  epochs: 1\n  space: {learning_rate: {min: 0.01, max: 0.2}}\n"
    )
    code, output = keras_cifar("tune", recipe, "--data", jpeg_tree[0], "--subset", "64", "--out", tmp_path / "out")
    assert code == 0, output
    assert "trial 1 completed: val_accuracy" in output
    folder = tmp_path / "out" / "search" / "search"
    assert f"wrote {folder}/: trials.csv, trials.md, objective.png, best.yaml (trial " in output  # where it is
    assert (folder / "best.yaml").is_file()


def test_bench(tmp_path):
    """Keras on PyTorch against the plain PyTorch reference, each in a process of its own."""
    code, output = keras_cifar(
        "bench",
        "--backends",
        "torch",
        "--reference",
        "--epochs",
        "2",
        "--data",
        "synthetic:64",
        "--set",
        f"model.width={WIDTH}",
        "--set",
        "data.eval_subset=20",
        "--json",
        tmp_path / "bench.json",
    )
    assert code == 0, output
    record = json.loads((tmp_path / "bench.json").read_text())
    assert [r["backend"] for r in record["results"]] == ["torch"]
    assert all(r["status"] == "completed" and r["epoch_seconds"] > 0 for r in record["results"])
    assert record["reference"]["modes"]["fp32"]["epoch_seconds"] > 0
    assert "| keras-cifar torch fp32 | cpu (" in output and "| PyTorch reference fp32 | cpu |" in output


def test_bench_by_default_compares_the_installed_backends(tmp_path):
    """In a venv without JAX, `bench` skips it and says so (and that --backends chooses), then benches the
    others; the first decode of the data says that it takes a while, once. Stopped once that is seen."""
    data, _ = write_jpeg_tree(tmp_path / "tree.tar.gz", 2, 2)
    env = {**lacking(tmp_path, "jax"), "KERAS_CIFAR_CACHE": str(tmp_path / "cache")}
    command = Command("bench", "--data", data, "--epochs", "2", env=env, program=[shutil.which("keras-cifar")])
    command.wait_for(rf"^decoding {data} once into {tmp_path / 'cache'}/")
    assert command.signal_all(signal.SIGKILL) == -signal.SIGKILL
    assert command.lines[:3] == [
        "bench: jax not installed, skipped (--backends chooses the backends)",
        "",
        "bench 1/2: tensorflow fp32",
    ], command.output


def test_a_folder_of_another_config_is_refused_with_the_command_that_keeps_both(tmp_path):
    """A tiny run, then the README's `--quick` into the same OUT: refused (the folder keeps its results), with
    the same command and a free --out; that command plans its runs, whose time is unknown until an epoch."""
    make_run(tmp_path / "runs", "bn", "bn", 0, 0.5)
    code, refused = keras_cifar("run", "bn", "--quick", "--dry-run", "--data", "synthetic:100", "--out", tmp_path / "runs")
    assert code == 2 and "bn/bn/seed0 already holds a run with a different config" in refused, refused
    suggested = refused.rpartition("Another --out keeps both: ")[2]
    assert suggested == f"keras-cifar run bn --quick --dry-run --data synthetic:100 --out {tmp_path / 'runs'}-2"
    code, planned = keras_cifar(*shlex.split(suggested)[1:])
    assert code == 0 and planned.splitlines() == [
        "bn/bn/seed0: new, width 16, 10 epochs, batch 128, no timing yet at this scale",
        "bn/no_bn/seed0: new, width 16, 10 epochs, batch 128, no timing yet at this scale",
        "estimated total: unknown until the first epoch (nothing timed yet at this scale)",
    ], planned


def test_recipes_version_and_shipped_recipes_by_name(tmp_path):
    code, listed = keras_cifar("recipes")
    assert code == 0 and listed.startswith(claims_table()) and "`tune.yaml`: KerasTuner search" in listed
    code, shown = keras_cifar("recipes", "show", "bn")
    assert code == 0 and yaml.safe_load(shown) == yaml.safe_load((SHIPPED_RECIPES / "bn.yaml").read_text())
    code, names = keras_cifar("recipes", "--names")
    assert names.split() == ["bn", "shortcut", "momentum", "activation", "loss", "lr", "batch_size", "baseline"]
    code, version = keras_cifar("--version")
    assert code == 0 and version.startswith(f"keras-cifar {__version__} (keras ") and "KERAS_BACKEND=" in version
    code, planned = keras_cifar(
        "run", "bn", "--quick", "--epochs", "3", "--data", "synthetic:100", "--out", tmp_path / "out", "--dry-run"
    )  # by name; --epochs wins over --quick
    assert code == 0 and planned.startswith("bn/bn/seed0: new, width 16, 3 epochs, batch 128"), planned
    code, missing = keras_cifar("run", "nope", "--dry-run")
    assert code == 2 and "nope: no such recipe file, and no shipped recipe of that name; shipped: activation" in missing


def test_seeds_auto_adds_a_seed_while_a_ranked_pair_is_undecided(tmp_path):
    """`run --seeds auto --max-seeds 3` on a recipe whose report ranks a > b: a plan of 2 looks (at 2 and
    3 seeds), each at 2.5 %, recorded in the recipe's folder. Seeds 0 and 1 are finished already (written
    as training writes them, with test accuracies chosen so that a − b = +9 pt is undecided by the look's
    97.5 % Welch interval and the planning estimate's low end is 3 seeds: a 0.60, 0.63; b 0.52, 0.53):
    seed 2 is added and trained, and the cap of 3 ends it; the report's intervals are the plan's 97.5 %
    ones; with --track mlflow each finished run is logged. Run again, nothing more is trained; another
    cap for the same runs is refused."""
    import mlflow

    recipe = tmp_path / "ranked.yaml"
    recipe.write_text(
        f"name: ranked\nreport: {{title: T, source: Fig. 1, claim: a > b, order: [a, b]}}\n"
        f"base: {{model: {{width: {WIDTH}}}, data: {{batch_size: 32, eval_subset: 64}}, "
        "train: {epochs: 1, checkpoint_seconds: 0}}\n"
        "variants: {a: {}, b: {model: {activation: tanh}}}\n"
    )
    accuracies = {("a", 0): 0.60, ("a", 1): 0.63, ("b", 0): 0.52, ("b", 1): 0.53}
    for spec in config.sweep(config.load_recipe(recipe), seeds=[0, 1]):
        folder = RunFolder.of(tmp_path / "out", spec)
        folder.write_config(spec, "synthetic:96")
        acc = accuracies[spec.variant, spec.seed]
        folder.write_history(
            [
                Epoch(
                    1,
                    loss=1.0,
                    accuracy=acc,
                    val_loss=1.0,
                    val_accuracy=acc,
                    test_loss=1.0,
                    test_accuracy=acc,
                    lr=0.0,
                    epoch_seconds=1.0,
                    train_seconds=1.0,
                )
            ]
        )
        folder.write_metrics(
            RunRecord(
                "completed",
                "ranked",
                spec.variant,
                spec.seed,
                epochs_completed=1,
                epochs=1,
                test_accuracy=acc,
                best_val_accuracy=acc,
                train_seconds=1.0,
                wall_seconds=1.0,
                data=DataSizes("synthetic:96", 96, 10, 5000),
            )
        )
    args = ["run", recipe, "--data", "synthetic:96", "--out", tmp_path / "out", "--seeds", "auto", "--max-seeds", "3"]
    code, output = keras_cifar(*args, "--track", "mlflow")
    assert code == 0, output
    assert (
        "--seeds auto: ranked: a − b is undecided and the planning estimate says 3 seeds could decide it; adding seed 2"
        in output
    )
    assert json.loads((tmp_path / "out" / "ranked" / "seeds_auto.json").read_text()) == {"first": 2, "cap": 3}
    assert "| 97.5 % CI over seeds (%) |" in (tmp_path / "out" / "ranked" / "report.md").read_text()
    assert [line.split()[1] for line in output.splitlines() if "width 8, 1 epoch" in line] == [
        "ranked/a/seed2:",
        "ranked/b/seed2:",
    ]
    assert not (tmp_path / "out" / "ranked" / "a" / "seed3").exists()
    mlflow.set_tracking_uri(tracking.store(tmp_path / "out"))  # mlflow.db beside --out; each finished run once
    assert sorted(r.info.run_name for r in mlflow.search_runs(experiment_names=["ranked"], output_format="list")) == [
        f"{v}/seed{s}" for v in "ab" for s in range(3)
    ]
    code, again = keras_cifar(*args)
    assert code == 0 and "width 8, 1 epoch" not in again, again
    code, refused = keras_cifar(*args[:-1], "4")
    assert code == 2 and "--seeds auto started this recipe with --max-seeds 3" in refused, refused
