"""The command-line options several commands share, declared once: ``--data``, ``--out``, ``--subset``,
``--set`` and ``--tta``. Each is a decorator; the ones whose help depends on the command take it as an argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from keras_cifar.config.schema import TTA_MODES
from keras_cifar.data import sources as data_lib

DATA_HELP = data_lib.source_help()
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def data(help: str = DATA_HELP) -> Decorator:
    """``--data PATH`` -> `data_source`, None when not given: data.py then reads KERAS_CIFAR_DATA itself, so
    that an error about its value can name the variable."""
    return click.option("--data", "data_source", metavar="PATH", help=help)


def out(help: str) -> Decorator:
    """``--out`` -> `out`, the root folder a command writes under (default runs/)."""
    return click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False), help=help)


subset = click.option("--subset", type=click.IntRange(min=1), help="Train on N class-balanced training images (data.subset).")


def sets(help: str) -> Decorator:
    """``--set KEY.PATH=VALUE``, repeatable -> `sets`, read by config.parse_sets."""
    return click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help=help)


def tta(help: str) -> Decorator:
    """``--tta none|flip|flip_translate`` -> `tta`, None when not given (serving.resolve_tta: the model's own)."""
    return click.option("--tta", type=click.Choice(TTA_MODES), help=help)
