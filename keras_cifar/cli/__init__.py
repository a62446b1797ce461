"""Command line: ``keras-cifar run|report|compare|tune|bench|landscape``, and from cli_models.py
``export|predict|evaluate`` (also ``python -m keras_cifar``). Thin: each command checks its input
without Keras (so a mistake is reported in a second), then starts the backend and calls the module
that does the work. A KerasCifarError from anywhere is caught once, in the group: one line on
stderr, exit code 2."""

import contextlib
import functools
import itertools
import shlex
import signal
import sys
from pathlib import Path

import click

from keras_cifar import __version__
from keras_cifar import config as cfg
from keras_cifar.cli import models as cli_models
from keras_cifar.cli import options
from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.errors import KerasCifarError, OtherConfigError
from keras_cifar.core.files import write_atomic, write_json
from keras_cifar.data import sources as data_lib
from keras_cifar.nn.losses import LOSSES
from keras_cifar.nn.networks import MODELS
from keras_cifar.nn.optim import OPTIMIZERS
from keras_cifar.nn.schedules import SCHEDULES
from keras_cifar.training import signals

PLUGINS_HELP = (
    f"Plug-ins a recipe can name. model.name: {MODELS.help()}. loss: {LOSSES.help()}. "
    f"optimizer.name: {OPTIMIZERS.help()}. schedule.name: {SCHEDULES.help()}."
)


class UserError(click.ClickException):
    """A bad recipe, option, dataset or model: one line on stderr, exit code 2."""

    exit_code = 2


ARGV = "keras_cifar.argv"  # ctx.meta: the arguments as typed


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)  # before parsing consumes them: for an error that gives the command back, changed
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[ARGV] = argv
        return ctx

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KerasCifarError as e:
            raise UserError(str(e)) from None


def _seed_list(text):
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers or 'auto', got {text!r}") from None


TRACKERS = ("mlflow",)
TRACK_HELP = (
    "Also log each finished run to MLflow (experiment = recipe, run = variant/seed<k>; its config as params, "
    "per-epoch metrics; metrics.json, history and figures as artifacts) in MLFLOW_TRACKING_URI, else in "
    "mlruns/ beside the runs' root (`mlflow ui` there). Needs the mlflow extra."
)
QUICK = {"model.width": 16, "data.subset": 10000, "train.epochs": 10}  # the scale of the committed results/


def _overrides(sets, flags, quick=False):
    """--quick's scale, then the --set values, then the shortcut options that were given ({"train.epochs":
    3} is --set train.epochs=3, and wins over it), as one override dict for the recipe."""
    return cfg.parse_sets(
        [f"{key}={value}" for key, value in QUICK.items() if quick]
        + list(sets)
        + [f"{key}={value}" for key, value in flags.items() if value is not None]
    )


def _print_version(ctx, param, value):
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    found = []
    for package in ("keras", "tensorflow", "jax", "torch"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    say(f"keras-cifar {__version__} ({', '.join(found)}; KERAS_BACKEND={backend.selected()})")
    ctx.exit()


def _interrupted(stop, what):
    """One line for a SIGINT or SIGTERM (`stop`, a KeyboardInterrupt): what was stopped and what was
    kept; exit 128 + the signal's number."""
    signum = getattr(stop, "signum", signal.SIGINT)
    say(
        f"interrupted ({signal.Signals(signum).name}): {getattr(stop, 'where', None) or what}; run the same "
        "command again to resume",
        err=True,
    )
    sys.exit(128 + signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print keras-cifar's version and those of Keras and its backends, and exit.",
)
def main():
    """Study ResNet-18 on CIFAR-10 with Keras 3: run the report's experiments from YAML recipes.

    The backend is Keras's: set KERAS_BACKEND=tensorflow|jax|torch. Exit codes: 0 done, 1 some run or
    file failed (the others went on), 2 bad input or a file that cannot be written (a one-line error
    says what and how to fix it), 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
    """


@main.command(epilog=PLUGINS_HELP)
@click.argument("recipes", metavar="RECIPE...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@options.data()
@options.out("Root folder; runs go to OUT/<recipe>/<variant>/seed<k>/.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override train.epochs.")
@options.subset
@click.option("--variants", help="Comma-separated variants to run (default: all of the recipe's).")
@click.option(
    "--seeds",
    help="Comma-separated seeds, e.g. 0,1,2 (overrides train.seeds); or 'auto': seeds 0 and 1 (or "
    "those already there), then one more seed at a time while a pair of the report's ordering (or, "
    'without one, of ours) is "can\'t tell" and the planning estimate says --max-seeds could decide it; '
    "each look is judged at 5 % split over the looks up to --max-seeds, so the verdicts keep their 5 % "
    "(the plan is recorded in OUT/<recipe>/seeds_auto.json).",
)
@click.option(
    "--max-seeds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="With --seeds auto: the most seeds per variant (a recipe's plan keeps the cap it started with).",
)
@options.sets("Override any recipe key, e.g. --set model.width=16 --set train.mixed_precision=true.")
@click.option(
    "--quick",
    is_flag=True,
    help="The scale of the committed results/: width 16, 10,000 training images, 10 epochs (minutes an "
    "epoch on a CPU instead of half an hour); --set, --subset and --epochs still win.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List what would run (new, resumed, skipped, reused) with estimated times, and stop. "
    "It refuses what the real run refuses.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Train unfinished runs again from epoch 0, discarding their checkpoints (finished runs are "
    "still skipped): for a checkpoint that cannot be read.",
)
@click.option(
    "--shard",
    metavar="I/N",
    help="Train only the runs at positions I, I+N, I+2N, ... of the sweep (0 <= I < N): N machines sharing OUT split a sweep.",
)
@click.option(
    "--parallel",
    metavar="N|gpus",
    help="Train several runs at once, each in a process of its own: 'gpus' for one per visible GPU "
    "(CUDA_VISIBLE_DEVICES), a number for that many (over the GPUs in turn, or sharing the CPU "
    "cores). One ETA for the sweep, one table, one report.",
)
@click.option("--track", type=click.Choice(TRACKERS), help=TRACK_HELP)
@click.option("--no-report", is_flag=True, hidden=True, help="Write no report at the end (--parallel's processes).")
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    envvar="KERAS_DISTRIBUTION_JOB_ADDRESSES",
    help="One run trained by several processes (JAX): process 0's address, where it serves the others.",
)
@click.option(
    "--num-processes",
    type=int,
    envvar="KERAS_DISTRIBUTION_NUM_PROCESSES",
    help="With --coordinator: how many processes train the run.",
)
@click.option(
    "--process-id",
    type=int,
    envvar="KERAS_DISTRIBUTION_PROCESS_ID",
    help="With --coordinator: this process's id, 0 to N-1; 0 writes the run folders.",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Several processes, found by JAX's cluster detection (SLURM and the like) instead of --coordinator.",
)
@click.option(
    "--coordinator-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds a process other than 0 waits for the coordinator to answer.",
)
def run(
    recipes,
    data_source,
    out,
    epochs,
    subset,
    variants,
    seeds,
    max_seeds,
    sets,
    quick,
    dry_run,
    restart,
    shard,
    parallel,
    track,
    no_report,
    coordinator,
    num_processes,
    process_id,
    cluster,
    coordinator_timeout,
):
    """Train each RECIPE's variants and seeds, then write its report.

    Each run's config is the defaults < the recipe < the command line; recipes run one after the
    other: `keras-cifar run recipes/*.yaml` runs the whole study.

    Finished runs are skipped and an interrupted one resumes where it stopped, so running the same
    command again continues a sweep. Ctrl-C (SIGINT) or SIGTERM stops it after writing the checkpoint
    of the last finished epoch (exit 130 or 143). At the end it writes each recipe's figures and table
    into OUT/<recipe>/ (see `report`). Example:

    \b
        keras-cifar run recipes/bn.yaml --data cifar10-jpeg.tar.gz --set model.width=16 --epochs 10
    """
    from keras_cifar.training import cluster as cluster_lib
    from keras_cifar.training import tracking

    tracking.check(track)
    loaded = cfg.load_recipes(recipes)
    overrides = _overrides(sets, {"train.epochs": epochs, "data.subset": subset}, quick)
    auto = seeds == "auto"
    if auto and (shard or coordinator or cluster):
        raise UserError(
            "--seeds auto decides each next seed from the finished runs; it does not combine with "
            "--shard, --coordinator or --cluster (give the seeds, e.g. --seeds 0,1,2)"
        )
    if auto:
        _check_plans(loaded, out, max_seeds)
    chosen = [v.strip() for v in variants.split(",") if v.strip()] if variants else None

    def sweep_of(seed_list):
        return [spec for recipe in loaded for spec in cfg.sweep(recipe, overrides, chosen, seed_list)]

    runs = sweep_of([0, 1] if auto else _seed_list(seeds) if seeds else None)
    if shard:
        runs = cluster_lib.shard_of(runs, cluster_lib.parse_shard(shard))
    processes = cluster_lib.processes_of(coordinator, num_processes, process_id, cluster)
    if parallel and processes:
        raise UserError(
            "--parallel trains several runs at once; --coordinator/--cluster train one run in several "
            "processes: use one or the other"
        )
    source = data_lib.canonical_source(data_source)
    backend.check()
    if dry_run or parallel:
        for spec in runs:
            backend.check_settings(spec.config, spec.key)
    if dry_run:
        from keras_cifar.training.runs import decide_all, plan

        with _free_out_offered(out):
            lines = plan(runs, decide_all(runs, out, source, restart), out, source)  # refuses what the real run refuses
        say("\n".join(lines) if runs else f"shard {shard}: no runs")
        if auto:
            say(
                f"--seeds auto: then one more seed at a time, up to {max_seeds}, while a pair is undecided and "
                f"{max_seeds} seeds could decide it"
            )
        return

    @functools.cache
    def started():
        """The data, loaded once, with the backend started (and this process joined to its run's others)."""
        cifar = data_lib.load(data_source)  # as given, so that an error about KERAS_CIFAR_DATA names it
        backend.start(deterministic=any(spec.config.train.deterministic for spec in runs))
        if processes:
            cluster_lib.join(processes, coordinator_timeout)
        return cifar

    def train(runs):
        """Train `runs` (here, in several processes for one run, or --parallel) and write the reports."""
        if parallel:
            from keras_cifar.training import parallel as parallel_lib

            common = [
                "--data",
                source,
                "--out",
                out,
                *(["--quick"] if quick else []),
                *(["--epochs", str(epochs)] if epochs else []),
                *(["--subset", str(subset)] if subset else []),
                *[a for s in sets for a in ("--set", s)],
                *(["--restart"] if restart else []),
            ]
            command = parallel_lib.child_command({r.name: r.path for r in loaded}, common)
            results = parallel_lib.run_sweep(runs, parallel_lib.slots_of(parallel), out, source, command, restart)
        else:
            cifar = started()  # first: a bad --data or coordinator is reported before Keras is imported
            from keras_cifar.training.train import run_sweep

            results = run_sweep(runs, cifar, out, restart)
        if not no_report and (parallel or cluster_lib.process()[0] == 0):
            for name in dict.fromkeys(spec.recipe for spec in runs):
                _report_recipe(Path(out) / name, track=track)
        return results

    try:
        with signals.interruptible(), _free_out_offered(out):
            if auto:
                _record_plans(loaded, out, max_seeds)
            results = train(runs)
            while auto and (wanted := _seeds_wanted(loaded, out)):
                results += train([spec for r, seed in wanted for spec in cfg.sweep(r, overrides, chosen, [seed])])
    except KeyboardInterrupt as stop:
        _interrupted(stop, "completed runs are kept")
    if any(m.status == "failed" for _, m in results):
        sys.exit(1)


@contextlib.contextmanager
def _free_out_offered(out):
    """A run folder under `out` that holds another config stops `run`; its error then also gives the
    command as typed with an --out that is free (OUT-2, OUT-3, ...), so both runs are kept."""
    try:
        yield
    except OtherConfigError as e:
        base = Path(out).resolve() if Path(out).name in ("", "..") else Path(out)
        free = next(f"{base}-{n}" for n in itertools.count(2) if not Path(f"{base}-{n}").exists())
        args, kept = iter(click.get_current_context().meta[ARGV]), []
        for arg in args:
            if arg == "--out":
                next(args, None)
            elif not arg.startswith("--out="):
                kept.append(arg)
        raise UserError(f"{e}. Another --out keeps both: {shlex.join(['keras-cifar', *kept, '--out', free])}") from None


def _check_plans(loaded, out, cap):
    """With --seeds auto: refuse a --max-seeds other than the cap a recipe's recorded plan started with."""
    from keras_cifar.study.claims import PLAN, plan_of

    for recipe in loaded:
        rule = plan_of(Path(out) / recipe.name)
        if rule.cap and rule.cap != cap:
            raise UserError(
                f"{Path(out) / recipe.name / PLAN}: --seeds auto started this recipe with --max-seeds "
                f"{rule.cap}, and its verdicts keep their 5 % only under that plan; pass --max-seeds "
                f"{rule.cap}, or another --out"
            )


def _record_plans(loaded, out, cap):
    """With --seeds auto: record the plan of each recipe that has none: a look at every number of seeds
    from those it will have after seeds 0 and 1 up to `cap` (none where that is the cap already)."""
    from keras_cifar.study.claims import plan_of, record_plan
    from keras_cifar.study.stats import Rule
    from keras_cifar.training.runs import recipe_runs

    for recipe in loaded:
        folder = Path(out) / recipe.name
        if plan_of(folder).cap:
            continue
        there = {r.seed for runs in recipe_runs(folder).values() for r in runs} if folder.is_dir() else set()
        first = len(there | {0, 1})
        if first < cap:
            record_plan(folder, Rule(first, cap))


def _seeds_wanted(loaded, out):
    """With --seeds auto, after the seeds so far: [(recipe, its next seed)] for each recipe below its
    plan's cap that has a pair one more seed could help (claims.wants_seed), saying which."""
    from keras_cifar.study.claims import by_mean, plan_of, wants_seed
    from keras_cifar.study.report import load_variants, summarize

    wanted = []
    for recipe in loaded:
        folder = Path(out) / recipe.name
        summary = summarize(folder, load_variants(folder))
        seeds, rule = summary["seeds"], plan_of(folder)
        if len(seeds) >= rule.cap:  # the cap, or no plan: seeds enough already when it started
            continue
        data = {row["variant"]: row["test_accuracy"] for row in summary["variants"]}
        why = wants_seed(recipe.claim.order if recipe.claim and recipe.claim.order else by_mean(data), data, rule)
        if why:
            seed = min(set(range(len(seeds) + 1)) - set(seeds))
            say(f"--seeds auto: {recipe.name}: {why}; adding seed {seed}")
            wanted.append((recipe, seed))
    return wanted


def _report_recipe(recipe_dir, out_dir=None, track=None):
    """Write one recipe's report and echo where it is and its table; log its runs where `track` says."""
    from keras_cifar.study.report import markdown_table, write_report

    summary, _, paths = write_report(recipe_dir, out_dir)
    say(f"\n{summary['recipe']}: {paths[0]} (figures and summary.json beside it)\n{markdown_table(summary)}")
    if track:
        from keras_cifar.training import tracking

        uri = tracking.store(Path(recipe_dir).parent)
        logged = tracking.log_recipe(recipe_dir, uri, Path(out_dir or recipe_dir))
        say(f"{summary['recipe']}: {logged} run{'s' if logged != 1 else ''} logged to MLflow at {uri}")


@main.command()
@click.argument("run_roots", metavar="RUN_ROOT...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), help="Write each recipe's report into OUT/<recipe>/ instead of its run folder."
)
@click.option("--track", type=click.Choice(TRACKERS), help=TRACK_HELP)
def report(run_roots, out, track):
    """A recipe's figures, table and summary.json, from its runs.

    RUN_ROOT is a recipe's run folder, OUT/<recipe>/ as `run` writes it (`run` makes this report itself
    when it ends), or an OUT root holding several recipes. For each recipe it writes report.md (setup and
    a table like the report's Tables 1-3: final test accuracy mean ± std over seeds, best validation
    accuracy, epochs, status, time), summary.json (the same numbers), test_curves and train_val_curves
    (PNG and SVG; mean over seeds with a min-max band) and, where the variants' learning rates differ,
    lr. Runs that diverged, failed, are unfinished or are missing a seed are shown as such. Example:

        keras-cifar report runs/bn
    """
    from keras_cifar.training import tracking
    from keras_cifar.training.runs import find_recipes

    tracking.check(track)
    for recipe_dir in find_recipes(run_roots):
        _report_recipe(recipe_dir, Path(out) / recipe_dir.name if out else None, track)


@main.command()
@click.argument("run_root", type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="The page to write; figure links in it are relative to its folder. [default: "
    "RUN_ROOT/comparison.md] An existing page is only replaced if `compare` wrote it for RUN_ROOT.",
)
@click.option(
    "--notes",
    type=click.Path(exists=True, dir_okay=False),
    help="A hand-written Markdown file, included as the page's Discussion section.",
)
@click.option(
    "--recipes",
    "recipes_dir",
    type=click.Path(file_okay=False),
    help="A folder of recipes whose `report:` sections hold the report's claims.  [default: the shipped "
    "recipes, `keras-cifar recipes`]",
)
def compare(run_root, out, notes, recipes_dir):
    """Every experiment beside the report's numbers and verdicts.

    RUN_ROOT holds one folder per recipe (bn, shortcut, momentum, activation, loss, lr, batch_size), as
    `run --out RUN_ROOT` writes them; the report's claims come from the recipes' `report:` sections.
    Each recipe's report is (re)made first; the page then shows the
    setup (hardware, backend, data, scale, read from the runs), a summary table with the report's
    verdict, its accuracies, ours and whether ours agrees (yes / no / can't tell when the difference is
    within the seed spread), and each experiment's figure and table. Example:

        keras-cifar compare results/runs --out results/README.md --notes results/notes.md
    """
    from keras_cifar.study.compare import write_page

    out = out or str(Path(run_root) / "comparison.md")
    command = (
        f"keras-cifar compare {run_root} --out {out}"
        + (f" --notes {notes}" if notes else "")
        + (f" --recipes {recipes_dir}" if recipes_dir else "")
    )
    say(f"wrote {write_page(run_root, out, command, notes, recipes_dir or cfg.SHIPPED_RECIPES)}")


@main.command()
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
def landscape(run_dirs, dims, points, span, images, split, data_source, out, seed, batch_size, surface):
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
        data_lib.canonical_source(data_source)
    backend.start()
    from keras_cifar.tools.landscape import run_landscape

    for path in run_landscape(runs, settings, data_source=data_source, out=out):
        say(f"wrote {path}")


@main.command()
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
def tune(recipe, data_source, out, epochs, subset, variant, sets, final, chief, worker):
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
    search = cfg.search_of(cfg.load_recipe(recipe), _overrides(sets, {"tune.epochs": epochs, "data.subset": subset}), variant)
    backend.check()
    backend.check_settings(search.config, f"{search.recipe}/{search.variant}")
    cifar = data_lib.load(data_source)
    backend.start(deterministic=search.config.train.deterministic)
    from keras_cifar.tools import tune as tune_lib

    try:
        with tune_lib.distributed(chief, worker), signals.interruptible():
            is_worker = tune_lib.role() == "worker"  # --worker, or KerasTuner's own variables
            best = tune_lib.run_search(search, cifar, out, final=final)
    except KeyboardInterrupt as stop:
        _interrupted(stop, "ended trials are kept (the interrupted trial runs again)")
    if best is None and not is_worker:
        sys.exit(1)


@main.command()
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
def bench(recipe, backends, precisions, epochs, reference, data_source, subset, sets, json_file):
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
    spec = cfg.sweep(recipe_obj, _overrides(sets, {"data.subset": subset}), variants=[next(iter(recipe_obj.variants))])[0]
    configs = bench_lib.configurations(backends, precisions, reference)
    record = bench_lib.run_bench(
        recipe_obj,
        spec.config,
        data_lib.canonical_source(data_source),
        configs,
        epochs,
        reference,
        saved=lambda r: json_file and write_json(json_file, r),
    )
    say("\n" + bench_lib.table(record))
    if json_file:
        say(f"wrote {json_file}")
    if any(r["status"] != "completed" for r in record["results"]):
        sys.exit(1)


MARKERS = ("<!-- recipes: made by `keras-cifar recipes --into` -->", "<!-- /recipes -->")


@main.group(invoke_without_command=True)
@click.option("--names", is_flag=True, help="Print only the names of the report's experiments, in its order.")
@click.option(
    "--into",
    type=click.Path(exists=True, dir_okay=False),
    help=f"Write the table into FILE, between its lines {MARKERS[0]} and {MARKERS[1]} (README.md's table).",
)
@click.pass_context
def recipes(ctx, names, into):
    """List the shipped recipes and what the report found.

    One recipe per experiment of the report, and any others. Give one to `run`, `tune` or `bench` by
    name (`keras-cifar run bn`); `keras-cifar recipes show NAME` prints one to copy and edit. Example:

    \b
        keras-cifar recipes show bn > my_bn.yaml
    """
    from keras_cifar.study.compare import claimed_recipes, claims_table

    if ctx.invoked_subcommand:
        return
    if names:
        say("\n".join(r.name for r in claimed_recipes()))
        return
    table = claims_table()
    if into:
        text = Path(into).read_text()
        head, start, rest = text.partition(MARKERS[0] + "\n")
        _, end, tail = rest.partition(MARKERS[1])
        if not (start and end):
            raise UserError(f"{into}: no lines {MARKERS[0]} and {MARKERS[1]} to write the table between")
        write_atomic(into, f"{head}{start}{table}\n{end}{tail}")
        say(f"wrote the table into {into}")
        return
    others = [r for r in map(cfg.load_recipe, cfg.shipped_recipes().values()) if not r.claim]
    say(table + "".join(f"\n\n`{Path(r.path).name}`: {r.description}" for r in others))


@recipes.command("show")
@click.argument("name")
def recipes_show(name):
    """Print the shipped recipe NAME, a starting point for your own."""
    say(cfg.recipe_file(name).read_text().rstrip("\n"))


for _command in (cli_models.export_cmd, cli_models.predict_cmd, cli_models.evaluate_cmd):
    main.add_command(_command)
