"""Figures, all of them: the helpers (a figure, deterministic saving, epoch curves), a recipe's curves
(report), and the landscape, search and confusion-matrix figures.

Matplotlib's Figure API only: importing this module switches no global backend, so a notebook that
imports keras_cifar keeps its own. Matplotlib itself is imported when a figure is drawn.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_cifar.core.files import replace_atomic

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn; report.py imports this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from keras_cifar.study.report import Variant
    from keras_cifar.training.runs import Run

MARKERS_UP_TO = 30  # epochs; longer curves are drawn without markers


def figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.6), **subplot_kw: Any) -> tuple[Figure, Any]:
    """(Figure, 2-D array of axes), laid out by matplotlib's constrained layout."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, subplot_kw=subplot_kw or None)


def save(fig: Figure, path: Path | str) -> Path:
    """Write the figure atomically in the format of `path`'s suffix. PNG and SVG come out
    byte-identical for the same data (no date, fixed SVG ids), so committed figures only change
    when their numbers do."""
    from matplotlib import rc_context

    path = Path(path)
    fmt = path.suffix[1:]
    with rc_context({"svg.hashsalt": "keras-cifar"}):
        replace_atomic(
            path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=120, metadata={"Date": None} if fmt == "svg" else None)
        )
    return path


# ---------------------------------------------------------------------------------- epoch curves


def series(runs: Iterable[Run], key: str, scale: float = 1.0) -> tuple[list[int], list[float], list[float], list[float]]:
    """(epochs, mean, min, max) of history column `key` over `runs`, per epoch, finite values only."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.history:
            value = getattr(row, key)
            if value is not None and math.isfinite(value):
                by_epoch.setdefault(row.epoch, []).append(value * scale)
    epochs = sorted(by_epoch)
    return (
        epochs,
        [statistics.fmean(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def draw_runs(
    ax: Axes,
    key: str,
    color: Any,
    healthy: list[Run],
    broken: list[Run],
    name: str,
    legend: bool | str = True,
    scale: float = 1.0,
    style: str = "-",
) -> None:
    """One curve for `name`: the mean of `key` over the `healthy` runs with a min-max band (several
    runs), and each of the `broken` runs (diverged, failed) thin and dotted, ending in a cross.
    Markers on short runs, so that a run of one epoch still shows its point. `legend`: True for a
    legend entry named `name`, a string for another text, False for none."""
    label = (name if legend is True else legend) if legend else None
    epochs, mean, low, high = series(healthy, key, scale)
    marker = "o" if 0 < len(epochs) <= MARKERS_UP_TO else None
    if epochs:
        ax.plot(epochs, mean, style, color=color, lw=1.8, marker=marker, ms=3.5, label=label)
        if len(healthy) > 1:
            ax.fill_between(epochs, low, high, color=color, alpha=0.18, lw=0)
    for run in broken:
        epochs, values, _, _ = series([run], key, scale)
        if epochs:
            ax.plot(epochs, values, ":", color=color, lw=1.0, label=f"{name} seed{run.seed} ({run.status})" if legend else None)
            ax.plot(epochs[-1:], values[-1:], "x", color=color, ms=8, mew=2)


def epoch_axes(ax: Axes, title: str, ylabel: str, last_epoch: int) -> None:
    """Title, labels, grid and whole-number epoch ticks from 1 to `last_epoch`."""
    from matplotlib.ticker import MaxNLocator

    ax.set(title=title, xlabel="epoch", ylabel=ylabel, xlim=(0.5, max(last_epoch, 1) + 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)


def legend_below(fig: Figure, handles: list[Any], labels: list[str]) -> None:
    """One legend under the panels, where it never hides a curve."""
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), frameon=False)


def colors(names: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per name, in order (tab10)."""
    from matplotlib import colormaps

    tab10: Any = colormaps["tab10"]  # a ListedColormap, whose .colors are its ten colours
    palette = tab10.colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


# ------------------------------------------------------------------------------ a recipe's curves

FIGURE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class RecipeCurves:
    """What a recipe's figures show: its variants (each with .name and .runs, whose .history and .status
    are drawn), a legend text per variant, the subtitle and the loss axis's label."""

    recipe: str
    variants: list[Variant]
    legends: dict[str, str]
    subtitle: str
    loss_label: str

    def draw(self, ax: Axes, key: str, scale: float = 1.0, style: str = "-", legend: bool = True) -> None:
        """One curve per variant: healthy runs (completed or unfinished) as mean and band, broken ones alone."""
        palette = colors([v.name for v in self.variants])
        for v in self.variants:
            healthy = [r for r in v.runs if r.status in ("completed", "unfinished")]
            broken = [r for r in v.runs if r not in healthy]
            draw_runs(
                ax,
                key,
                palette[v.name],
                healthy,
                broken,
                v.name,
                legend=self.legends[v.name] if legend else False,
                scale=scale,
                style=style,
            )

    @property
    def last_epoch(self) -> int:
        return max((row.epoch for v in self.variants for r in v.runs for row in r.history), default=1)

    def save(self, fig: Figure, out_dir: Path | str, stem: str) -> list[Path]:
        return [save(fig, Path(out_dir) / f"{stem}.{fmt}") for fmt in FIGURE_FORMATS]


def figure_test(curves: RecipeCurves, out_dir: Path | str) -> list[Path]:
    """test_curves.png/.svg: test accuracy and loss per epoch, one curve per variant."""
    fig, ((acc, loss),) = figure(2)
    curves.draw(acc, "test_accuracy", 100)
    curves.draw(loss, "test_loss", legend=False)
    epoch_axes(acc, "Test accuracy", "test accuracy (%)", curves.last_epoch)
    epoch_axes(loss, "Test loss", f"test {curves.loss_label}", curves.last_epoch)
    legend_below(fig, *acc.get_legend_handles_labels())
    fig.suptitle(f"{curves.recipe}: test accuracy and loss per epoch\n{curves.subtitle}")
    return curves.save(fig, out_dir, "test_curves")


def figure_train_val(curves: RecipeCurves, out_dir: Path | str) -> list[Path]:
    """train_val_curves.png/.svg: training (dashed) and validation (solid) accuracy and loss per epoch."""
    from matplotlib.lines import Line2D

    fig, ((acc, loss),) = figure(2)
    for ax, key, scale in ((acc, "accuracy", 100), (loss, "loss", 1.0)):
        curves.draw(ax, key, scale, style="--", legend=False)
        curves.draw(ax, f"val_{key}", scale, legend=ax is acc)
    epoch_axes(acc, "Accuracy: train (dashed) and validation (solid)", "accuracy (%)", curves.last_epoch)
    epoch_axes(loss, "Loss: train (dashed) and validation (solid)", curves.loss_label, curves.last_epoch)
    handles, labels = acc.get_legend_handles_labels()
    legend_below(
        fig,
        handles + [Line2D([], [], color="gray", ls="--"), Line2D([], [], color="gray")],
        labels + ["train (augmented, averaged over the epoch)", "validation"],
    )
    fig.suptitle(f"{curves.recipe}: train and validation curves\n{curves.subtitle}")
    return curves.save(fig, out_dir, "train_val_curves")


def figure_lr(curves: RecipeCurves, out_dir: Path | str) -> list[Path]:
    """lr.png/.svg: the learning rate at the end of each epoch, per variant."""
    fig, ((ax,),) = figure(1)
    curves.draw(ax, "lr")
    epoch_axes(ax, "Learning rate at the end of each epoch", "learning rate", curves.last_epoch)
    legend_below(fig, *ax.get_legend_handles_labels())
    fig.suptitle(f"{curves.recipe}: learning rate per epoch\n{curves.subtitle}")
    return curves.save(fig, out_dir, "lr")


# ------------------------------------------------------------------------------------- landscapes


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 values from `lo` to `hi` (at least the two ends), for a log-scaled colour bar."""
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10.0**e <= hi
    ]
    return ticks if len(ticks) >= 2 else [lo, hi]


def loss_levels(loss: np.ndarray) -> np.ndarray:
    """Shared log-spaced contour levels over all runs' finite positive losses."""
    finite = loss[np.isfinite(loss) & (loss > 0)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (1e-3, 1.0)
    return np.geomspace(lo, max(hi, lo * 1.001), 25)


def landscape_1d(
    path: Path | str, coords: np.ndarray, labels: Sequence[str], loss: np.ndarray, accuracy: np.ndarray, title: str
) -> Path:
    """Loss (log scale) and accuracy against a, one line per run."""
    from matplotlib.ticker import LogFormatter

    fig, ((ax_loss, ax_acc),) = figure(2, size=(5.6, 4.4))
    for label, losses, a in zip(labels, loss, accuracy):
        ax_loss.plot(coords, losses, marker=".", label=label)
        ax_acc.plot(coords, 100 * a, marker=".", label=label)
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax_loss.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    xlabel = "a (step along direction d; 0 = trained weights)"
    ax_loss.set(title="Loss landscape", xlabel=xlabel, ylabel="loss (log scale)")
    ax_acc.set(title="Accuracy landscape", xlabel=xlabel, ylabel="accuracy (%)", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)


def landscape_2d(
    path: Path | str, coords: np.ndarray, labels: Sequence[str], loss: np.ndarray, accuracy: np.ndarray, title: str
) -> Path:
    """Filled contours of loss (log colour scale, 1-2-5 ticks) and accuracy over (a, b): one row
    per run, one colour scale for all runs."""
    from matplotlib.colors import LogNorm

    a, b = np.meshgrid(coords, coords, indexing="ij")
    levels = loss_levels(loss)
    fig, axes = figure(2, len(labels), size=(5.0, 4.2))
    for row, label in enumerate(labels):
        ax_loss, ax_acc = axes[row]
        masked = np.ma.masked_invalid(np.clip(loss[row], levels[0], levels[-1]))
        cs = ax_loss.contourf(a, b, masked, levels=levels, norm=LogNorm(), cmap="viridis")
        bar = fig.colorbar(cs, ax=ax_loss, label="loss (log scale)")
        bar.set_ticks(_log_ticks(levels[0], levels[-1]), labels=[f"{t:g}" for t in _log_ticks(levels[0], levels[-1])])
        bar.minorticks_off()
        cs = ax_acc.contourf(a, b, 100 * accuracy[row], levels=np.linspace(0, 100, 21), cmap="magma")
        fig.colorbar(cs, ax=ax_acc, label="accuracy (%)", ticks=range(0, 101, 20))
        for ax, what in ((ax_loss, "Loss"), (ax_acc, "Accuracy")):
            ax.plot(0, 0, marker="*", color="white", markeredgecolor="black", ms=12)
            ax.set(title=f"{what}: {label}", xlabel="a (direction d)", ylabel="b (direction e)", aspect="equal")
    fig.suptitle(title + "\n* = trained weights")
    return save(fig, path)


def landscape_surface(path: Path | str, coords: np.ndarray, labels: Sequence[str], loss: np.ndarray, title: str) -> Path:
    """3D surfaces of log10(loss) over (a, b), side by side on one z scale, seen from above enough
    that the near rim of a bowl does not hide its floor."""
    a, b = np.meshgrid(coords, coords, indexing="ij")
    z = np.log10(np.clip(loss, *loss_levels(loss)[[0, -1]]))
    lo, hi = np.nanmin(z), np.nanmax(z)
    fig, axes = figure(len(labels), size=(5.5, 5.0), projection="3d")
    for ax, label, zi in zip(axes[0], labels, z):
        ax.plot_surface(a, b, zi, cmap="viridis", vmin=lo, vmax=hi, linewidth=0)
        ax.set(title=label, xlabel="a", ylabel="b", zlabel="log10 loss", zlim=(lo, hi))
        ax.view_init(elev=55, azim=-60)
    fig.suptitle(title)
    return save(fig, path)


# -------------------------------------------------------------------------------- search, evaluate


def objective(
    path: Path | str,
    rows: list[dict[str, Any]],
    space: dict[str, tuple[Any, bool]],
    objective_name: str,
    best_trial: Any,
    title: str,
) -> Path:
    """The objective against each searched hyperparameter, one panel each; the best trial starred.
    `space`: {name: (entry, log)} where entry is a list of choices or a {min, max} range."""
    from matplotlib.ticker import PercentFormatter

    fig, axes = figure(len(space), size=(4.2, 3.6))
    for ax, (name, (entry, log)) in zip(axes[0], space.items()):
        ax.scatter([r[name] for r in rows], [r[objective_name] for r in rows], color="tab:blue", alpha=0.8)
        for r in rows:
            ax.annotate(r["trial"], (r[name], r[objective_name]), xytext=(4, 4), textcoords="offset points", fontsize=7)
        star = [r for r in rows if r["trial"] == best_trial]
        ax.scatter(
            [r[name] for r in star],
            [r[objective_name] for r in star],
            marker="*",
            s=250,
            color="tab:red",
            label=f"best (trial {best_trial})",
        )
        if log:
            ax.set_xscale("log")
        if isinstance(entry, dict):  # the whole range, so that one sees where trials fell in it
            lo, hi = entry["min"], entry["max"]
            ticks = (np.geomspace if log else np.linspace)(lo, hi, 5)
            ax.set_xlim(*((lo / 1.2, hi * 1.2) if log else (lo - 0.05 * (hi - lo), hi * 1.05)))
        else:
            ticks = entry
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.minorticks_off()
        if objective_name == "val_accuracy":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set(xlabel=name + (" (log scale)" if log else ""), ylabel=objective_name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def confusion(path: Path | str, matrix: np.ndarray, class_names: Sequence[str], title: str) -> Path:
    """The confusion matrix, counts in each cell; rows true class, columns predicted."""
    fig, ((ax,),) = figure(size=(7, 6))
    im = ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    threshold = matrix.max() / 2
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color="white" if n > threshold else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="images")
    return save(fig, path)
