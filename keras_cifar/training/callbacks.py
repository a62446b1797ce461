"""The callbacks that record a run while fit trains it (train.py puts them together). The run folder's
files are written through ``runs.RunFolder``, by the process that holds the run's lock (locks.py) and
only while it holds it. Per epoch, the callbacks run in this order (``fit`` calls
them in list order, and each needs what the one before added to ``logs``):

0. the input's epoch callback (pipelines.EpochInput) and Stop, which acts on a SIGINT or SIGTERM
   (signals.py), or on the loss of the run's lock, at every batch and epoch boundary;
1. Evaluation: scores the test split and adds test_loss, test_accuracy and lr (the rate of the
   epoch's last step) to the epoch's logs (reported and plotted, never used to select anything), and
   with eval.tta the validation and test scores under test-time augmentation; with weight averaging
   (optimizer.ema_momentum) it scores the averaged weights, as SwapAveragedWeights (before it) makes fit's
   validation do;
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

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from keras_cifar.core.console import pct, say
from keras_cifar.core.record import Epoch
from keras_cifar.nn import custom_objects
from keras_cifar.training import locks, signals
from keras_cifar.training.runs import RunFolder

if TYPE_CHECKING:  # sweep.py imports train.py, which imports this module
    from keras_cifar.training.sweep import Sweep

Logs = Any  # what Keras hands a callback: a dict of the epoch's numbers (None by the hooks' signatures)
Write = Callable[[Path], None]  # saves the model to a path


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard logging once per epoch. Its batch hooks then write nothing, so they may
    run off the training thread (async_safe) instead of making every step wait for the device."""

    async_safe = True


def save(model: keras.Model, keep: Callable[[Write], None], writer: bool) -> None:
    """``keep(write)`` in process 0, `write(path)` saving the model with its random state. Saving runs
    collectives in a multi-process JAX run, so the other processes save too, into a scratch file they
    throw away."""

    def write(path: Path) -> None:
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

    def __init__(self, lock: locks.Lock | None = None) -> None:
        super().__init__()
        self.lock = lock

    def check(self, *args: Any, **kwargs: Any) -> None:
        signals.check()
        if self.lock is not None and self.lock.lost.is_set():
            raise locks.LockLost(self.lock.taken())

    on_train_begin = on_epoch_begin = on_train_batch_begin = on_test_batch_begin = check


def last_rate(optimizer: Any) -> float:
    """The learning rate of the optimizer's last step (custom_objects' optimizers; a plug-in's current one)."""
    if hasattr(optimizer, "last_rate"):
        return optimizer.last_rate()
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class Evaluation(keras.callbacks.Callback):
    """Adds test_loss and test_accuracy (the test split) and lr (the rate of the epoch's last step) to
    the logs; with `tta` (the model under eval.tta) also val_tta_loss, val_tta_accuracy, test_tta_loss
    and test_tta_accuracy (`val_inputs`: the validation split). An optimizer with weight averaging
    (use_ema) is evaluated with its averaged weights, as fit's validation is (SwapAveragedWeights). `stop` is
    the Stop callback, which watches the evaluations' batches too."""

    def __init__(
        self, test_inputs: dict[str, Any], val_inputs: dict[str, Any], stop: Stop, tta: keras.Model | None = None
    ) -> None:
        super().__init__()
        self.test_inputs, self.val_inputs, self.stop, self.tta = test_inputs, val_inputs, stop, tta

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        with averaged_weights(self.model):
            test = self.model.evaluate(**self.test_inputs, verbose=0, return_dict=True, callbacks=[self.stop])
            logs["test_loss"], logs["test_accuracy"] = test["loss"], test["accuracy"]
            if self.tta is not None:
                for split, inputs in (("val", self.val_inputs), ("test", self.test_inputs)):
                    scores = self.tta.evaluate(**inputs, verbose=0, return_dict=True, callbacks=[self.stop])
                    logs[f"{split}_tta_loss"], logs[f"{split}_tta_accuracy"] = scores["loss"], scores["accuracy"]
        logs["lr"] = last_rate(self.model.optimizer)


class SwapAveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras's SwapEMAWeights: each evaluation on the optimizer's averaged weights (use_ema), the trained
    ones swapped back after it. It swaps by copies on every backend: Keras's TensorFlow swap goes by
    addition (a + b - b), which changed the trained weights in their last bits at every evaluation."""

    def _tf_swap_variables(self, optimizer: Any) -> None:
        self._backend_swap_variables(optimizer)


@contextlib.contextmanager
def averaged_weights(model: keras.Model) -> Iterator[None]:
    """Within: `model` holds its optimizer's averaged weights, if it keeps them (use_ema), swapped back after."""
    if not getattr(model.optimizer, "use_ema", False):
        yield
        return
    swap = SwapAveragedWeights()
    swap.set_model(model)
    swap.on_test_begin()
    try:
        yield
    finally:
        swap.on_test_end()


def _state(model: keras.Model) -> list[Any]:
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

    def __init__(
        self,
        folder: RunFolder,
        rows: list[Epoch],
        checkpoint_seconds: float,
        writer: bool = True,
        guard: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.folder = folder
        self.rows = rows
        self.checkpoint_seconds = checkpoint_seconds
        self.writer = writer  # False in the processes of a multi-process run other than 0
        self.guard = guard
        self.diverged = False
        self.unsaved: tuple[int, list[Any]] | None = None  # (epoch, copies of _state) of the last epoch not saved yet

    def on_train_begin(self, logs: Logs = None) -> None:
        self.last_checkpoint = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        self.start = time.perf_counter()
        self.train_end: float | None = None

    def on_test_begin(self, logs: Logs = None) -> None:
        """Validation starts: the training part of the epoch is over once its last step has run (JAX and
        PyTorch on a GPU dispatch steps ahead; reading the step counter waits for them)."""
        if self.train_end is None:
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
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

    def _write_history(self) -> None:
        if self.writer:
            self.guard()
            self.folder.write_history(self.rows)

    def _save(self, epoch: int) -> None:
        if self.writer:
            self.guard()
        save(self.model, lambda write: self.folder.save_checkpoint(write, epoch), self.writer)
        self.last_checkpoint = time.perf_counter()
        self.unsaved = None

    def keep_last_epoch(self) -> int | None:
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

    def __init__(self, label: str, rows: list[Epoch], sweep: Sweep) -> None:
        super().__init__()
        self.label, self.rows, self.sweep = label, rows, sweep

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        row = self.rows[-1]
        self.sweep.eta.tick(row.epoch_seconds)
        say(
            f"  {self.label} epoch {row.epoch:>3}/{self.params['epochs']}  loss {row.loss:.4f}  "
            f"acc {pct(row.accuracy)}  val {pct(row.val_accuracy)}  test {pct(row.test_accuracy)}  "
            f"lr {row.lr:.4g}  {row.epoch_seconds:.1f}s  | sweep {self.sweep.eta.text('epochs')}"
        )
