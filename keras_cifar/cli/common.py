"""What several commands share: the one-line error of a bad input, the overrides that --quick, --set and
the shortcut options make, the line an interrupted command ends with, a recipe's report at the end."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click

from keras_cifar import config as cfg
from keras_cifar.core.console import say


class UserError(click.ClickException):
    """A bad recipe, option, dataset or model: one line on stderr, exit code 2."""

    exit_code = 2


ARGV = "keras_cifar.argv"  # ctx.meta: the arguments as typed
TRACKERS = ("mlflow",)
TRACK_HELP = (
    "Also log each finished run to MLflow (experiment = recipe, run = variant/seed<k>; its config as params, "
    "per-epoch metrics; metrics.json, history and figures as artifacts) in MLFLOW_TRACKING_URI, else in the "
    "SQLite database mlflow.db beside the runs' root (`mlflow ui` there). Needs the mlflow extra."
)
QUICK = {"model.width": 16, "data.subset": 10000, "train.epochs": 10}  # the scale of the committed results/


def overrides(sets: Iterable[str], flags: dict[str, Any], quick: bool = False) -> dict[str, Any]:
    """--quick's scale, then the --set values, then the shortcut options that were given ({"train.epochs":
    3} is --set train.epochs=3, and wins over it), as one override dict for the recipe."""
    return cfg.parse_sets(
        [f"{key}={value}" for key, value in QUICK.items() if quick]
        + list(sets)
        + [f"{key}={value}" for key, value in flags.items() if value is not None]
    )


def interrupted(stop: BaseException, what: str) -> NoReturn:
    """One line for a SIGINT or SIGTERM (`stop`, a KeyboardInterrupt): what was stopped and what was
    kept; exit 128 + the signal's number."""
    signum = getattr(stop, "signum", signal.SIGINT)
    say(
        f"interrupted ({signal.Signals(signum).name}): {getattr(stop, 'where', None) or what}; run the same "
        "command again to resume",
        err=True,
    )
    sys.exit(128 + signum)


def report_recipe(recipe_dir: Path, out_dir: Path | None = None, track: str | None = None) -> None:
    """Write one recipe's report and echo where it is and its table; log its runs where `track` says."""
    from keras_cifar.study.report import markdown_table, write_report

    summary, _, paths = write_report(recipe_dir, out_dir)
    say(f"\n{summary['recipe']}: {paths[0]} (figures and summary.json beside it)\n{markdown_table(summary)}")
    if track:
        from keras_cifar.training import tracking

        uri = tracking.store(Path(recipe_dir).parent)
        logged = tracking.log_recipe(recipe_dir, uri, Path(out_dir or recipe_dir))
        say(f"{summary['recipe']}: {logged} run{'s' if logged != 1 else ''} logged to MLflow at {uri}")
