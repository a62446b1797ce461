"""Where runs are logged besides their run folders: TensorBoard's HParams dashboard, and MLflow.

- HParams (where TensorFlow is installed): a run's ``tb/`` holds an hparams summary of its resolved
  config, written when it starts, so ``tensorboard --logdir OUT/<recipe>`` compares its variants and
  seeds in the HParams tab, against the ``epoch_*`` scalars that Keras's TensorBoard callback writes
  beside it (``tb/train``, ``tb/validation``).
- MLflow (``--track mlflow``; the ``mlflow`` extra): when a recipe's report is written, each finished
  run (completed, diverged or failed) that the store does not hold yet in that state becomes an MLflow
  run: experiment = recipe, run name = variant/seed<k>, params = its resolved config, metrics = its
  history per epoch (step = epoch), artifacts = metrics.json, history.csv, config.yaml and the
  recipe's figures. The store is MLFLOW_TRACKING_URI, else MLflow's recommended local store, a SQLite
  database ``mlflow.db`` beside OUT (artifacts in ``mlartifacts/`` beside it), which a stock ``mlflow ui``
  opens with no extra variable.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from keras_cifar.config import RunSpec
from keras_cifar.core import extras
from keras_cifar.core.record import ALL_COLUMNS
from keras_cifar.training.runs import Run, recipe_runs

RUN_TAG = "keras_cifar.run"  # recipe/variant/seed<k>
STATE_TAG = "keras_cifar.state"  # "completed after 10 epochs": a run logged again only when it changed


def _scalar(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def write_hparams(logdir: Path | str, spec: RunSpec) -> None:
    """The hparams summary of run `spec` (its flattened config, variant and seed) into `logdir`."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = {key: _scalar(v) for key, v in spec.config.flat().items() if key != "train.seeds"}
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams({**values, "variant": spec.variant, "seed": spec.seed}, trial_id=f"{spec.variant}/seed{spec.seed}")


def check(track: str | None) -> None:
    """Refuse --track mlflow where MLflow (or the database its default store needs) is not installed,
    before anything is trained."""
    if track == "mlflow":
        extras.require("mlflow", "mlflow", "sqlalchemy", "alembic", purpose="--track mlflow")


SQLITE = "sqlite:///"


def store(out: str | Path) -> str:
    """The MLflow tracking URI: MLFLOW_TRACKING_URI, else the SQLite database mlflow.db beside the OUT
    folder (MLflow's recommended local store; its file store, mlruns/, opens only behind a variable)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return SQLITE + str(Path(out).resolve().parent / "mlflow.db")


def _set_experiment(mlflow: ModuleType, name: str, uri: str) -> None:
    """Make `name` the active experiment. One created in a SQLite store keeps its artifacts in
    mlartifacts/<name> beside the database (MLflow's default, ./mlruns, is relative to where the command
    runs)."""
    if uri.startswith(SQLITE) and mlflow.get_experiment_by_name(name) is None:
        artifacts = Path(uri.removeprefix(SQLITE)).resolve().parent / "mlartifacts" / name
        mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(name)


def log_recipe(recipe_dir: str | Path, uri: str, figures_dir: str | Path) -> int:
    """Log the finished runs of one recipe folder (OUT/<recipe>/) with the figures in `figures_dir` to
    MLflow at `uri`; returns how many were logged."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    recipe_dir = Path(recipe_dir)
    figures = sorted(Path(figures_dir).glob("*.png"))
    _set_experiment(mlflow, recipe_dir.name, uri)
    logged = 0
    for runs in recipe_runs(recipe_dir).values():
        for run in runs:
            state = f"{run.status} after {run.epochs_completed} epochs"
            if run.status == "unfinished" or _logged(mlflow, recipe_dir.name, run.label, state):
                continue
            _log_run(mlflow, run, state, figures)
            logged += 1
    return logged


def _logged(mlflow: ModuleType, experiment: str, label: str, state: str) -> bool:
    found = mlflow.search_runs(
        experiment_names=[experiment],
        output_format="list",
        filter_string=f"tags.`{RUN_TAG}` = '{label}' and tags.`{STATE_TAG}` = '{state}'",
    )
    return bool(found)


def _log_run(mlflow: ModuleType, run: Run, state: str, figures: list[Path]) -> None:
    with mlflow.start_run(run_name=f"{run.variant}/seed{run.seed}", tags={RUN_TAG: run.label, STATE_TAG: state}):
        mlflow.log_params({key: _scalar(v) for key, v in run.settings().items()} | {"seed": run.seed})
        for row in run.history:
            values = row.to_dict()
            mlflow.log_metrics({k: v for k in ALL_COLUMNS[1:] if math.isfinite(v := values[k])}, step=row.epoch)
        for name in ("metrics.json", "history.csv", "config.yaml"):
            if (run.path / name).exists():
                mlflow.log_artifact(str(run.path / name))
        for figure in figures:
            mlflow.log_artifact(str(figure), artifact_path="figures")
