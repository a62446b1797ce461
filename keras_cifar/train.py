"""Compile, fit and record one run; run a recipe's sweep with resume, divergence handling and ETA.

Run folder ``OUT/<recipe>/<variant>/seed<k>/``: ``config.yaml`` (resolved), ``history.csv`` (one row
per epoch), ``metrics.json`` (final numbers and status), ``model.keras``, TensorBoard logs in ``tb/``.
While a run is going, ``checkpoint-epoch<k>.keras`` holds the last finished epoch so that ``run``
again resumes there; finished runs (completed or diverged) are skipped.
"""

import json
import math
import os
import platform
import shutil
import time
import traceback
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import yaml

from keras_cifar import data as data_lib
from keras_cifar.config import ConfigError
from keras_cifar.losses import get_loss
from keras_cifar.models import build_classifier
from keras_cifar.optim import make_optimizer
from keras_cifar.runfiles import (
    FINISHED, HISTORY_COLUMNS, read_history, read_json, replace_atomic, write_atomic, write_history,
)


def finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


# ------------------------------------------------------------------------------------- environment


def environment():
    """Backend, library versions and device, for metrics.json."""
    versions = {"python": platform.python_version()}
    for pkg in ("keras", "numpy", "tensorflow", "jax", "jaxlib", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"backend": keras.backend.backend(), "versions": versions, "device": _device()}


def _device():
    backend = keras.backend.backend()
    cpu = f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        return cpu if dev.platform == "cpu" else f"{dev.platform}: {dev.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else cpu
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"gpu: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)}" if gpus else cpu
    return cpu


# --------------------------------------------------------------------------------------- the model


def _set_precision(config):
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if config["train"]["mixed_precision"] else "float32")


def compile_model(config, steps_per_epoch):
    """Build and compile the classifier a resolved config describes."""
    _set_precision(config)
    model = build_classifier(config["model"], augment=config["data"]["augment"])
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=get_loss(config["loss"]),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config["train"]["jit_compile"],
        steps_per_execution=config["train"]["steps_per_execution"],
    )
    return model


class Monitor(keras.callbacks.Callback):
    """Per epoch: times it, evaluates the test split, records the learning rate, stops on a non-finite
    loss, writes history.csv and a checkpoint, and prints a progress line with the sweep's ETA."""

    def __init__(self, run_dir, label, test_inputs, rows, progress):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.label = label
        self.test_inputs = test_inputs
        self.rows = rows
        self.progress = progress
        self.diverged = False

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.train_end = None

    def on_test_begin(self, logs=None):  # validation starts: the training part of the epoch is over
        self.train_end = self.train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        test = self.model.evaluate(**self.test_inputs, verbose=0, return_dict=True)
        logs["test_loss"], logs["test_accuracy"] = test["loss"], test["accuracy"]
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        now = time.perf_counter()
        row = {k: float(logs.get(k, float("nan"))) for k in HISTORY_COLUMNS[1:8]}
        row.update(epoch=epoch + 1, epoch_seconds=now - self.t0, train_seconds=(self.train_end or now) - self.t0)
        self.rows.append(row)
        write_history(self.run_dir / "history.csv", self.rows)
        if not math.isfinite(row["loss"]):
            self.diverged = True
            self.model.stop_training = True
        else:
            replace_atomic(self.run_dir / f"checkpoint-epoch{epoch + 1}.keras", self.model.save)
            for old in self.run_dir.glob("checkpoint-epoch*.keras"):
                if old.name != f"checkpoint-epoch{epoch + 1}.keras":
                    old.unlink()
        self.progress.epoch_done(self.label, row, self.params["epochs"])


# ----------------------------------------------------------------------------------- one run


def _latest_checkpoint(run_dir):
    ckpts = sorted(Path(run_dir).glob("checkpoint-epoch*.keras"), key=lambda p: int(p.stem.split("epoch")[1]))
    return (ckpts[-1], int(ckpts[-1].stem.split("epoch")[1])) if ckpts else (None, 0)


def run_dir_of(out_root, spec):
    return Path(out_root) / spec.recipe / spec.variant / f"seed{spec.seed}"


def check_backend(spec):
    """Refuse, before training, settings the current backend cannot run."""
    if keras.backend.backend() == "torch" and spec.config["train"]["steps_per_execution"] != 1:
        raise ConfigError(f"{spec.key}: train.steps_per_execution must be 1 on the PyTorch backend "
                          "(a Keras limitation); use --set train.steps_per_execution=1 or another backend")


def check_run_dir(run_dir, spec, data_source):
    """Refuse to mix a run folder's results with a different config (nothing is written)."""
    cfg_file = Path(run_dir) / "config.yaml"
    if cfg_file.exists():
        diffs = diff_keys(read_run_config(run_dir)[1], _expected(spec, data_source))
        if diffs:
            raise ConfigError(
                f"{run_dir} already holds a run with a different config (differs in {', '.join(diffs)}); "
                "use another --out or delete that folder"
            )


def read_run_config(run_dir):
    """A run folder's config.yaml split into (run identity, config sections)."""
    full = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
    ident = {k: full.pop(k, None) for k in ("recipe", "variant", "seed")}
    return ident, full


def _expected(spec, data_source):
    return {"data_source": data_source, **spec.config}


def find_twin(out_root, spec, data_source):
    """A finished run folder under `out_root` (any recipe) with `spec`'s config and data, or None."""
    for cfg_file in sorted(Path(out_root).glob(f"*/*/seed{spec.seed}/config.yaml")):
        twin = cfg_file.parent
        status = (read_json(twin / "metrics.json") or {}).get("status")
        if status in FINISHED and twin != run_dir_of(out_root, spec) and read_run_config(twin)[1] == _expected(spec, data_source):
            return twin
    return None


def reuse_run(twin, run_dir, spec, data_source):
    """Copy a finished twin run into `run_dir` under this spec's name; returns its metrics."""
    shutil.copytree(twin, run_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", ".*"))
    write_atomic(run_dir / "config.yaml", _config_yaml(spec, data_source))
    metrics = {**read_json(twin / "metrics.json"), "recipe": spec.recipe, "variant": spec.variant,
               "reused_from": str(Path(*twin.parts[-3:]))}
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _config_yaml(spec, data_source):
    ident = {"recipe": spec.recipe, "variant": spec.variant, "seed": spec.seed}
    return yaml.safe_dump({**ident, **_expected(spec, data_source)}, sort_keys=False)


def diff_keys(a, b, prefix=""):
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def train_run(spec, splits, out_root, progress, data_source):
    """Train one RunSpec into its run folder, resuming from a checkpoint; returns metrics.json's dict."""
    run_dir = run_dir_of(out_root, spec)
    done = read_json(run_dir / "metrics.json")
    if done and done.get("status") in FINISHED:
        progress.skip(spec, done, "already")
        return done
    twin = find_twin(out_root, spec, data_source)
    if twin:
        done = reuse_run(twin, run_dir, spec, data_source)
        progress.skip(spec, done, f"same config as {twin.relative_to(out_root)}, reused:")
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", _config_yaml(spec, data_source))
    cfg = spec.config
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    feeder = data_lib.Feeder(cfg["data"]["batch_size"], cfg["data"]["pipeline"])
    (x_train, y_train), val, test = splits.train, splits.val, splits.test
    steps = math.ceil(len(x_train) / cfg["data"]["batch_size"])
    ckpt, start = _latest_checkpoint(run_dir)
    rows = read_history(run_dir / "history.csv")[:start]
    if ckpt:
        _set_precision(cfg)
        model = keras.saving.load_model(ckpt)
        progress.note(f"{spec.key}: resuming after epoch {start}")
    else:
        model = compile_model(cfg, steps)
    monitor = Monitor(run_dir, spec.key, feeder.evaluate(*test), rows, progress)
    callbacks = [monitor]
    if data_lib.has_tensorflow():
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tb"), write_graph=False, profile_batch=0))
    progress.run_started(spec, start)
    status, error = "completed", None
    try:
        model.fit(**feeder.train(x_train, y_train, spec.seed), **feeder.validation(*val),
                  epochs=cfg["train"]["epochs"], initial_epoch=start, callbacks=callbacks, verbose=0)
        status = "diverged" if monitor.diverged else "completed"
    except KeyboardInterrupt:
        progress.note(f"{spec.key}: interrupted after epoch {len(rows)}; run the same command again to resume")
        raise
    except Exception as e:  # a failed run is recorded and the sweep goes on
        status, error = "failed", f"{type(e).__name__}: {e}"
        write_atomic(run_dir / "error.log", traceback.format_exc())
    if status == "completed":
        replace_atomic(run_dir / "model.keras", model.save)
    metrics = _metrics(spec, rows, status, error, splits, data_source)
    metrics["parameters"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if status in FINISHED:
        for old in run_dir.glob("checkpoint-epoch*.keras"):
            old.unlink()
    progress.run_done(spec, metrics)
    return metrics


def _metrics(spec, rows, status, error, splits, data_source):
    last = rows[-1] if rows and status == "completed" else {}  # a diverged model's scores mean nothing
    measured = rows[1:] if len(rows) > 1 else rows  # the first epoch includes compilation
    train_time = sum(r["train_seconds"] for r in measured)
    return {
        "status": status,
        "recipe": spec.recipe, "variant": spec.variant, "seed": spec.seed,
        "epochs_completed": len(rows),
        "epochs": spec.config["train"]["epochs"],
        "test_accuracy": finite_or_none(last.get("test_accuracy")),
        "test_loss": finite_or_none(last.get("test_loss")),
        "val_accuracy": finite_or_none(last.get("val_accuracy")),
        "val_loss": finite_or_none(last.get("val_loss")),
        "best_val_accuracy": finite_or_none(max((r["val_accuracy"] for r in rows), default=None)),
        "train_seconds": sum(r["train_seconds"] for r in rows),
        "wall_seconds": sum(r["epoch_seconds"] for r in rows),
        "images_per_second": len(splits.train[1]) * len(measured) / train_time if train_time else None,
        "data": {"source": data_source, "train": len(splits.train[1]), "val": len(splits.val[1]),
                 "test": len(splits.test[1])},
        **environment(),
        **({"error": error} if error else {}),
    }


def plan(runs, out_root, data_source=None):
    """What `run` would do with each RunSpec, with its time estimated from finished runs under
    `out_root` on the same data, width and training subset (median seconds per epoch); a line per run."""
    source = data_lib.canonical_source(data_source)

    def scale(config):
        return source, config["model"]["width"], config["data"]["subset"]

    epoch_seconds = {}
    for m_file in Path(out_root).glob("*/*/seed*/metrics.json"):
        m, config = read_json(m_file) or {}, read_run_config(m_file.parent)[1]
        if m.get("status") == "completed" and not m.get("reused_from") and config.get("data_source") == source:
            epoch_seconds.setdefault(scale(config), []).append(m["wall_seconds"] / m["epochs_completed"])
    lines, total, unknown = [], 0.0, 0
    for spec in runs:
        run_dir = run_dir_of(out_root, spec)
        done = (read_json(run_dir / "metrics.json") or {}).get("status")
        if done in FINISHED:
            lines.append(f"{spec.key}: already {done}")
            continue
        twin = find_twin(out_root, spec, source)
        if twin:
            lines.append(f"{spec.key}: reuses {twin.relative_to(out_root)}")
            continue
        epochs, start = spec.config["train"]["epochs"], _latest_checkpoint(run_dir)[1]
        known = epoch_seconds.get(scale(spec.config))
        estimate = (epochs - start) * float(np.median(known)) if known else 0.0
        total, unknown = total + estimate, unknown + (not known)
        c = spec.config
        lines.append(f"{spec.key}: {f'resume after epoch {start}' if start else 'new'}, width {c['model']['width']}, "
                     f"{epochs} epochs, batch {c['data']['batch_size']}, "
                     + (f"about {_hms(estimate)}" if known else "no timing yet at this scale"))
    lines.append(f"estimated total: {_hms(total)}" + (f" + {unknown} runs not yet timed" if unknown else ""))
    return lines


# ------------------------------------------------------------------------------------ the sweep


class Progress:
    """Prints a line per epoch with the whole sweep's ETA, and the final table."""

    def __init__(self, runs):
        self.total = sum(r.config["train"]["epochs"] for r in runs)
        self.runs = len(runs)
        self.done_epochs = 0
        self.index = 0
        self.rows = []
        self.epoch_times = []

    def note(self, text):
        print(text, flush=True)

    def skip(self, spec, metrics, why):
        self.index += 1
        self.done_epochs += spec.config["train"]["epochs"]
        self.note(f"[{self.index}/{self.runs}] {spec.key}: {why} {metrics['status']}, skipped")
        self.rows.append((spec, metrics))

    def run_started(self, spec, start):
        self.index += 1
        self.done_epochs += start
        self.epoch_times = []
        cfg = spec.config
        self.note(f"[{self.index}/{self.runs}] {spec.key}: width {cfg['model']['width']}, "
                  f"{cfg['train']['epochs']} epochs, batch {cfg['data']['batch_size']}, backend {keras.backend.backend()}")

    def epoch_done(self, label, row, epochs):
        self.done_epochs += 1
        self.epoch_times.append(row["epoch_seconds"])
        typical = float(np.median(self.epoch_times[1:] or self.epoch_times))
        eta = (self.total - self.done_epochs) * typical
        self.note(
            f"  {label} epoch {row['epoch']:>3}/{epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.2%}  "
            f"val {row['val_accuracy']:.2%}  test {row['test_accuracy']:.2%}  lr {row['lr']:.4g}  "
            f"{row['epoch_seconds']:.1f}s  | sweep {self.done_epochs}/{self.total} epochs, ETA {_hms(eta)}"
        )

    def run_done(self, spec, metrics):
        self.done_epochs += spec.config["train"]["epochs"] - metrics["epochs_completed"]  # diverged early
        self.rows.append((spec, metrics))
        if metrics["status"] != "completed":
            self.note(f"  {spec.key}: {metrics['status']}" + (f" ({metrics['error']})" if "error" in metrics else ""))

    def table(self):
        lines = [f"{'variant':<16} {'seed':>4}  {'status':<9} {'test acc':>9} {'val acc':>9} {'seconds':>8}"]
        for spec, m in self.rows:
            lines.append(f"{spec.variant:<16} {spec.seed:>4}  {m['status']:<9} {_pct(m.get('test_accuracy')):>9} "
                         f"{_pct(m.get('val_accuracy')):>9} {m.get('wall_seconds', 0):>8.0f}")
        return "\n".join(lines)


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_sweep(runs, data_source=None, out_root="runs"):
    """Train every RunSpec in order; returns [(spec, metrics)]. Failed/diverged runs don't stop it."""
    cifar = data_lib.load(data_source)
    for spec in runs:
        check_backend(spec)
        check_run_dir(run_dir_of(out_root, spec), spec, cifar.source)
    progress = Progress(runs)
    progress.note(f"data: {cifar.source} ({len(cifar.y_train)} train / {len(cifar.y_test)} test images); "
                  f"{len(runs)} runs, {progress.total} epochs -> {out_root}")
    for spec in runs:
        d = spec.config["data"]
        splits = data_lib.split(cifar, d["subset"], d["eval_subset"])
        train_run(spec, splits, out_root, progress, cifar.source)
    progress.note(progress.table())
    return progress.rows
