"""Compile, fit and record one run; train a recipe's sweep with resume, divergence handling and ETA.

The run folder's files are written through ``runs.RunFolder``, by the process that holds the run's
lock (locks.py) and only while it holds it. Per epoch, the callbacks run in this order (``fit`` calls
them in list order, and each needs what the one before added to ``logs``):

0. the input's epoch callback (pipelines.EpochInput) and Stop, which acts on a SIGINT or SIGTERM
   (signals.py), or on the loss of the run's lock, at every batch and epoch boundary;
1. TestEvaluation: scores the test split and adds test_loss, test_accuracy and lr (the rate of the
   epoch's last step) to the epoch's logs (reported and plotted, never used to select anything);
2. TensorBoard (where TensorFlow is installed): logs them with the rest (and the run's hparams summary,
   tracking.py, when it starts);
3. Recorder: appends the epoch to history.csv, saves the checkpoint that ``run`` resumes from (every
   train.checkpoint_seconds, and after the last epoch; between checkpoints it keeps a copy of the
   state in memory, written should SIGINT or SIGTERM stop the run), and marks the run diverged when
   the training loss is not finite;
4. ProgressLine: prints the epoch's line with the sweep's ETA.

None of them looks at the end of single batches (Stop looks at their beginning, which reads nothing
from the device), so on JAX and PyTorch Keras hands batch ends to a background thread: the training
loop does not wait for the device after every step.
"""

import contextlib
import dataclasses
import math
import signal
import tempfile
import time
import traceback
from pathlib import Path

import keras
import numpy as np

from keras_cifar.core import backend
from keras_cifar.core.console import Eta, count, pct, run_table, say
from keras_cifar.core.errors import ConfigError, KerasCifarError, RunFolderError
from keras_cifar.core.files import make_dirs
from keras_cifar.core.record import FINISHED, DataSizes, Epoch, RunRecord, finite_or_none
from keras_cifar.data import sources as data_lib
from keras_cifar.data.formats import CLASS_NAMES
from keras_cifar.data.pipelines import Feeder
from keras_cifar.nn import custom_objects
from keras_cifar.nn.losses import get_loss
from keras_cifar.nn.networks import MODELS
from keras_cifar.nn.optim import make_optimizer
from keras_cifar.nn.resnet import build_classifier
from keras_cifar.training import cluster, locks, signals, tracking
from keras_cifar.training.runs import Twins, decide, decide_all, plan, reuse, unreadable

# --------------------------------------------------------------------------------------- the model


def set_precision(config):
    """The global dtype policy a config asks for; set before a model is built or loaded."""
    keras.mixed_precision.set_global_policy(backend.precision(config))


def compile_model(config, steps_per_epoch):
    """Build and compile the classifier a resolved config describes."""
    set_precision(config)
    model = build_classifier(MODELS[config.model.name](config.model, len(CLASS_NAMES)), augment=config.data.augment)
    return compile_with(model, config, make_optimizer(config, steps_per_epoch))


def compile_with(model, config, optimizer):
    """Compile `model` with `optimizer` and the loss, metric and execution settings (jit_compile,
    steps_per_execution) of `config`: also a resumed model, so that it trains as its config says now."""
    model.compile(
        optimizer=optimizer,
        loss=get_loss(config.loss),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.train.jit_compile,
        steps_per_execution=backend.steps_per_execution(config),
    )
    return model


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard logging once per epoch. Its batch hooks then write nothing, so they may
    run off the training thread (async_safe) instead of making every step wait for the device."""

    async_safe = True


# ------------------------------------------------------------------------------------- callbacks


def save(model, keep, writer):
    """``keep(write)`` in process 0, `write(path)` saving the model with its random state. Saving runs
    collectives in a multi-process JAX run, so the other processes save too, into a scratch file they
    throw away."""

    def write(path):
        custom_objects.save(model, path)

    if writer:
        keep(write)
        return
    with tempfile.TemporaryDirectory() as scratch:
        write(Path(scratch) / "model.keras")


class Stop(keras.callbacks.Callback):
    """Stops training where it can stop safely, at the beginning of a batch, an evaluation or an epoch
    (Keras calls these hooks on the main thread, in order): raises Interrupted for a SIGINT or SIGTERM
    (signals.check), and locks.LockLost once `lock` (the run's, in the process that holds it) was taken over."""

    def __init__(self, lock=None):
        super().__init__()
        self.lock = lock

    def check(self, *args, **kwargs):
        signals.check()
        if self.lock is not None and self.lock.lost.is_set():
            raise locks.LockLost(self.lock.taken())

    on_train_begin = on_epoch_begin = on_train_batch_begin = on_test_batch_begin = check


def last_rate(optimizer):
    """The learning rate of the optimizer's last step (custom_objects' optimizers; a plug-in's current one)."""
    if hasattr(optimizer, "last_rate"):
        return optimizer.last_rate()
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class TestEvaluation(keras.callbacks.Callback):
    """Adds test_loss and test_accuracy (the test split) and lr (the rate of the epoch's last step) to
    the logs; `stop` is the Stop callback, which watches the evaluation's batches too."""

    def __init__(self, test_inputs, stop):
        super().__init__()
        self.test_inputs, self.stop = test_inputs, stop

    def on_epoch_end(self, epoch, logs=None):
        test = self.model.evaluate(**self.test_inputs, verbose=0, return_dict=True, callbacks=[self.stop])
        logs["test_loss"], logs["test_accuracy"] = test["loss"], test["accuracy"]
        logs["lr"] = last_rate(self.model.optimizer)


def _state(model):
    """Every variable a checkpoint holds: the model's (weights, BatchNorm statistics, seeds), the optimizer's."""
    sync = getattr(model, "jax_state_sync", None)  # JAX keeps the state apart from the variables during fit
    if sync:
        sync()
    return list(model.variables) + list(model.optimizer.variables)


class Recorder(keras.callbacks.Callback):
    """Times each epoch (its training part apart), appends the epoch to `rows` and history.csv, and
    saves a checkpoint when `checkpoint_seconds` have passed since the last one and after the last
    epoch; an epoch it does not save is copied in memory instead (on the device: JAX and PyTorch on a
    GPU do not wait for it), so that ``keep_last_epoch`` can write it when a signal stops the run. A
    non-finite training loss marks the run diverged and stops it. An epoch's epoch_seconds include
    its evaluation, TensorBoard and checkpoint: all that `run` adds to training. `guard()` is called
    before each write (the run's lock check: it raises locks.LockLost once the lock was taken over)."""

    def __init__(self, folder, rows, checkpoint_seconds, writer=True, guard=lambda: None):
        super().__init__()
        self.folder = folder
        self.rows = rows
        self.checkpoint_seconds = checkpoint_seconds
        self.writer = writer  # False in the processes of a multi-process run other than 0
        self.guard = guard
        self.diverged = False
        self.unsaved = None  # (epoch, copies of _state) of the last epoch that has no checkpoint yet

    def on_train_begin(self, logs=None):
        self.last_checkpoint = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        """Validation starts: the training part of the epoch is over once its last step has run (JAX and
        PyTorch on a GPU dispatch steps ahead; reading the step counter waits for them)."""
        if self.train_end is None:
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        row = Epoch.from_dict(
            {
                **logs,
                "epoch": epoch + 1,
                "epoch_seconds": now - self.start,
                "train_seconds": (self.train_end or now) - self.start,
            }
        )
        self.rows.append(row)
        self._write_history()  # before the checkpoint: a run never resumes from an epoch history.csv lacks
        self.diverged = not math.isfinite(row.loss)
        if self.diverged:
            self.model.stop_training = True
            return
        if epoch + 1 == self.params["epochs"] or now - self.last_checkpoint >= self.checkpoint_seconds:
            self._save(epoch + 1)
            self.rows[-1] = dataclasses.replace(row, epoch_seconds=time.perf_counter() - self.start)
            self._write_history()
        else:
            self.unsaved = (epoch + 1, [keras.ops.copy(v.value) for v in _state(self.model)])

    def _write_history(self):
        if self.writer:
            self.guard()
            self.folder.write_history(self.rows)

    def _save(self, epoch):
        if self.writer:
            self.guard()
        save(self.model, lambda write: self.folder.save_checkpoint(write, epoch), self.writer)
        self.last_checkpoint = time.perf_counter()
        self.unsaved = None

    def keep_last_epoch(self):
        """After an interruption: write the checkpoint of the last finished epoch if it has none yet
        (from its copy: the model has moved on since), unless the run's lock was lost. Returns the epoch
        the newest checkpoint holds (None where this process writes nothing)."""
        if self.unsaved:
            epoch, values = self.unsaved
            for variable, value in zip(_state(self.model), values):
                variable.assign(value)
            try:
                self._save(epoch)
            except locks.LockLost:
                return None
        return self.folder.checkpoint()[1] if self.writer else None


class ProgressLine(keras.callbacks.Callback):
    """Prints a line per epoch: the epoch's numbers and the sweep's progress and ETA."""

    def __init__(self, label, rows, sweep):
        super().__init__()
        self.label, self.rows, self.sweep = label, rows, sweep

    def on_epoch_end(self, epoch, logs=None):
        row = self.rows[-1]
        self.sweep.eta.tick(row.epoch_seconds)
        say(
            f"  {self.label} epoch {row.epoch:>3}/{self.params['epochs']}  loss {row.loss:.4f}  "
            f"acc {pct(row.accuracy)}  val {pct(row.val_accuracy)}  test {pct(row.test_accuracy)}  "
            f"lr {row.lr:.4g}  {row.epoch_seconds:.1f}s  | sweep {self.sweep.eta.text('epochs')}"
        )


# ------------------------------------------------------------------------------------------ one run


ACTIONS = ("done", "reuse", "new", "resume")  # runs.Decision's, numbered for cluster.agree


def train_run(spec, d, splits, sweep):
    """Carry out Decision `d` for one RunSpec: skip it, copy its twin, or train it into its run folder
    (from epoch 0 or a checkpoint); returns its RunRecord. A run to train is decided again once its
    lock is taken, from what its folder holds then: another process may have finished it, or trained
    part of it, since `d` was made. A run whose lock another process holds is skipped (status
    ``elsewhere``; run_sweep watches it at the end). In a multi-process run every process trains its
    share and process 0 claims, decides and writes."""
    if d.action == "done":
        return sweep.skipped(spec, d.folder.read_metrics(), f"already {d.status}")
    process = cluster.process()  # (index, count)
    index = process[0]
    if d.action == "reuse":
        metrics = reuse(d.twin, d.folder, spec, sweep.source) if index == 0 else d.twin.read_metrics()
        return sweep.skipped(spec, metrics, f"same config as {d.twin.path.relative_to(sweep.out_root)}, reused")
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
        return sweep.skipped(spec, d.folder.read_metrics(), why if index == 0 else "finished elsewhere")
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


def _resume(spec, folder, writer):
    """(model, epoch) of the newest checkpoint that loads, compiled with the run's execution settings.
    Newer ones that do not load are named, and deleted; when none loads, a RunFolderError says how to
    start the run again."""
    set_precision(spec.config)
    failed = []
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


def _fit(spec, splits, folder, start, sweep, process):
    """Train (or, when all its epochs were trained but it stopped before its model was written, only
    finish) one run into `folder`, from epoch `start`; returns its RunRecord."""
    cfg, writer = spec.config, process[0] == 0
    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    backend.make_deterministic(cfg.train.deterministic)
    placement = cluster.distribute(cfg)
    feeder = Feeder(cfg.data.batch_size, cfg.data.pipeline, processes=placement.processes)
    local = data_lib.shard(splits, *process)
    y_train = local.train[1]
    replicas = placement.devices // placement.processes  # this process's devices
    uneven = replicas > 1 and feeder.uneven(local, replicas)
    if uneven:  # MirroredStrategy aborts on it, JAX's sharding refuses it
        raise ConfigError(
            f"{spec.key}: on {replicas} devices every batch must split evenly, but a "
            f"{uneven[0]} batch has {uneven[1]} images; choose data.batch_size, --subset and "
            f"data.eval_subset so that batches and each split's last batch are multiples of "
            f"{replicas}"
        )
    guard = folder.lock.check if writer else lambda: None  # before each write: the lock is still ours
    if writer:
        guard()
        folder.remove_temporary()
        if not start:
            folder.remove_checkpoints()
        folder.write_config(spec, sweep.source)
    with placement.scope():
        if start:
            model, start = _resume(spec, folder, writer)
        else:
            model = compile_model(cfg, feeder.steps(len(y_train)))
    rows = folder.read_history()[:start]
    recorder = Recorder(folder, rows, cfg.train.checkpoint_seconds, writer, guard)
    sweep.started(spec, start)
    status, error = "completed", None
    try:
        if start < cfg.train.epochs:
            _train(model, spec, feeder, local, start, folder, recorder, sweep, writer)
            status = "diverged" if recorder.diverged else "completed"
        else:
            say(f"{spec.key}: all {cfg.train.epochs} epochs were trained before it stopped; writing its model and metrics")
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, acted on by Stop
        kept = recorder.keep_last_epoch()
        raise signals.Interrupted(
            getattr(e, "signum", signal.SIGINT),
            f"{spec.key} stopped after epoch {len(rows)} of {cfg.train.epochs}"
            + (f", checkpoint of epoch {kept} kept" if kept else ""),
        ) from None
    except (KerasCifarError, locks.LockLost):  # a file that cannot be written (the next run could not either); a lost run
        raise
    except Exception as e:  # a failed run is recorded and the sweep goes on
        status, error = "failed", f"{type(e).__name__}: {e}"
        if writer:
            guard()
            folder.write_error(traceback.format_exc())
    trained_per_epoch = feeder.steps(len(y_train)) * cfg.data.batch_size  # full batches, every process's
    metrics = _metrics(spec, rows, start, status, error, splits, sweep.source, trained_per_epoch).replace(
        parameters=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        devices=placement.devices,
        processes=placement.processes,
        steps_per_execution=model.steps_per_execution,
        jit_compile=bool(model.jit_compile),
    )
    if writer:
        guard()
    if status == "completed":
        save(model, folder.save_model, writer)
    if writer:
        folder.write_metrics(metrics)
        if status in FINISHED:
            folder.remove_checkpoints()
    sweep.ended(spec, metrics)
    return metrics


def _train(model, spec, feeder, local, start, folder, recorder, sweep, writer):
    """fit epochs `start` .. the last of `spec`'s run on this process's share of the splits, with the
    callbacks that record it (the module's doc says which, in their order)."""
    cfg = spec.config
    stream = feeder.train(*local.train, spec.seed, cfg.train.epochs, start)
    stop = Stop(folder.lock if writer else None)
    callbacks = [stream.callback(), stop, TestEvaluation(feeder.evaluate(*local.test), stop)]
    if data_lib.has_tensorflow() and writer:
        callbacks.append(EpochTensorBoard(str(folder.path / "tb"), write_graph=False, profile_batch=0))
        if not start:
            tracking.write_hparams(folder.path / "tb", spec)
    callbacks += [recorder, ProgressLine(spec.key, recorder.rows, sweep)]
    if start:
        say(f"{spec.key}: resuming after epoch {start}")
    model.fit(
        **stream.fit_arguments(),
        **feeder.validation(*local.val),
        epochs=cfg.train.epochs,
        initial_epoch=start,
        callbacks=callbacks,
        verbose=0,
    )


def _metrics(spec, rows, start, status, error, splits, data_source, trained_per_epoch):
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
        test_accuracy=finite_or_none(last and last.test_accuracy),
        test_loss=finite_or_none(last and last.test_loss),
        val_accuracy=finite_or_none(last and last.val_accuracy),
        val_loss=finite_or_none(last and last.val_loss),
        best_val_accuracy=finite_or_none(max((r.val_accuracy for r in rows), default=None)),
        train_seconds=sum(r.train_seconds for r in rows),
        wall_seconds=sum(r.epoch_seconds for r in rows),
        images_per_second=trained_per_epoch * len(measured) / train_time if train_time else None,
        data=DataSizes(data_source, len(splits.train[1]), len(splits.val[1]), len(splits.test[1])),
        precision=backend.precision(spec.config),
        math=backend.math_precision(spec.config),
        **backend.environment(),
        error=error,
    )


# ---------------------------------------------------------------------------------------- the sweep


class Sweep:
    """The sweep this process trains: where it writes (`out_root`), its data's source, and its lines (a
    header per run, skips and endings, the ETA, the final table's rows)."""

    def __init__(self, runs, out_root, source, restart=False):
        self.out_root, self.source, self.restart = out_root, source, restart
        self.eta = Eta(sum(r.config.train.epochs for r in runs))
        self.runs = len(runs)
        self.index = 0
        self.rows = []

    def skipped(self, spec, metrics, why):
        self.index += 1
        self.eta.skip(spec.config.train.epochs)
        say(f"[{self.index}/{self.runs}] {spec.key}: {why}, skipped")
        self.rows.append((spec, metrics))
        return metrics

    def started(self, spec, start):
        self.index += 1
        self.eta.skip(start)
        self.eta.restart()
        cfg = spec.config
        say(
            f"[{self.index}/{self.runs}] {spec.key}: width {cfg.model.width}, "
            f"{count(cfg.train.epochs, 'epoch')}, batch {cfg.data.batch_size}, "
            f"backend {keras.backend.backend()}"
        )

    def retry(self, spec):
        """Forget `spec`'s row (a run skipped as held elsewhere, about to be tried again)."""
        self.rows = [row for row in self.rows if row[0] is not spec]
        self.index -= 1
        self.eta.skip(-spec.config.train.epochs)

    def ended(self, spec, metrics):
        self.eta.skip(spec.config.train.epochs - (metrics.epochs_completed or 0))  # diverged early, or lost
        self.rows.append((spec, metrics))
        if metrics.status != "completed":
            say(f"  {spec.key}: {metrics.status}" + (f" ({metrics.error})" if metrics.error else ""))


def check_runs(runs, out_root, data_source, restart=False):
    """Refuse, before anything is trained or written, what the backend cannot run, global batches that
    do not split over the processes, run folders that hold another config, and (without `restart`)
    unfinished runs none of whose checkpoints can be read; returns each run's Decision."""
    processes = cluster.process()[1]
    for spec in runs:
        backend.check_settings(spec.config, spec.key)
        if spec.config.data.batch_size % processes:
            raise ConfigError(
                f"{spec.key}: data.batch_size {spec.config.data.batch_size} does not split "
                f"over {processes} processes; use a multiple of {processes}"
            )
    decisions = decide_all(runs, out_root, data_source, restart)
    make_dirs(out_root)  # a folder that cannot be written fails now, not after the first epoch
    return decisions


def _quick_look(runs, images):
    """On a CPU, for a sweep at the report's scale: the option that gives a quick look instead."""
    full = [s for s in runs if s.config.model.width >= 32 and (s.config.data.subset or images) >= 20_000]
    if not full or backend.accelerator().kind != "cpu":
        return ""
    return (
        "\nThis is a CPU: at width 64 on all 50,000 images an epoch took about 30 minutes on the 2-core machine "
        "keras-cifar is developed on. For a quick look, add --quick (width 16, 10,000 images, 10 epochs)."
    )


def run_sweep(runs, cifar, out_root="runs", restart=False):
    """Train every RunSpec on the loaded data in order; returns [(spec, metrics)]. Failed and diverged
    runs are recorded and the sweep goes on. `restart`: unfinished runs start again from epoch 0."""
    decisions = check_runs(runs, out_root, cifar.source, restart)
    sweep = Sweep(runs, out_root, cifar.source, restart)
    say(
        f"data: {cifar.source} ({len(cifar.y_train)} train / {len(cifar.y_test)} test images); "
        f"{count(len(runs), 'run')}, {count(sweep.eta.total, 'epoch')} -> {out_root}"
    )
    say(plan(runs, decisions, out_root, cifar.source)[-1] + _quick_look(runs, len(cifar.y_train)))
    twins = Twins(cifar.source)
    held = []
    for spec, d in zip(runs, decisions):
        signals.check()
        d = twins.decision(spec, d)
        metrics = train_run(spec, d, _splits(cifar, spec), sweep)
        twins.ended(spec, d.folder, metrics)
        if metrics.status == "elsewhere":
            held.append((spec, d))
    if held and cluster.process()[1] == 1:
        _watch(held, cifar, sweep, twins)
    say(run_table(sweep.rows))
    return sweep.rows


def _splits(cifar, spec):
    return data_lib.split(cifar, spec.config.data.subset, spec.config.data.eval_subset)


def _watch(held, cifar, sweep, twins):
    """The runs whose locks other processes held when the sweep came to them, watched until each lock is
    seen to change (its owner is alive: the run is left to it), goes (its run is decided again), or
    stays unchanged for locks.STALE_SECONDS (its owner is dead or hangs: the run is taken over)."""
    say(
        f"{count(len(held), 'run')} held by other processes: watching their locks "
        f"(one that does not change for {locks.STALE_SECONDS:.0f} s is taken over)"
    )
    while held:
        time.sleep(min(1.0, locks.HEARTBEAT_SECONDS))
        signals.check()
        for spec, d in list(held):
            if d.folder.lock.beating():
                held.remove((spec, d))
            elif d.folder.lock.takeable():
                held.remove((spec, d))
                sweep.retry(spec)
                twins.ended(spec, d.folder, train_run(spec, twins.decision(spec, d), _splits(cifar, spec), sweep))
