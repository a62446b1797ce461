"""Command line: ``keras-cifar run|tune|...`` (also ``python -m keras_cifar``). Thin: parses, then calls."""

import sys

import click

from keras_cifar.config import ConfigError


class UserError(click.ClickException):
    """A bad recipe, option or dataset: one line on stderr, exit code 2."""

    exit_code = 2


def _int_list(text):
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="keras-cifar")
def main():
    """Study ResNet-18 on CIFAR-10 with Keras 3: run the report's experiments from YAML recipes.

    The backend is Keras's: set KERAS_BACKEND=tensorflow|jax|torch.
    """


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--data", "data_source", metavar="PATH", envvar="KERAS_CIFAR_DATA",
              help="Local CIFAR-10: official binary/python archive (.tar.gz or folder), a folder or .tar(.gz) "
                   "of train/<class>/* and test/<class>/* images, a TFDS data dir, or synthetic[:N]. "
                   "Default: $KERAS_CIFAR_DATA, else the TFDS download (needs internet).")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Root folder; runs go to OUT/<recipe>/<variant>/seed<k>/.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@click.option("--subset", type=click.IntRange(min=1), help="Train on N class-balanced training images (data.subset).")
@click.option("--variants", help="Comma-separated variants to run (default: all of the recipe's).")
@click.option("--seeds", help="Comma-separated seeds, e.g. 0,1,2 (overrides train.seeds).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override any recipe key, e.g. --set model.width=16 --set train.mixed_precision=true.")
@click.option("--dry-run", is_flag=True, help="List the runs and stop.")
def run(recipe, data_source, out, epochs, subset, variants, seeds, sets, dry_run):
    """Train every variant and seed of RECIPE (defaults < recipe < command line).

    Finished runs are skipped and an interrupted one resumes where it stopped, so running the same
    command again continues a sweep. Example:

        keras-cifar run recipes/bn.yaml --data cifar10-jpeg.tar.gz --set model.width=16 --epochs 10
    """
    from keras_cifar import config as cfg

    try:
        recipe_obj = cfg.load_recipe(recipe)
        overrides = cfg.parse_sets(sets)
        if epochs:
            overrides = cfg.merge_dicts(overrides, {"train": {"epochs": epochs}})
        if subset:
            overrides = cfg.merge_dicts(overrides, {"data": {"subset": subset}})
        runs = cfg.sweep(recipe_obj, overrides,
                         variants=[v.strip() for v in variants.split(",") if v.strip()] if variants else None,
                         seeds=_int_list(seeds) if seeds else None)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if dry_run:
        for spec in runs:
            c = spec.config
            click.echo(f"{spec.key}: width {c['model']['width']}, {c['train']['epochs']} epochs, "
                       f"batch {c['data']['batch_size']}")
        return
    from keras_cifar.data import DataError
    from keras_cifar.train import run_sweep

    try:
        results = run_sweep(runs, data_source, out)
    except (ConfigError, DataError) as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: completed runs are kept; run the same command again to resume", err=True)
        sys.exit(130)
    if any(m["status"] == "failed" for _, m in results):
        sys.exit(1)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--data", "data_source", metavar="PATH", envvar="KERAS_CIFAR_DATA",
              help="Local CIFAR-10, as for `run` (every worker needs its own copy). Default: $KERAS_CIFAR_DATA, "
                   "else the TFDS download.")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Root folder; the search goes to OUT/<recipe>/search/, --final's run to OUT/<recipe>/trial_<id>/.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override tune.epochs (epochs per trial).")
@click.option("--subset", type=click.IntRange(min=1), help="Train on N class-balanced training images (data.subset).")
@click.option("--variant", help="The recipe variant to tune (needed when the recipe has several).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override any recipe key, tune section included: --set tune.max_trials=4 "
                   "--set 'tune.space.batch_size=[128,256]' --set model.width=16.")
@click.option("--final", is_flag=True,
              help="Afterwards retrain the best trial (best.yaml, as `run` does) and report its test accuracy.")
@click.option("--chief", metavar="HOST:PORT",
              help="Distributed: alone, serve the search's oracle on HOST:PORT (use 0.0.0.0:PORT to accept other "
                   "machines); with --worker, the chief to get trials from.")
@click.option("--worker", metavar="ID", help="Distributed: run trials for the chief at --chief, as worker ID "
                                              "(a name unique among the workers).")
def tune(recipe, data_source, out, epochs, subset, variant, sets, final, chief, worker):
    """Search RECIPE's learning rate and batch size (and optionally momentum and weight decay) with
    KerasTuner, picking by validation accuracy; the test split is never used to choose.

    The recipe's `tune:` section sets tuner (random, bayesian, hyperband), objective, max_trials,
    epochs per trial, executions_per_trial and the search space; everything else comes from the
    recipe as in `run`. A line is printed per trial and per epoch. Running the same command again
    resumes the search, and a trial that was interrupted is run again. OUT/<recipe>/search/ then
    holds trials.csv, trials.md, objective.png and best.yaml, a recipe that `keras-cifar run`
    trains as it is. Example (a small search):

    \b
        keras-cifar tune recipes/tune.yaml --data cifar10-jpeg.tar.gz \\
            --set model.width=8 --subset 2000 --epochs 2 --set tune.max_trials=4

    Several machines: start one chief (`--chief 0.0.0.0:8000`), then on each machine a worker
    (`--worker 1 --chief CHIEF_HOST:8000`), all with the same recipe and options; the chief writes
    the results when every trial has ended.
    """
    from keras_cifar import config as cfg
    from keras_cifar.data import DataError

    try:
        overrides = cfg.parse_sets(sets)
        if epochs:
            overrides = cfg.merge_dicts(overrides, {"tune": {"epochs": epochs}})
        if subset:
            overrides = cfg.merge_dicts(overrides, {"data": {"subset": subset}})
        from keras_cifar import tune as tune_lib  # keras, KerasTuner: only once the options are good

        search = tune_lib.resolve(cfg.load_recipe(recipe), overrides, variant)
        with tune_lib.distributed(chief, worker):
            best = tune_lib.run_search(search, data_source, out, final=final)
    except (ConfigError, DataError) as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: ended trials are kept; run the same command again to resume "
                   "(the interrupted trial runs again)", err=True)
        sys.exit(130)
    if best is None and not worker:
        sys.exit(1)
