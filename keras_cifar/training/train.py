"""Compile, fit and record one run: the decision made again under the run's lock, a resume from the
newest checkpoint that loads, fit with the callbacks that record it (callbacks.py), and the run's
model and metrics.json at the end."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import keras
import numpy as np

from keras_cifar.config import Config, RunSpec
from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.errors import ConfigError, KerasCifarError, RunFolderError
from keras_cifar.core.record import FINISHED, DataSizes, Epoch, RunRecord, finite_or_none
from keras_cifar.data import sources as data_lib
from keras_cifar.data.augment import with_tta
from keras_cifar.data.formats import CLASS_NAMES
from keras_cifar.data.pipelines import Feeder
from keras_cifar.data.sources import Splits
from keras_cifar.nn import custom_objects
from keras_cifar.nn.losses import get_loss
from keras_cifar.nn.networks import MODELS
from keras_cifar.nn.optim import make_optimizer
from keras_cifar.nn.resnet import build_classifier
from keras_cifar.training import cluster, locks, signals, tracking
from keras_cifar.training.callbacks import EpochTensorBoard, Evaluation, ProgressLine, Recorder, Stop, SwapAveragedWeights, save
from keras_cifar.training.cluster import Placement
from keras_cifar.training.decisions import Decision, decide, reuse
from keras_cifar.training.runs import RunFolder, unreadable

if TYPE_CHECKING:  # sweep.py imports this module
    from keras_cifar.training.sweep import Sweep

# --------------------------------------------------------------------------------------- the model


def set_precision(config: Config) -> None:
    """The global dtype policy a config asks for; set before a model is built or loaded."""
    keras.mixed_precision.set_global_policy(backend.precision(config))


def compile_model(config: Config, steps_per_epoch: int) -> keras.Model:
    """Build and compile the classifier a resolved config describes."""
    set_precision(config)
    net = MODELS[config.model.name](config.model, len(CLASS_NAMES))
    model = build_classifier(net, augment=config.data.augment, flip=config.data.flip == "random")
    return compile_with(model, config, make_optimizer(config, steps_per_epoch))


def compile_tta(model: keras.Model, config: Config) -> keras.Model | None:
    """`model` under the config's test-time augmentation (eval.tta), compiled for evaluation as `model`
    is; None for eval.tta: none."""
    if config.eval.tta == "none":
        return None
    tta = with_tta(model, config.eval.tta)
    tta.compile(
        loss=get_loss(config.loss, config.loss_options.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=model.jit_compile,
        steps_per_execution=model.steps_per_execution,
    )
    return tta


def compile_with(model: keras.Model, config: Config, optimizer: Any) -> keras.Model:
    """Compile `model` with `optimizer` and the loss, metric and execution settings (jit_compile,
    steps_per_execution) of `config`: also a resumed model, so that it trains as its config says now."""
    model.compile(
        optimizer=optimizer,
        loss=get_loss(config.loss, config.loss_options.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.train.jit_compile,
        steps_per_execution=backend.steps_per_execution(config),
    )
    return model


# ------------------------------------------------------------------------------------------ one run


ACTIONS = ("done", "reuse", "new", "resume")  # decisions.Decision's, numbered for cluster.agree


def train_run(spec: RunSpec, d: Decision, splits: Splits, sweep: Sweep) -> RunRecord:
    """Carry out Decision `d` for one RunSpec: skip it, copy its twin, or train it into its run folder
    (from epoch 0 or a checkpoint); returns its RunRecord. A run to train is decided again once its
    lock is taken, from what its folder holds then: another process may have finished it, or trained
    part of it, since `d` was made. A run whose lock another process holds is skipped (status
    ``elsewhere``; run_sweep watches it at the end). In a multi-process run every process trains its
    share and process 0 claims, decides and writes."""
    if d.action == "done":
        return sweep.skipped(spec, cast(RunRecord, d.folder.read_metrics()), f"already {d.status}")  # it finished
    process = cluster.process()  # (index, count)
    index = process[0]
    if d.action == "reuse":
        twin = cast(RunFolder, d.twin)  # a reuse names its finished twin
        metrics = reuse(twin, d.folder, spec, sweep.source) if index == 0 else cast(RunRecord, twin.read_metrics())
        return sweep.skipped(spec, metrics, f"same config as {twin.path.relative_to(sweep.out_root)}, reused")
    owner = d.folder.lock.claim() if index == 0 else None
    if index == 0 and owner is None:
        d = dataclasses.replace(decide(sweep.out_root, spec, sweep.source, sweep.restart), folder=d.folder)  # its lock
    busy, action, start = cluster.agree(owner is not None, ACTIONS.index(d.action), d.start)
    if busy:
        return sweep.skipped(
            spec, RunRecord("elsewhere", spec.recipe, spec.variant, spec.seed), f"being trained by {owner or 'another process'}"
        )
    if ACTIONS[action] in ("done", "reuse"):  # finished since the first decision, here or as a twin
        if index == 0:
            why = f"same config as {d.twin.path.relative_to(sweep.out_root)}, reused" if d.twin else f"already {d.status}"
            if d.twin:
                reuse(d.twin, d.folder, spec, sweep.source)
            d.folder.lock.release()
        cluster.agree(0)  # the other processes read what process 0 wrote
        return sweep.skipped(spec, cast(RunRecord, d.folder.read_metrics()), why if index == 0 else "finished elsewhere")
    if index and start != d.start:
        raise RunFolderError(
            f"{d.folder.path}: process {index} finds another checkpoint than process 0; "
            "give every process one --out folder they all share"
        )
    with d.folder.lock.heartbeat() if index == 0 else contextlib.nullcontext():
        try:
            return _fit(spec, splits, d.folder, start, sweep, process)
        except locks.LockLost as e:  # this process was paused past the stale time, and another took the run over
            say(f"  {spec.key}: its lock was taken over ({e}); the run is left to that process")
            metrics = RunRecord("elsewhere", spec.recipe, spec.variant, spec.seed)
            sweep.ended(spec, metrics)
            return metrics


def _resume(spec: RunSpec, folder: RunFolder, writer: bool) -> tuple[keras.Model, int]:
    """(model, epoch) of the newest checkpoint that loads, compiled with the run's execution settings.
    Newer ones that do not load are named, and deleted; when none loads, a RunFolderError says how to
    start the run again."""
    set_precision(spec.config)
    failed: list[str] = []
    for epoch, file in folder.checkpoints():
        why = unreadable(file)
        if why is None:
            try:
                model = custom_objects.load(file)
                if not int(np.asarray(model.optimizer.iterations)):  # Keras only warns
                    raise ValueError("its optimizer state did not load: written by another version of keras-cifar?")
                if getattr(model.optimizer, "keras_form", False):
                    raise ValueError("written by keras-cifar 0.2, whose SGD kept Keras's form of momentum, not PyTorch's")
            except Exception as e:  # noqa: BLE001 - whatever Keras raises on a damaged or foreign file
                why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}"
            else:
                if failed:
                    say(f"{spec.key}: {'; '.join(failed)}; resuming from {file.name}")
                    if writer:
                        folder.remove_checkpoints(newer_than=epoch)
                return compile_with(model, spec.config, model.optimizer), epoch
        failed.append(f"{file.name} cannot be read ({why})")
    raise RunFolderError(
        f"{folder.path}: {'; '.join(failed)}; run the same command with --restart to train {spec.key} again from epoch 0"
    )


def _fit(spec: RunSpec, splits: Splits, folder: RunFolder, start: int, sweep: Sweep, process: tuple[int, int]) -> RunRecord:
    """Train (or, when all its epochs were trained but it stopped before its model was written, only
    finish) one run into `folder`, from epoch `start`; returns its RunRecord."""
    cfg, writer = spec.config, process[0] == 0
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    backend.make_deterministic(cfg.train.deterministic)
    placement = cluster.distribute(cfg)
    feeder = Feeder(cfg.data.batch_size, cfg.data.pipeline, processes=placement.processes, flip=cfg.data.flip)
    local = data_lib.shard(splits, *process)
    _check_even(spec, feeder, local, placement)
    guard = folder.lock.check if writer else lambda: None  # before each write: the lock is still ours
    if writer:
        guard()
        folder.remove_temporary()
        if not start:
            folder.remove_checkpoints()
        folder.write_config(spec, sweep.source)
    with placement.scope():
        model, start = _resume(spec, folder, writer) if start else (compile_model(cfg, feeder.steps(len(local.train[1]))), 0)
        tta = compile_tta(model, cfg)
    recorder = Recorder(folder, folder.read_history()[:start], cfg.train.checkpoint_seconds, writer, guard)
    sweep.started(spec, start)
    run = Training(model, tta, spec, feeder, local, start, folder, recorder, sweep, writer)
    status, error = _train_or_finish(run)
    trained_per_epoch = feeder.steps(len(local.train[1])) * cfg.data.batch_size  # full batches, every process's
    metrics = _metrics(spec, recorder.rows, start, status, error, splits, sweep.source, trained_per_epoch).replace(
        parameters=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        devices=placement.devices,
        processes=placement.processes,
        steps_per_execution=model.steps_per_execution,
        jit_compile=bool(model.jit_compile),
    )
    if writer:
        guard()
    if status == "completed":
        model.optimizer.finalize_variable_values(model.trainable_weights)  # EMA: the averaged weights, as fit leaves them
        save(model, folder.save_model, writer)
    if writer:
        folder.write_metrics(metrics)
        if status in FINISHED:
            folder.remove_checkpoints()
    sweep.ended(spec, metrics)
    return metrics


def _check_even(spec: RunSpec, feeder: Feeder, local: Splits, placement: Placement) -> None:
    """Refuse batches that do not split evenly over this process's devices: MirroredStrategy aborts on
    them, JAX's sharding refuses them."""
    replicas = placement.devices // placement.processes
    uneven = replicas > 1 and feeder.uneven(local, replicas)
    if uneven:
        raise ConfigError(
            f"{spec.key}: on {replicas} devices every batch must split evenly, but a "
            f"{uneven[0]} batch has {uneven[1]} images; choose data.batch_size, --subset and "
            f"data.eval_subset so that batches and each split's last batch are multiples of "
            f"{replicas}"
        )


@dataclass(frozen=True)
class Training:
    """One run being trained by this process: its compiled model (and that model under test-time
    augmentation, or None), its spec, input, this process's share of the splits, the epoch it starts
    from, its folder and recorder, the sweep it belongs to, and whether this process writes."""

    model: keras.Model
    tta: keras.Model | None
    spec: RunSpec
    feeder: Feeder
    local: Splits
    start: int
    folder: RunFolder
    recorder: Recorder
    sweep: Sweep
    writer: bool


def _train_or_finish(run: Training) -> tuple[str, str | None]:
    """(status, error) of training epochs `run.start` on: completed, diverged, or failed (recorded, the
    sweep goes on); a run whose epochs were all trained is only finished. A SIGINT or SIGTERM keeps the
    last finished epoch and stops the command; a file that cannot be written, or the run's lost lock, too."""
    spec, recorder, epochs = run.spec, run.recorder, run.spec.config.train.epochs
    try:
        if run.start == epochs:
            say(f"{spec.key}: all {epochs} epochs were trained before it stopped; writing its model and metrics")
            return "completed", None
        _train(run)
        return ("diverged" if recorder.diverged else "completed"), None
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, acted on by Stop
        kept = recorder.keep_last_epoch()
        raise signals.Interrupted(
            getattr(e, "signum", signal.SIGINT),
            f"{spec.key} stopped after epoch {len(recorder.rows)} of {epochs}"
            + (f", checkpoint of epoch {kept} kept" if kept else ""),
        ) from None
    except (KerasCifarError, locks.LockLost):  # a file that cannot be written (the next run could not either); a lost run
        raise
    except Exception as e:  # a failed run is recorded and the sweep goes on
        if run.writer:
            recorder.guard()
            run.folder.write_error(traceback.format_exc())
        return "failed", f"{type(e).__name__}: {e}"


def _train(run: Training) -> None:
    """fit epochs `run.start` .. the last of its run on this process's share of the splits, with the
    callbacks that record it (callbacks.py's doc says which, in their order)."""
    cfg, start, folder = run.spec.config, run.start, run.folder
    stream = run.feeder.train(*run.local.train, run.spec.seed, cfg.train.epochs, start)
    stop = Stop(folder.lock if run.writer else None)
    ema = [SwapAveragedWeights()] if cfg.optimizer.ema_momentum is not None else []  # validation on the average
    evaluation = Evaluation(run.feeder.evaluate(*run.local.test), run.feeder.evaluate(*run.local.val), stop, run.tta)
    callbacks = [stream.callback(), stop, *ema, evaluation]
    if data_lib.has_tensorflow() and run.writer:
        callbacks.append(EpochTensorBoard(str(folder.path / "tb"), write_graph=False, profile_batch=0))
        if not start:
            tracking.write_hparams(folder.path / "tb", run.spec)
    callbacks += [run.recorder, ProgressLine(run.spec.key, run.recorder.rows, run.sweep)]
    if start:
        say(f"{run.spec.key}: resuming after epoch {start}")
    run.model.fit(
        **stream.fit_arguments(),
        **run.feeder.validation(*run.local.val),
        epochs=cfg.train.epochs,
        initial_epoch=start,
        callbacks=callbacks,
        verbose=0,
    )


def _metrics(
    spec: RunSpec,
    rows: list[Epoch],
    start: int,
    status: str,
    error: str | None,
    splits: Splits,
    data_source: str,
    trained_per_epoch: int,
) -> RunRecord:
    last = rows[-1] if rows and status == "completed" else None  # a diverged model's scores mean nothing
    # Throughput leaves out the first epoch of each start (0, and `start` for a resumed run): it compiles.
    measured = [r for i, r in enumerate(rows) if i not in (0, start)]
    train_time = sum(r.train_seconds for r in measured)
    return RunRecord(
        status,
        spec.recipe,
        spec.variant,
        spec.seed,
        epochs_completed=len(rows),
        epochs=spec.config.train.epochs,
        test_accuracy=finite_or_none(last.test_accuracy if last else None),
        test_loss=finite_or_none(last.test_loss if last else None),
        val_accuracy=finite_or_none(last.val_accuracy if last else None),
        val_loss=finite_or_none(last.val_loss if last else None),
        best_val_accuracy=finite_or_none(max((r.val_accuracy for r in rows), default=None)),
        train_seconds=sum(r.train_seconds for r in rows),
        wall_seconds=sum(r.epoch_seconds for r in rows),
        images_per_second=trained_per_epoch * len(measured) / train_time if train_time else None,
        data=DataSizes(data_source, len(splits.train[1]), len(splits.val[1]), len(splits.test[1])),
        precision=backend.precision(spec.config),
        math=backend.math_precision(spec.config),
        **backend.environment(),
        error=error,
        **_tta_scores(spec.config.eval.tta, last),
    )


def _tta_scores(tta: str, last: Epoch | None) -> dict[str, Any]:
    """RunRecord's fields of test-time augmentation `tta` (eval.tta): none without one."""
    if tta == "none":
        return {}
    names = ("test_tta_accuracy", "test_tta_loss", "val_tta_accuracy", "val_tta_loss")
    return {"tta": tta, **{name: finite_or_none(getattr(last, name) if last else None) for name in names}}
