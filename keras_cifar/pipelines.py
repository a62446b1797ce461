"""Input pipelines: the keyword arguments of ``fit`` and ``evaluate`` for a run's splits.

Training sees the images in one order on every backend and pipeline: ``epoch_order``. An epoch is
ceil(N / batch) **full** batches cut from a stream of permutations of the N training images, each
permutation drawn from (seed, its index) and the next one begun where the last ended. So every batch
has the same shape (JAX compiles one training program, not a second for a last partial batch), an
epoch sees at most batch - 1 images of the next permutation instead of a short last batch, each
epoch is shuffled anew, and a resumed run sees exactly what it would have seen uninterrupted.

Pipelines (``data.pipeline``): ``tf_data`` gathers the batches in tf.data (TensorFlow's default),
``numpy`` in a Keras PyDataset (JAX and PyTorch; handing tf.data's tensors to PyTorch made its
evaluation 2-4x slower on a CPU). The same seed gives both the same batches. (Keras's own shuffle of
numpy input on TensorFlow repeated the first epoch's order in every epoch once a global seed was set.)
Validation and test run at EVAL_BATCH images a step (or the training batch, if larger).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from keras_cifar import backend
from keras_cifar.data import EVAL_BATCH, Splits, has_tensorflow


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

    def __init__(self, batch_size: int, pipeline: str = "auto", eval_batch_size: int | None = None, processes: int = 1) -> None:
        self.batch_size = batch_size // processes
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

    def train(self, x: np.ndarray, y: np.ndarray, seed: int, epochs: int, start: int = 0) -> dict[str, Any]:
        """fit's keywords to train epochs `start` .. `epochs` - 1 on (x, y) in epoch_order."""
        if self.pipeline == "tf_data":
            import tensorflow as tf

            order = np.concatenate([epoch_order(len(y), self.batch_size, seed, e) for e in range(start, epochs)])
            images, labels = tf.constant(x), tf.constant(y)
            ds = tf.data.Dataset.from_tensor_slices(order.reshape(-1, self.batch_size).astype(np.int32))
            ds = ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=tf.data.AUTOTUNE)
            data = ds.prefetch(tf.data.AUTOTUNE)
        else:
            data = _batches(x, y, self.batch_size, seed, epochs, start)
        return {"x": data, "steps_per_epoch": self.steps(len(y)), "shuffle": False}  # shuffled: epoch_order

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


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epochs: int, start: int) -> Any:
    """A Keras PyDataset of every training batch of epochs `start` .. `epochs` - 1 in epoch_order, one
    after the other: fit, told the steps of an epoch, iterates it straight through, as it does the
    tf.data pipeline (PyDataset's epoch hooks run when batches are already prefetched)."""
    import keras

    steps = math.ceil(len(y) / batch_size)

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.epoch: int | None = None
            self.order: np.ndarray | None = None

        def __len__(self) -> int:
            return steps * (epochs - start)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            epoch, step = start + i // steps, i % steps
            if self.order is None or epoch != self.epoch:
                self.epoch, self.order = epoch, epoch_order(len(y), batch_size, seed, epoch)
            index = self.order[step * batch_size : (step + 1) * batch_size]
            return x[index], y[index]

    return EpochBatches()
