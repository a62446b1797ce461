"""The tools around training: landscape, tune, bench."""

from __future__ import annotations

import sys
from typing import Any

import click

from keras_cifar import config as cfg
from keras_cifar.cli import options
from keras_cifar.cli.common import interrupted, overrides
from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.files import write_json
from keras_cifar.data import sources
from keras_cifar.training import signals


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]", type=click.Path(file_okay=False))
@click.option(
    "--dims",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="1: loss along theta* + a*d; 2: over the plane theta* + a*d + b*e (points^2 evaluations).",
)
@click.option(
    "--points",
    type=click.IntRange(min=2),
    default=21,
    show_default=True,
    help="Grid points per axis (odd counts put one exactly on the trained weights).",
)
@click.option(
    "--range",
    "span",
    nargs=2,
    type=float,
    default=(-1.0, 1.0),
    show_default=True,
    metavar="MIN MAX",
    help="Range of a (and b); must contain 0. At 1 each filter moves by its own norm.",
)
@click.option(
    "--images",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Class-balanced images to evaluate on (fewer if the split has fewer).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="train",
    show_default=True,
    help="The run's training set or the test half of the project's split.",
)
@options.data("Read the images from PATH (same formats as `run --data`) instead of each run's recorded data_source.")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Output folder. Default: the run folder; required with several RUN_DIRs."
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the random directions: equal seeds give equal directions.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True, help="Images per evaluation batch.")
@click.option("--surface", is_flag=True, help="With --dims 2, also draw a 3D loss surface image.")
def landscape(
    run_dirs: tuple[str, ...],
    dims: int,
    points: int,
    span: tuple[float, float],
    images: int,
    split: str,
    data_source: str | None,
    out: str | None,
    seed: int,
    batch_size: int,
    surface: bool,
) -> None:
    """Loss and accuracy landscapes around a run's trained weights.

    As in Li et al. 2018, evaluates each completed RUN_DIR at theta* + a*d (+ b*e) on a grid, with
    random Gaussian directions that are filter-normalized: every conv filter / dense unit of d is
    scaled to the norm of the same filter of theta*. Biases and BatchNorm gamma/beta do not move;
    BatchNorm moving statistics stay as trained (inference mode, no augmentation), so a = 0 reproduces
    model.evaluate. Several RUN_DIRs share the grid, the seed and the colour scale and are drawn on
    one figure.

    Writes landscape_1d.{npz,json,png} or landscape_2d.{npz,json,png} (+ landscape_2d_surface.png).
    Example, BN against no BN:

    \b
        keras-cifar landscape results/runs/bn/bn/seed0 results/runs/bn/no_bn/seed0 \\
            --out results/landscapes/bn
    """
    from keras_cifar.tools.landscape import Settings
    from keras_cifar.training.runs import completed_run

    settings = Settings(dims, points, span, images, split, seed, batch_size, surface)
    settings.check(len(run_dirs), out)
    runs = [completed_run(d) for d in run_dirs]
    if data_source:
        sources.canonical_source(data_source)
    backend.start()
    from keras_cifar.tools.landscape import run_landscape

    for path in run_landscape(runs, settings, data_source=data_source, out=out):
        say(f"wrote {path}")


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@options.data(options.DATA_HELP + " Every worker needs its own copy.")
@options.out("Root folder; the search goes to OUT/<recipe>/search/, --final's run to OUT/<recipe>/trial_<id>/.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override tune.epochs (epochs per trial).")
@options.subset
@click.option("--variant", help="The recipe variant to tune (needed when the recipe has several).")
@options.sets(
    "Override any recipe key, tune section included: --set tune.max_trials=4 "
    "--set 'tune.space.batch_size=[128,256]' --set model.width=16."
)
@click.option(
    "--final", is_flag=True, help="Afterwards retrain the best trial (best.yaml, as `run` does) and report its test accuracy."
)
@click.option(
    "--chief",
    metavar="HOST:PORT",
    help="Distributed: alone, serve the search's oracle on HOST:PORT (use 0.0.0.0:PORT to accept other "
    "machines); with --worker, the chief to get trials from.",
)
@click.option(
    "--worker",
    metavar="ID",
    help="Distributed: run trials for the chief at --chief, as worker ID (a name unique among the workers).",
)
def tune(
    recipe: str,
    data_source: str | None,
    out: str,
    epochs: int | None,
    subset: int | None,
    variant: str | None,
    sets: tuple[str, ...],
    final: bool,
    chief: str | None,
    worker: str | None,
) -> None:
    """Search a recipe's hyperparameters with KerasTuner.

    Searches RECIPE's learning rate and batch size (and optionally momentum and weight decay), picking
    by validation accuracy; the test split is never used to choose.

    The recipe's `tune:` section sets tuner (random, bayesian, hyperband), objective, max_trials,
    epochs per trial, executions_per_trial and the search space; everything else comes from the
    recipe as in `run`. A line is printed per trial and per epoch. Running the same command again
    resumes the search, and a trial that was interrupted is run again. OUT/<recipe>/search/ then
    holds trials.csv, trials.md, objective.png and best.yaml, a recipe that `keras-cifar run`
    trains as it is. Exit code 1 when no trial completed. Example (a small search):

    \b
        keras-cifar tune recipes/tune.yaml --data cifar10-jpeg.tar.gz \\
            --set model.width=8 --subset 2000 --epochs 2 --set tune.max_trials=4

    Several machines: start one chief (`--chief 0.0.0.0:8000`), then on each machine a worker
    (`--worker 1 --chief CHIEF_HOST:8000`), all with the same recipe, options and data (a worker checks
    them against the chief's and stops otherwise); the chief writes the results when every trial has ended.
    """
    search = cfg.search_of(cfg.load_recipe(recipe), overrides(sets, {"tune.epochs": epochs, "data.subset": subset}), variant)
    backend.check()
    backend.check_settings(search.config, f"{search.recipe}/{search.variant}")
    cifar = sources.load(data_source)
    backend.start(deterministic=search.config.train.deterministic)
    from keras_cifar.tools import tune as tune_lib

    try:
        with tune_lib.distributed(chief, worker), signals.interruptible():
            is_worker = tune_lib.role() == "worker"  # --worker, or KerasTuner's own variables
            best = tune_lib.run_search(search, cifar, out, final=final)
    except KeyboardInterrupt as stop:
        interrupted(stop, "ended trials are kept (the interrupted trial runs again)")
    if best is None and not is_worker:
        sys.exit(1)


@click.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--backends",
    show_default="the installed ones of tensorflow,jax,torch",
    help="Comma-separated Keras backends, each trained in a process of its own; BACKEND:PRECISION "
    "(torch:fp32) pins the precision of that one.",
)
@click.option(
    "--precision",
    "precisions",
    default="fp32",
    show_default=True,
    help="Comma-separated precisions for each backend: fp32 (float32) and/or bf16 (mixed_bfloat16).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=2),
    default=3,
    show_default=True,
    help="Epochs per configuration: the first compiles, the others are timed.",
)
@click.option(
    "--reference/--no-reference",
    default=False,
    show_default=True,
    help="Also train the same network and recipe in plain PyTorch (fp32, and bf16 where it is faster "
    "on this machine) and give every configuration's ratio to it. Needs PyTorch.",
)
@options.data()
@options.subset
@options.sets("Override any recipe key, as for `run`.")
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False),
    help="Also write the results as JSON to FILE, rewritten after each configuration.",
)
def bench(
    recipe: str | None,
    backends: str | None,
    precisions: str,
    epochs: int,
    reference: bool,
    data_source: str | None,
    subset: int | None,
    sets: tuple[str, ...],
    json_file: str | None,
) -> None:
    """How fast `run` trains a recipe on each backend and precision.

    RECIPE defaults to recipes/baseline.yaml. Each configuration trains the recipe's first variant
    through `run`'s own code in a temporary folder, in a process of its own, and the table gives: the
    first epoch (with compilation), the median later epoch, its training part, the overhead (the rest:
    evaluation, TensorBoard, checkpoint), training images/s, the ratio to the fastest PyTorch
    reference and the final test accuracy. Without --backends it compares the installed backends and
    says which it skipped. Exit code 1 if a configuration failed. Example, on a CPU:

    \b
        keras-cifar bench recipes/baseline.yaml --backends tensorflow,jax,torch \\
            --set model.width=16 --subset 5000 --epochs 3 --reference
    """
    from keras_cifar.tools import bench as bench_lib

    recipe_obj = cfg.load_recipe(recipe or "baseline")
    spec = cfg.sweep(recipe_obj, overrides(sets, {"data.subset": subset}), variants=[next(iter(recipe_obj.variants))])[0]
    configs = bench_lib.configurations(backends, precisions, reference)

    def saved(record: dict[str, Any]) -> None:  # the record so far, after each configuration
        if json_file:
            write_json(json_file, record)

    record = bench_lib.run_bench(
        recipe_obj,
        spec.config,
        sources.canonical_source(data_source),
        configs,
        epochs,
        reference,
        saved=saved,
    )
    say("\n" + bench_lib.table(record))
    if json_file:
        say(f"wrote {json_file}")
    if any(r["status"] != "completed" for r in record["results"]):
        sys.exit(1)
