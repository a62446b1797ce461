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

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from keras_cifar.config import Config
from keras_cifar.core.backend import environment
from keras_cifar.core.console import Eta, count, say
from keras_cifar.core.errors import ConfigError, RunFolderError
from keras_cifar.core.files import make_dirs, write_json
from keras_cifar.core.record import finite_or_none
from keras_cifar.data import sources as data_lib
from keras_cifar.data.pipelines import Feeder
from keras_cifar.study import plots

if TYPE_CHECKING:
    import keras

    from keras_cifar.training.runs import Run

AXES = ("a", "b")
SHARPNESS_RADIUS = 0.5
PROGRESS_EVERY = 10.0  # seconds between progress lines


@dataclass(frozen=True)
class Settings:
    """What a landscape scans: the grid, the images it evaluates and the seed of its directions."""

    dims: int = 1
    points: int = 21
    span: tuple[float, float] = (-1.0, 1.0)
    images: int = 2000
    split: str = "train"
    seed: int = 0
    batch_size: int = 500
    surface: bool = False

    def check(self, n_runs: int, out: Path | str | None) -> None:
        """Refuse settings that cannot work, before any model is loaded."""
        if n_runs > 1 and out is None:
            raise ConfigError("several RUN_DIRs are compared in one figure: pass --out DIR")
        if self.surface and self.dims != 2:
            raise ConfigError("--surface draws the 2D landscape: add --dims 2")
        grid(self.span, self.points)


# -------------------------------------------------------------------------------------- directions


def filter_normalize(direction: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`direction` with each filter (slice along the last axis) rescaled to the norm of that filter
    of `weights`; a filter of zeros in `weights` gets a zero direction."""
    axes = tuple(range(weights.ndim - 1))
    d_norm = np.sqrt(np.sum(np.square(direction, dtype=np.float64), axis=axes, keepdims=True))
    w_norm = np.sqrt(np.sum(np.square(weights, dtype=np.float64), axis=axes, keepdims=True))
    return (direction * (w_norm / np.maximum(d_norm, 1e-12))).astype(weights.dtype)


def random_direction(variables: Sequence[Any], seed: int, axis: int = 0) -> list[np.ndarray]:
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


def grid(span: tuple[float, float], points: int) -> np.ndarray:
    """`points` coordinates from span[0] to span[1]; the one nearest 0 is exactly 0 when 0 is inside."""
    lo, hi = span
    if not lo < hi:
        raise ConfigError(f"--range {lo:g} {hi:g}: the first value must be below the second")
    if not lo <= 0 <= hi:
        raise ConfigError(f"--range {lo:g} {hi:g} must contain 0, the trained weights")
    coords = np.linspace(lo, hi, points)
    coords[np.isclose(coords, 0.0, rtol=0, atol=1e-9 * (hi - lo))] = 0.0
    return coords


# -------------------------------------------------------------------------------------------- scan


def scan(
    model: keras.Model,
    inputs: dict[str, Any],
    directions: list[list[np.ndarray]],
    coords: np.ndarray,
    label: str | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate the compiled `model` at theta* + sum_k coords[i_k] * directions[k] for every grid index.

    `inputs`: keyword arguments for ``model.evaluate``; `directions`: one or two lists of arrays
    matching ``model.trainable_variables``. Returns {metric name: array of shape [len(coords)] * dims}.
    The compiled evaluation is built once and reused; the weights are restored exactly afterwards,
    also when the scan fails or is interrupted. With a `label`, a progress line at most every
    PROGRESS_EVERY seconds, and at the end.
    """
    variables = model.trainable_variables
    dims = len(directions)
    moved = [i for i in range(len(variables)) if any(np.any(d[i]) for d in directions)]
    theta = {i: np.array(variables[i].numpy()) for i in moved}
    shape = (len(coords),) * dims
    surface: dict[str, np.ndarray] = {}
    eta, last_line = Eta(int(np.prod(shape))), time.perf_counter()
    try:
        for index in itertools.product(range(len(coords)), repeat=dims):
            start = time.perf_counter()
            for i in moved:
                step = sum(coords[j] * d[i].astype(np.float64) for j, d in zip(index, directions))
                variables[i].assign((theta[i] + step).astype(theta[i].dtype))
            logs = model.evaluate(**inputs, verbose=0, return_dict=True)
            for name, value in logs.items():
                surface.setdefault(name, np.full(shape, np.nan))[index] = value
            now = time.perf_counter()
            eta.tick(now - start)
            if label and (now - last_line >= PROGRESS_EVERY or eta.done == eta.total):
                say(f"  {label}: {eta.text('points')}")
                last_line = now
    finally:
        for i in moved:
            variables[i].assign(theta[i])
    return surface


# ------------------------------------------------------------------------------------ run folders


def evaluation_model(run: Run) -> keras.Model:
    """The run's trained classifier, compiled for evaluation with the run's loss and accuracy."""
    import keras

    from keras_cifar.nn.losses import get_loss
    from keras_cifar.tools.serving import load_keras

    config = cast(Config, run.config)  # a completed run's, which has its config.yaml
    model = load_keras(run.path / "model.keras")
    model.compile(
        loss=get_loss(config.loss, config.loss_options.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.train.jit_compile,
    )
    return model


def evaluation_images(cifar: data_lib.Cifar, config: Config, split: str, images: int) -> tuple[np.ndarray, np.ndarray]:
    """`images` class-balanced images of the run's train set or test half (the project's split)."""
    splits = data_lib.split(cifar, config.data.subset)
    x, y = splits.train if split == "train" else splits.test
    if images < len(y):
        keep = data_lib.stratified_take(y, images, data_lib.SPLIT_SEED)
        x, y = x[keep], y[keep]
    return x, y


# ---------------------------------------------------------------------------------------- summary


def value_at(coords: np.ndarray, values: np.ndarray, point: Sequence[float]) -> float | None:
    """`values` (shape [len(coords)] * dims) at `point`, linearly interpolated between grid points."""
    for p in point:
        values = np.apply_along_axis(_interpolate, 0, values, p, coords)
    return finite_or_none(float(values))


def _interpolate(column: np.ndarray, x: float, coords: np.ndarray) -> Any:
    """`column` (values at `coords`) at `x`, linearly interpolated."""
    return np.interp(x, coords, column)


def _extreme(coords: np.ndarray, values: np.ndarray, pick: Callable[[np.ndarray], Any]) -> dict[str, Any] | None:
    finite = np.where(np.isfinite(values), values, np.nan)
    if np.all(np.isnan(finite)):
        return None
    index = np.unravel_index(pick(finite), values.shape)
    return {"value": float(values[index]), "at": [float(coords[i]) for i in index]}


def surface_summary(
    coords: np.ndarray, loss: np.ndarray, accuracy: np.ndarray, radius: float = SHARPNESS_RADIUS
) -> dict[str, Any]:
    """Centre, extremes and sharpness (mean loss rise / accuracy drop at distance `radius` along each
    axis, both signs, where the grid reaches) of one surface."""
    dims = loss.ndim
    centre = (0.0,) * dims
    c_loss, c_acc = value_at(coords, loss, centre), value_at(coords, accuracy, centre)
    points: dict[str, dict[str, Any]] = {}  # its loss and accuracy at each point (None: not finite)
    for axis, sign in itertools.product(range(dims), (-1, 1)):
        point = [0.0] * dims
        point[axis] = sign * radius
        if coords[0] <= point[axis] <= coords[-1]:
            points[f"{AXES[axis]}={point[axis]:+g}"] = {
                "loss": value_at(coords, loss, point),
                "accuracy": value_at(coords, accuracy, point),
            }

    def mean_change(key: str, ref: float | None, sign: int) -> float | None:
        values = [p[key] for p in points.values()]
        if ref is None or not values or None in values:
            return None
        return sign * (float(np.mean(values)) - ref)

    return {
        "centre": {"loss": c_loss, "accuracy": c_acc},
        "loss": {"min": _extreme(coords, loss, np.nanargmin), "max": _extreme(coords, loss, np.nanargmax)},
        "accuracy": {"min": _extreme(coords, accuracy, np.nanargmin), "max": _extreme(coords, accuracy, np.nanargmax)},
        "sharpness": {
            "radius": radius,
            "loss_rise": mean_change("loss", c_loss, 1),
            "accuracy_drop": mean_change("accuracy", c_acc, -1),
            "points": points,
        },
        "non_finite_points": int(np.sum(~np.isfinite(loss))),
    }


# ------------------------------------------------------------------------------------------ driver


def title(runs: list[Run], settings: Settings) -> str:
    """What is compared, at what scale, on which images."""
    from keras_cifar.study.report import scale_text

    scales = {scale_text(r) for r in runs}
    names = " vs ".join(r.label for r in runs)
    scale = scales.pop() if len(scales) == 1 else "; ".join(f"{r.label}: {scale_text(r)}" for r in runs)
    return (
        f"{names} ({scale})\n{settings.images} {settings.split} images per point, filter-normalized "
        f"random directions (seed {settings.seed})"
    )


def run_landscape(
    runs: list[Run], settings: Settings, data_source: str | None = None, out: Path | str | None = None
) -> list[Path]:
    """Scan every completed run (runs.Run) on the same grid and direction recipe; write
    landscape_<dims>d.npz/.json and figures to `out` (default: the run folder, for one run).
    Returns the written paths."""
    if len({r.label for r in runs}) < len(runs):
        raise ConfigError("the same run was given twice: " + ", ".join(r.label for r in runs))
    coords = grid(settings.span, settings.points)
    out = Path(out or runs[0].path)
    make_dirs(out)
    datasets: dict[str, data_lib.Cifar] = {}
    surfaces: list[dict[str, np.ndarray]] = []
    summaries: list[dict[str, Any]] = []
    for run in runs:
        source = data_source or run.data_source
        if not source:
            raise RunFolderError(f"{run.path}: config.yaml records no data_source; pass --data PATH")
        if source not in datasets:
            datasets[source] = data_lib.load(source)
        surface, summary = _scan_run(run, datasets[source], settings, coords)
        surfaces.append(surface)
        summaries.append(summary)
    return _write(runs, settings, coords, surfaces, summaries, out)


def _scan_run(
    run: Run, cifar: data_lib.Cifar, settings: Settings, coords: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(surface, summary) of one run: its loss and accuracy on the grid, and the numbers for the JSON."""
    import keras

    config = cast(Config, run.config)  # a completed run's
    x, y = evaluation_images(cifar, config, settings.split, settings.images)
    keras.backend.clear_session()
    model = evaluation_model(run)
    directions = [random_direction(model.trainable_variables, settings.seed, axis) for axis in range(settings.dims)]
    say(f"{run.label}: {count(len(coords) ** settings.dims, 'point')} x {len(y)} {settings.split} images from {cifar.source}")
    feeder = Feeder(settings.batch_size, config.data.pipeline, settings.batch_size)
    start = time.perf_counter()
    surface = scan(model, feeder.evaluate(x, y), directions, coords, label=run.label)
    summary = {
        "label": run.label,
        "run_dir": str(run.path),
        "data_source": cifar.source,
        "images": len(y),
        "seconds": round(time.perf_counter() - start, 1),
        **surface_summary(coords, surface["loss"], surface["accuracy"]),
    }
    return surface, summary


def _write(
    runs: list[Run],
    settings: Settings,
    coords: np.ndarray,
    surfaces: list[dict[str, np.ndarray]],
    summaries: list[dict[str, Any]],
    out: Path,
) -> list[Path]:
    """landscape_<dims>d.npz and .json and the figures into `out`; returns their paths."""
    record = {
        **asdict(settings),
        "range": [float(v) for v in settings.span],
        "sharpness_radius": SHARPNESS_RADIUS,
        "directions": "Gaussian, filter-normalized (Li et al. 2018); zero for biases and BatchNorm "
        "gamma/beta; BatchNorm moving statistics as trained (inference mode); "
        "no augmentation",
        **environment(),
    }
    del record["span"], record["surface"]
    labels = [r.label for r in runs]
    loss = np.stack([s["loss"] for s in surfaces])
    accuracy = np.stack([s["accuracy"] for s in surfaces])
    stem = out / f"landscape_{settings.dims}d"
    np.savez(stem.with_suffix(".npz"), coords=coords, loss=loss, accuracy=accuracy, labels=np.array(labels))
    write_json(stem.with_suffix(".json"), {"settings": record, "runs": summaries})
    heading = title(runs, settings)
    draw = plots.landscape_1d if settings.dims == 1 else plots.landscape_2d
    figures = [draw(stem.with_suffix(".png"), coords, labels, loss, accuracy, heading)]
    if settings.surface:
        figures.append(
            plots.landscape_surface(out / "landscape_2d_surface.png", coords, labels, loss, "Loss surface: " + heading)
        )
    return [stem.with_suffix(".npz"), stem.with_suffix(".json"), *figures]
