"""``keras-cifar run``: check what is asked (recipes, options, data) without Keras, then train the sweep
here, in several processes of one run, or one run per process (--parallel), and write the reports;
``--seeds auto`` adds seeds while a ranked pair is undecided."""

from __future__ import annotations

import contextlib
import functools
import itertools
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from keras_cifar import config as cfg
from keras_cifar.cli import options
from keras_cifar.cli.common import ARGV, TRACK_HELP, TRACKERS, UserError, interrupted, overrides, report_recipe
from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.errors import OtherConfigError
from keras_cifar.core.record import RunRecord
from keras_cifar.data import sources
from keras_cifar.nn.losses import LOSSES
from keras_cifar.nn.networks import MODELS
from keras_cifar.nn.optim import OPTIMIZERS
from keras_cifar.nn.schedules import SCHEDULES
from keras_cifar.training import cluster, signals

Results = list[tuple[cfg.RunSpec, RunRecord]]  # each run trained, with what it recorded

PLUGINS_HELP = (
    f"Plug-ins a recipe can name. model.name: {MODELS.help()}. loss: {LOSSES.help()}. "
    f"optimizer.name: {OPTIMIZERS.help()}. schedule.name: {SCHEDULES.help()}."
)


@click.command(epilog=PLUGINS_HELP)
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
def run(**opts: Any) -> None:
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
    request = _request(opts)  # every mistake of the input, before Keras is imported
    if opts["dry_run"]:
        _dry_run(request)
        return
    train = _trainer(request)
    try:
        with signals.interruptible(), _free_out_offered(opts["out"]):
            if request.auto:
                _record_plans(request.loaded, opts["out"], opts["max_seeds"])
            results = train(request.runs)
            while request.auto and (wanted := _seeds_wanted(request.loaded, opts["out"])):
                results += train([spec for recipe, seed in wanted for spec in request.runs_of([recipe], [seed])])
    except KeyboardInterrupt as stop:
        interrupted(stop, "completed runs are kept")
    if any(m.status == "failed" for _, m in results):
        sys.exit(1)


class _Request:
    """What `run` was asked, checked: the recipes and the overrides and variants their runs take, the
    runs of the seeds asked for (this shard's), the data source and the processes of one run."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.loaded = cfg.load_recipes(opts["recipes"])
        self.overrides = overrides(opts["sets"], {"train.epochs": opts["epochs"], "data.subset": opts["subset"]}, opts["quick"])
        self.auto = opts["seeds"] == "auto"
        variants = opts["variants"]
        self.chosen = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
        seeds = opts["seeds"]
        self.runs = self.runs_of(self.loaded, [0, 1] if self.auto else _seed_list(seeds) if seeds else None)
        if opts["shard"]:
            self.runs = cluster.shard_of(self.runs, cluster.parse_shard(opts["shard"]))
        self.processes = cluster.processes_of(opts["coordinator"], opts["num_processes"], opts["process_id"], opts["cluster"])
        self.source = sources.canonical_source(opts["data_source"])

    def runs_of(self, recipes: Iterable[cfg.Recipe], seeds: list[int] | None) -> list[cfg.RunSpec]:
        return [spec for recipe in recipes for spec in cfg.sweep(recipe, self.overrides, self.chosen, seeds)]


def _request(opts: dict[str, Any]) -> _Request:
    """The checked _Request, or a one-line error: options that do not combine, recipes, data, backend and
    the settings the backend cannot run."""
    from keras_cifar.training import tracking

    tracking.check(opts["track"])
    if opts["seeds"] == "auto" and (opts["shard"] or opts["coordinator"] or opts["cluster"]):
        raise UserError(
            "--seeds auto decides each next seed from the finished runs; it does not combine with "
            "--shard, --coordinator or --cluster (give the seeds, e.g. --seeds 0,1,2)"
        )
    request = _Request(opts)
    if request.auto:
        _check_plans(request.loaded, opts["out"], opts["max_seeds"])
    if opts["parallel"] and request.processes:
        raise UserError(
            "--parallel trains several runs at once; --coordinator/--cluster train one run in several "
            "processes: use one or the other"
        )
    backend.check()
    if opts["dry_run"] or opts["parallel"]:
        for spec in request.runs:
            backend.check_settings(spec.config, spec.key)
    return request


def _dry_run(request: _Request) -> None:
    """What `run` would do with each run (the decisions the real run would make, its refusals too)."""
    from keras_cifar.training.decisions import decide_all, plan

    out, runs = request.opts["out"], request.runs
    with _free_out_offered(out):
        lines = plan(runs, decide_all(runs, out, request.source, request.opts["restart"]), out, request.source)
    say("\n".join(lines) if runs else f"shard {request.opts['shard']}: no runs")
    if request.auto:
        cap = request.opts["max_seeds"]
        say(f"--seeds auto: then one more seed at a time, up to {cap}, while a pair is undecided and that many could decide it")


def _trainer(request: _Request) -> Callable[[list[cfg.RunSpec]], Results]:
    """train(runs): train them (here, in several processes of one run, or --parallel) and write their
    recipes' reports; returns [(spec, metrics)]."""
    opts = request.opts

    @functools.cache
    def started() -> sources.Cifar:
        """The data, loaded once, with the backend started (and this process joined to its run's others)."""
        cifar = sources.load(opts["data_source"])  # as given, so that an error about KERAS_CIFAR_DATA names it
        backend.start(deterministic=any(spec.config.train.deterministic for spec in request.runs))
        if request.processes:
            cluster.join(request.processes, opts["coordinator_timeout"])
        return cifar

    def train(runs: list[cfg.RunSpec]) -> Results:
        if opts["parallel"]:
            results = _train_in_parallel(request, runs)
        else:
            cifar = started()  # first: a bad --data or coordinator is reported before Keras is imported
            from keras_cifar.training.sweep import run_sweep

            results = run_sweep(runs, cifar, opts["out"], opts["restart"])
        if not opts["no_report"] and (opts["parallel"] or cluster.process()[0] == 0):
            for name in dict.fromkeys(spec.recipe for spec in runs):
                report_recipe(Path(opts["out"]) / name, track=opts["track"])
        return results

    return train


def _train_in_parallel(request: _Request, runs: list[cfg.RunSpec]) -> Results:
    """--parallel: one `keras-cifar run` process per run, each given the command's own options."""
    from keras_cifar.training import parallel

    opts = request.opts
    common = [
        "--data",
        request.source,
        "--out",
        opts["out"],
        *(["--quick"] if opts["quick"] else []),
        *(["--epochs", str(opts["epochs"])] if opts["epochs"] else []),
        *(["--subset", str(opts["subset"])] if opts["subset"] else []),
        *[a for s in opts["sets"] for a in ("--set", s)],
        *(["--restart"] if opts["restart"] else []),
    ]
    command = parallel.child_command({r.name: r.path for r in request.loaded}, common)
    return parallel.run_sweep(runs, parallel.slots_of(opts["parallel"]), opts["out"], request.source, command, opts["restart"])


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers or 'auto', got {text!r}") from None


@contextlib.contextmanager
def _free_out_offered(out: str) -> Iterator[None]:
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


def _check_plans(loaded: list[cfg.Recipe], out: str, cap: int) -> None:
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


def _record_plans(loaded: list[cfg.Recipe], out: str, cap: int) -> None:
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


def _seeds_wanted(loaded: list[cfg.Recipe], out: str) -> list[tuple[cfg.Recipe, int]]:
    """With --seeds auto, after the seeds so far: [(recipe, its next seed)] for each recipe below its
    plan's cap that has a pair one more seed could help (claims.wants_seed), saying which."""
    from keras_cifar.study.claims import by_mean, plan_of, wants_seed
    from keras_cifar.study.report import load_variants, summarize

    wanted: list[tuple[cfg.Recipe, int]] = []
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
