"""Loss and accuracy landscapes around trained weights (Li et al., "Visualizing the Loss Landscape of
Neural Nets", NeurIPS 2018).

The model is evaluated at theta* + a*d (1D) or theta* + a*d + b*e (2D) on a grid of (a, b), where d and
e are random Gaussian directions, filter-normalized: every filter (the last axis of a kernel: a conv
output channel, a dense unit) of a direction is rescaled to the norm of the same filter of theta*, so
that landscapes of differently scaled networks can be compared. Choices, as in the paper's code:

- biases and BatchNormalization gamma/beta (every 1-D variable) get a zero direction; only kernels move;
- BN moving mean/variance stay as trained: the network is evaluated in inference mode, without
  augmentation, exactly as ``model.evaluate`` scores it;
- directions are drawn per kernel from a generator seeded by (seed, axis, variable path), so the same
  seed gives the same directions on every backend, and networks that share layer names (BN and
  no-BN, shortcut and no-shortcut) get the same raw draws for their common kernels.
"""

import itertools
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import keras
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import LogFormatter, MaxNLocator

from keras_cifar import augment  # noqa: F401  registers the preprocessing layers that model.keras holds
from keras_cifar import data as data_lib
from keras_cifar.losses import get_loss
from keras_cifar.train import finite_or_none, read_run_config, environment, read_json, write_atomic

matplotlib.use("Agg")  # files only; takes effect because no figure exists yet

AXES = ("a", "b")
SHARPNESS_RADIUS = 0.5


class LandscapeError(ValueError):
    """A run folder or setting a landscape cannot use; the message is one line."""


# -------------------------------------------------------------------------------------- directions


def filter_normalize(direction, weights):
    """`direction` with each filter (slice along the last axis) rescaled to the norm of that filter
    of `weights`; a filter of zeros in `weights` gets a zero direction."""
    axes = tuple(range(weights.ndim - 1))
    d_norm = np.sqrt(np.sum(np.square(direction, dtype=np.float64), axis=axes, keepdims=True))
    w_norm = np.sqrt(np.sum(np.square(weights, dtype=np.float64), axis=axes, keepdims=True))
    return (direction * (w_norm / np.maximum(d_norm, 1e-12))).astype(weights.dtype)


def random_direction(variables, seed, axis=0):
    """A filter-normalized Gaussian direction: one array per variable, zero for 1-D variables."""
    direction = []
    for v in variables:
        w = v.numpy()
        if w.ndim < 2:
            direction.append(np.zeros_like(w))
            continue
        rng = np.random.default_rng([seed, axis, zlib.crc32(v.path.encode())])
        direction.append(filter_normalize(rng.standard_normal(w.shape), w))
    return direction


def grid(span, points):
    """`points` coordinates from span[0] to span[1]; the one nearest 0 is exactly 0 when 0 is inside."""
    lo, hi = span
    if not lo < hi:
        raise LandscapeError(f"--range {lo:g} {hi:g}: the first value must be below the second")
    if not lo <= 0 <= hi:
        raise LandscapeError(f"--range {lo:g} {hi:g} must contain 0, the trained weights")
    coords = np.linspace(lo, hi, points)
    coords[np.isclose(coords, 0.0, rtol=0, atol=1e-9 * (hi - lo))] = 0.0
    return coords


# -------------------------------------------------------------------------------------------- scan


def scan(model, inputs, directions, coords, verbose=1):
    """Evaluate the compiled `model` at theta* + sum_k coords[i_k] * directions[k] for every grid index.

    `inputs`: keyword arguments for ``model.evaluate``; `directions`: one or two lists of arrays
    matching ``model.trainable_variables``. Returns {metric name: array of shape [len(coords)] * dims}.
    The compiled evaluation is built once and reused; the weights are restored exactly afterwards,
    also when the scan fails or is interrupted.
    """
    variables = model.trainable_variables
    dims = len(directions)
    moved = [i for i in range(len(variables)) if any(np.any(d[i]) for d in directions)]
    theta = {i: np.array(variables[i].numpy()) for i in moved}
    shape = (len(coords),) * dims
    surface = {}
    progress = keras.utils.Progbar(int(np.prod(shape)), verbose=verbose, unit_name="point")
    try:
        for n, index in enumerate(itertools.product(range(len(coords)), repeat=dims)):
            for i in moved:
                step = sum(coords[j] * d[i].astype(np.float64) for j, d in zip(index, directions))
                variables[i].assign((theta[i] + step).astype(theta[i].dtype))
            logs = model.evaluate(**inputs, verbose=0, return_dict=True)
            for name, value in logs.items():
                surface.setdefault(name, np.full(shape, np.nan))[index] = value
            progress.update(n + 1)
    finally:
        for i in moved:
            variables[i].assign(theta[i])
    return surface


# ------------------------------------------------------------------------------------ run folders


@dataclass(frozen=True)
class Run:
    path: Path
    label: str  # recipe/variant/seed<k>
    config: dict  # config.yaml without the run identity; holds data_source


def read_run(run_dir):
    """A completed run folder: its config and label; a LandscapeError says why it cannot be used."""
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise LandscapeError(f"{path}: not a run folder (no config.yaml)")
    if not (path / "model.keras").is_file():
        status = (read_json(path / "metrics.json") or {}).get("status", "not finished")
        raise LandscapeError(f"{path}: no model.keras (run status: {status}); only completed runs have one")
    ident, config = read_run_config(path)
    return Run(path, f"{ident['recipe']}/{ident['variant']}/seed{ident['seed']}", config)


def load_model(run):
    """The run's trained classifier, compiled for evaluation with the run's loss and accuracy."""
    model = keras.saving.load_model(run.path / "model.keras", compile=False)
    model.compile(loss=get_loss(run.config["loss"]),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=run.config["train"]["jit_compile"])
    return model


def evaluation_images(cifar, config, split, images):
    """`images` class-balanced images of the run's train set or test half (the project's split)."""
    splits = data_lib.split(cifar, config["data"]["subset"])
    x, y = splits.train if split == "train" else splits.test
    if images < len(y):
        keep = data_lib.stratified_take(y, images, data_lib.SPLIT_SEED)
        x, y = x[keep], y[keep]
    return x, y


# ---------------------------------------------------------------------------------------- summary


def value_at(coords, values, point):
    """`values` (shape [len(coords)] * dims) at `point`, linearly interpolated between grid points."""
    for p in point:
        values = np.apply_along_axis(lambda v, p=p: np.interp(p, coords, v), 0, values)
    return finite_or_none(float(values))


def _extreme(coords, values, pick):
    finite = np.where(np.isfinite(values), values, np.nan)
    if np.all(np.isnan(finite)):
        return None
    index = np.unravel_index(pick(finite), values.shape)
    return {"value": float(values[index]), "at": [float(coords[i]) for i in index]}


def summarize(coords, loss, accuracy, radius=SHARPNESS_RADIUS):
    """Centre, extremes and sharpness (mean loss rise / accuracy drop at distance `radius` along each
    axis, both signs, where the grid reaches) of one surface."""
    dims = loss.ndim
    centre = (0.0,) * dims
    c_loss, c_acc = value_at(coords, loss, centre), value_at(coords, accuracy, centre)
    points = {}
    for axis, sign in itertools.product(range(dims), (-1, 1)):
        point = [0.0] * dims
        point[axis] = sign * radius
        if coords[0] <= point[axis] <= coords[-1]:
            points[f"{AXES[axis]}={point[axis]:+g}"] = {"loss": value_at(coords, loss, point),
                                                       "accuracy": value_at(coords, accuracy, point)}

    def mean_change(key, ref, sign):
        values = [p[key] for p in points.values()]
        if ref is None or not values or None in values:
            return None
        return sign * (float(np.mean(values)) - ref)

    return {
        "centre": {"loss": c_loss, "accuracy": c_acc},
        "loss": {"min": _extreme(coords, loss, np.nanargmin), "max": _extreme(coords, loss, np.nanargmax)},
        "accuracy": {"min": _extreme(coords, accuracy, np.nanargmin),
                     "max": _extreme(coords, accuracy, np.nanargmax)},
        "sharpness": {"radius": radius, "loss_rise": mean_change("loss", c_loss, 1),
                      "accuracy_drop": mean_change("accuracy", c_acc, -1), "points": points},
        "non_finite_points": int(np.sum(~np.isfinite(loss))),
    }


# ---------------------------------------------------------------------------------------- figures


def _subtitle(settings):
    return (f"{settings['images']} {settings['split']} images, filter-normalized random directions "
            f"(seed {settings['seed']})")


def plot_1d(path, coords, labels, loss, accuracy, settings):
    """Loss (log scale) and accuracy against a, one line per run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, l, a in zip(labels, loss, accuracy):
        ax_loss.plot(coords, l, marker=".", label=label)
        ax_acc.plot(coords, 100 * a, marker=".", label=label)
    ax_loss.set_yscale("log")
    ax_loss.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax_loss.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax_loss.set(title="Loss landscape", xlabel="a (step along direction d; 0 = trained weights)", ylabel="loss")
    ax_acc.set(title="Accuracy landscape", xlabel="a (step along direction d; 0 = trained weights)",
               ylabel="accuracy (%)", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(_subtitle(settings))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _loss_levels(loss):
    """Shared, log-spaced contour levels over all runs' finite positive losses."""
    finite = loss[np.isfinite(loss) & (loss > 0)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (1e-3, 1.0)
    return np.geomspace(lo, max(hi, lo * 1.001), 25)


def plot_2d(path, coords, labels, loss, accuracy, settings):
    """Filled contours of loss and accuracy over (a, b): one row per run, one colour scale for all."""
    a, b = np.meshgrid(coords, coords, indexing="ij")
    levels = _loss_levels(loss)
    fig, axes = plt.subplots(len(labels), 2, figsize=(10, 4.2 * len(labels)), squeeze=False)
    for row, label in enumerate(labels):
        ax_loss, ax_acc = axes[row]
        masked = np.ma.masked_invalid(np.clip(loss[row], levels[0], levels[-1]))
        cs = ax_loss.contourf(a, b, masked, levels=levels, norm=LogNorm(), cmap="viridis")
        fig.colorbar(cs, ax=ax_loss, label="loss", format="%.3g")
        cs = ax_acc.contourf(a, b, 100 * accuracy[row], levels=np.linspace(0, 100, 21), cmap="magma")
        fig.colorbar(cs, ax=ax_acc, label="accuracy (%)")
        for ax, what in ((ax_loss, "Loss"), (ax_acc, "Accuracy")):
            ax.plot(0, 0, marker="*", color="white", markeredgecolor="black", ms=12)
            ax.set(title=f"{what} landscape: {label}", xlabel="a (direction d)", ylabel="b (direction e)",
                   aspect="equal")
    fig.suptitle(_subtitle(settings) + "; * = trained weights")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_surface(path, coords, labels, loss, settings):
    """3D surfaces of log10(loss) over (a, b), side by side, on one z scale."""
    a, b = np.meshgrid(coords, coords, indexing="ij")
    z = np.log10(np.clip(loss, *_loss_levels(loss)[[0, -1]]))
    fig = plt.figure(figsize=(5.5 * len(labels), 5))
    for i, label in enumerate(labels):
        ax = fig.add_subplot(1, len(labels), i + 1, projection="3d")
        ax.plot_surface(a, b, z[i], cmap="viridis", vmin=np.nanmin(z), vmax=np.nanmax(z), linewidth=0)
        ax.set(title=label, xlabel="a", ylabel="b", zlabel="log10 loss", zlim=(np.nanmin(z), np.nanmax(z)))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
    fig.suptitle("Loss surface; " + _subtitle(settings))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ driver


def run_landscape(run_dirs, dims=1, points=21, span=(-1.0, 1.0), images=2000, split="train",
                  data_source=None, out=None, seed=0, batch_size=500, draw_surface=False, log=print):
    """Scan every run folder on the same grid and direction recipe; write landscape_<dims>d.npz/.json
    and figures to `out` (default: the run folder, for one run). Returns the written paths."""
    if len(run_dirs) > 1 and out is None:
        raise LandscapeError("several RUN_DIRs are compared in one figure: pass --out DIR")
    if draw_surface and dims != 2:
        raise LandscapeError("--surface draws the 2D landscape: add --dims 2")
    coords = grid(span, points)
    runs = [read_run(d) for d in run_dirs]
    if len({r.label for r in runs}) < len(runs):
        raise LandscapeError("the same run was given twice: " + ", ".join(r.label for r in runs))
    out = Path(out or runs[0].path)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"dims": dims, "points": points, "range": [float(v) for v in span], "images": images,
                "split": split, "seed": seed, "batch_size": batch_size, "sharpness_radius": SHARPNESS_RADIUS,
                "directions": "Gaussian, filter-normalized (Li et al. 2018); zero for biases and BatchNorm "
                              "gamma/beta; BatchNorm moving statistics as trained (inference mode); "
                              "no augmentation", **environment()}
    datasets, surfaces, summaries = {}, [], []
    for run in runs:
        source = data_source or run.config.get("data_source")
        if not source:
            raise LandscapeError(f"{run.path}: config.yaml records no data_source; pass --data PATH")
        if source not in datasets:
            datasets[source] = data_lib.load(source)
        x, y = evaluation_images(datasets[source], run.config, split, images)
        keras.backend.clear_session()
        model = load_model(run)
        directions = [random_direction(model.trainable_variables, seed, axis) for axis in range(dims)]
        log(f"{run.label}: {len(coords) ** dims} points x {len(y)} {split} images from {datasets[source].source}")
        feeder = data_lib.Feeder(batch_size, run.config["data"]["pipeline"])
        start = time.perf_counter()
        surface = scan(model, feeder.evaluate(x, y), directions, coords)
        seconds = time.perf_counter() - start
        surfaces.append(surface)
        summaries.append({"label": run.label, "run_dir": str(run.path), "data_source": datasets[source].source,
                          "images": len(y), "seconds": round(seconds, 1),
                          **summarize(coords, surface["loss"], surface["accuracy"])})
    labels = [r.label for r in runs]
    loss = np.stack([s["loss"] for s in surfaces])
    accuracy = np.stack([s["accuracy"] for s in surfaces])
    stem = out / f"landscape_{dims}d"
    written = [stem.with_suffix(".npz"), stem.with_suffix(".json"), stem.with_suffix(".png")]
    np.savez(written[0], coords=coords, loss=loss, accuracy=accuracy, labels=np.array(labels))
    write_atomic(written[1], json.dumps({"settings": settings, "runs": summaries}, indent=2) + "\n")
    (plot_1d if dims == 1 else plot_2d)(written[2], coords, labels, loss, accuracy, settings)
    if draw_surface:
        written.append(out / "landscape_2d_surface.png")
        plot_surface(written[-1], coords, labels, loss, settings)
    return written
