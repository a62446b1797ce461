"""Input pipelines: the keyword arguments of ``fit`` and ``evaluate`` for a run's splits.

Training sees the images in one order on every backend and pipeline: ``epoch_order``. An epoch is
ceil(N / batch) **full** batches cut from a stream of permutations of the N training images, each
permutation drawn from (seed, its index) and the next one begun where the last ended. So every batch
has the same shape (JAX compiles one training program, not a second for a last partial batch), an
epoch sees at most batch - 1 images of the next permutation instead of a short last batch, each
epoch is shuffled anew, and a resumed run sees exactly what it would have seen uninterrupted.

One pass over the training input is one epoch: fit is not told ``steps_per_epoch``, so Keras ends
each epoch where its input does, and with ``steps_per_execution`` k > 1 the last execution of an epoch
runs the steps that are left (Keras runs ceil(S / k) executions of k steps from a stream told S steps
an epoch, which took the first steps of the next epoch's order). A callback (``EpochInput.callback``)
tells the input which epoch begins.

Pipelines (``data.pipeline``): ``tf_data`` gathers the batches in tf.data (TensorFlow's default),
``numpy`` in a Keras PyDataset (JAX and PyTorch; handing tf.data's tensors to PyTorch made its
evaluation 2-4x slower on a CPU). The same seed gives both the same batches. (Keras's own shuffle of
numpy input on TensorFlow repeated the first epoch's order in every epoch once a global seed was set.)
Validation and test run at EVAL_BATCH images a step (or the training batch, if larger).

With ``data.flip: alternating`` (airbench's alternating flip) the pipeline mirrors the training images
itself, the model's augmentation only crops: image i is mirrored in epoch e when ``alternating_flips``
says so, at random (from the seed) in epoch 0 and then every other epoch, so each image is seen both
ways in every two epochs instead of by chance. It depends on (seed, image, epoch) alone: a resumed run
mirrors what the uninterrupted one did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_cifar.core import backend
from keras_cifar.data.sources import EVAL_BATCH, Splits, has_tensorflow

FLIP_STREAM = 0x666C6970  # the random stream of alternating_flips, apart from epoch_order's (seed, k) streams


def alternating_flips(n: int, seed: int, epoch: int) -> np.ndarray:
    """Whether each of the n training images is mirrored in epoch `epoch` (0 first) under alternating flip:
    a random half in epoch 0 (drawn from the seed), then the other half, and so on."""
    first = np.random.default_rng([seed, FLIP_STREAM]).random(n) < 0.5
    return first ^ bool(epoch % 2)


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """The indices of the images epoch `epoch` (0 first) trains on, in order (see the module's doc)."""
    length = math.ceil(n / batch_size) * batch_size
    start = epoch * length
    first, last = start // n, (start + length - 1) // n
    stream = np.concatenate([np.random.default_rng([seed, k]).permutation(n) for k in range(first, last + 1)])
    return stream[start - first * n : start - first * n + length]


class Feeder:
    """Keyword arguments for ``fit``/``evaluate`` in `pipeline` (auto: tf_data on the TensorFlow backend,
    numpy elsewhere). In a run of several `processes` each feeds its share of every (global) batch."""

    def __init__(
        self,
        batch_size: int,
        pipeline: str = "auto",
        eval_batch_size: int | None = None,
        processes: int = 1,
        flip: str = "random",
    ) -> None:
        self.batch_size = batch_size // processes
        self.alternating = flip == "alternating"  # data.flip: the pipeline mirrors the training images
        self.eval_batch_size = eval_batch_size or max(self.batch_size, EVAL_BATCH // processes)
        if pipeline == "auto":
            pipeline = "tf_data" if backend.selected() == "tensorflow" and has_tensorflow() else "numpy"
        self.pipeline = pipeline

    def steps(self, n: int) -> int:
        """Training steps in an epoch of `n` images."""
        return math.ceil(n / self.batch_size)

    def uneven(self, splits: Splits, replicas: int) -> tuple[str, int] | None:
        """The first (split name, batch size) whose batches do not split evenly over `replicas`
        (MirroredStrategy crashes on them, JAX refuses them), or None. Training batches are always full."""
        for name, n, batch in (
            ("training", self.batch_size, self.batch_size),
            ("validation", len(splits.val[1]), self.eval_batch_size),
            ("test", len(splits.test[1]), self.eval_batch_size),
        ):
            for size in {batch, n % batch} - {0}:
                if size % replicas:
                    return name, size
        return None

    def train(self, x: np.ndarray, y: np.ndarray, seed: int, epochs: int, start: int = 0) -> EpochInput:
        """The input of epochs `start` .. `epochs` - 1 on (x, y), each one pass of its epoch_order, its
        images mirrored where alternating_flips says (with data.flip: alternating)."""
        orders = np.stack([epoch_order(len(y), self.batch_size, seed, e) for e in range(start, epochs)])
        orders = orders.reshape(len(orders), -1, self.batch_size).astype(np.int32)  # [epoch, step, image]
        flips = None
        if self.alternating:  # [epoch, step, image]: whether that image is mirrored
            flips = np.stack([alternating_flips(len(y), seed, e)[o] for e, o in enumerate(orders, start)])
        if self.pipeline == "tf_data":
            return _tf_data(x, y, orders, start, flips)
        return _py_dataset(x, y, orders, start, flips)

    def validation(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        if self.pipeline == "tf_data":
            return {"validation_data": self._dataset(x, y)}
        return {"validation_data": (x, y), "validation_batch_size": self.eval_batch_size}

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        if self.pipeline == "tf_data":
            return {"x": self._dataset(x, y)}
        return {"x": x, "y": y, "batch_size": self.eval_batch_size}

    def _dataset(self, x: np.ndarray, y: np.ndarray) -> Any:
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(self.eval_batch_size).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class EpochInput:
    """fit's training input (``x``: one pass is one epoch) and ``epoch_begins(epoch)``, which a callback
    calls at each epoch's beginning, before fit starts the pass."""

    x: Any
    epoch_begins: Callable[[int], None]

    def fit_arguments(self) -> dict[str, Any]:
        return {"x": self.x, "shuffle": False}  # shuffled: epoch_order

    def callback(self) -> Any:
        """The Keras callback that fit must get: it calls epoch_begins."""
        import keras

        return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: self.epoch_begins(epoch))


def _tf_data(x: np.ndarray, y: np.ndarray, orders: np.ndarray, start: int, flips: np.ndarray | None) -> EpochInput:
    """tf.data: each pass gathers the batches of the epoch held in a variable, read when the pass runs."""
    import tensorflow as tf

    images, labels, batches = tf.constant(x), tf.constant(y), tf.constant(orders)
    mirrored = None if flips is None else tf.constant(flips)
    with tf.device("/cpu:0"):
        epoch = tf.Variable(0, dtype=tf.int32, trainable=False)  # the pass's row of `orders`

    def batch(step: Any) -> Any:
        index = batches[epoch, step]
        chosen = tf.gather(images, index)
        if mirrored is not None:
            chosen = tf.where(mirrored[epoch, step][:, None, None, None], tf.reverse(chosen, [2]), chosen)
        return chosen, tf.gather(labels, index)

    steps = tf.data.Dataset.range(orders.shape[1], output_type=tf.int32)
    data = steps.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return EpochInput(data, lambda e: epoch.assign(e - start))


def _py_dataset(x: np.ndarray, y: np.ndarray, orders: np.ndarray, start: int, flips: np.ndarray | None) -> EpochInput:
    """A Keras PyDataset of one epoch's batches; which epoch is set before each pass."""
    import keras

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.row = 0  # the pass's row of `orders`

        def __len__(self) -> int:
            return orders.shape[1]

        def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
            index = orders[self.row, step]
            if flips is None:
                return x[index], y[index]
            mirror = flips[self.row, step][:, None, None, None]
            return np.where(mirror, x[index][:, :, ::-1], x[index]), y[index]

    batches = EpochBatches()
    return EpochInput(batches, lambda e: setattr(batches, "row", e - start))
