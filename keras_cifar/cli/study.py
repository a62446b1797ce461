"""The commands that read finished runs and recipes: report, compare, recipes."""

from __future__ import annotations

from pathlib import Path

import click

from keras_cifar import config as cfg
from keras_cifar.cli.common import TRACK_HELP, TRACKERS, UserError, report_recipe
from keras_cifar.core.console import say
from keras_cifar.core.files import write_atomic


@click.command()
@click.argument("run_roots", metavar="RUN_ROOT...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out", type=click.Path(file_okay=False), help="Write each recipe's report into OUT/<recipe>/ instead of its run folder."
)
@click.option("--track", type=click.Choice(TRACKERS), help=TRACK_HELP)
def report(run_roots: tuple[str, ...], out: str | None, track: str | None) -> None:
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
        report_recipe(recipe_dir, Path(out) / recipe_dir.name if out else None, track)


@click.command()
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
def compare(run_root: str, out: str | None, notes: str | None, recipes_dir: str | None) -> None:
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


MARKERS = ("<!-- recipes: made by `keras-cifar recipes --into` -->", "<!-- /recipes -->")


@click.group(invoke_without_command=True)
@click.option("--names", is_flag=True, help="Print only the names of the report's experiments, in its order.")
@click.option(
    "--into",
    type=click.Path(exists=True, dir_okay=False),
    help=f"Write the table into FILE, between its lines {MARKERS[0]} and {MARKERS[1]} (README.md's table).",
)
@click.pass_context
def recipes(ctx: click.Context, names: bool, into: str | None) -> None:
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
        say("\n".join(r.name for r in claimed_recipes() if r.claim and not r.claim.cites))
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
def recipes_show(name: str) -> None:
    """Print the shipped recipe NAME, a starting point for your own."""
    say(cfg.recipe_file(name).read_text().rstrip("\n"))
