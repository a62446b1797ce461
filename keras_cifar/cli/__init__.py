"""Command line: ``keras-cifar`` (also ``python -m keras_cifar``): the click group here, its commands in
one module per family: run.py (run), study.py (report, compare, recipes), tools.py (landscape, tune,
bench), models.py (export, predict, evaluate, serve). Thin: each command checks its input without Keras (so a
mistake is reported in a second), then starts the backend and calls the package that does the work. A
KerasCifarError from anywhere is caught once, in the group: one line on stderr, exit code 2."""

from __future__ import annotations

from typing import Any

import click

from keras_cifar import __version__
from keras_cifar.cli import models, run, study, tools
from keras_cifar.cli.common import ARGV, UserError
from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.errors import KerasCifarError


class _Group(click.Group):
    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        argv = list(args)  # before parsing consumes them: for an error that gives the command back, changed
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[ARGV] = argv
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KerasCifarError as e:
            raise UserError(str(e)) from None


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print keras-cifar's version and those of Keras and its backends, and exit.",
)
def main() -> None:
    """Study ResNet-18 on CIFAR-10 with Keras 3: run the report's experiments from YAML recipes.

    The backend is Keras's: set KERAS_BACKEND=tensorflow|jax|torch. Exit codes: 0 done, 1 some run or
    file failed (the others went on), 2 bad input or a file that cannot be written (a one-line error
    says what and how to fix it), 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
    """


for _command in (
    run.run,
    study.report,
    study.compare,
    tools.landscape,
    tools.tune,
    tools.bench,
    study.recipes,
    models.export_cmd,
    models.predict_cmd,
    models.evaluate_cmd,
    models.serve_cmd,
):
    main.add_command(_command)
