"""Training order: every epoch a new permutation in full batches, the same for both input pipelines and
for a resumed run, and an epoch is its batches with any steps_per_execution, as fit iterates it."""

import keras
import numpy as np
import pytest

from keras_cifar.data.pipelines import Feeder, epoch_order
from tests.helpers import as_numpy

N, BATCH = 20, 8  # 3 training steps an epoch
SPES = [1] if keras.backend.backend() == "torch" else [1, 3, 8]  # PyTorch's fit runs one step an execution


def test_epochs_are_full_batches_of_a_stream_of_permutations():
    orders = [epoch_order(20, 8, seed=3, epoch=e) for e in range(5)]
    assert all(len(o) == 24 for o in orders)  # 3 full batches of 8 from 20 images
    stream = np.concatenate(orders)
    for k in range(6):  # the stream is permutation after permutation, each of all 20 images
        assert sorted(stream[20 * k : 20 * (k + 1)]) == list(range(20))
    assert not np.array_equal(orders[0][:20], orders[1][4:24])  # a new permutation, not the same again
    np.testing.assert_array_equal(epoch_order(20, 8, seed=3, epoch=3), orders[3])  # any epoch on its own
    assert not np.array_equal(epoch_order(20, 8, seed=4, epoch=0), orders[0])


class _Seen(keras.metrics.Metric):
    """What an epoch trained on, from its labels (image i is labelled i): how many images, the sum of their
    labels and of the labels' squares, compiled into the training step on every backend."""

    def __init__(self, name="seen"):
        super().__init__(name=name)
        self.sums = self.add_variable((3,), "zeros", name="sums")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "float32")
        self.sums.assign_add(keras.ops.stack([keras.ops.sum(keras.ops.ones_like(y)), keras.ops.sum(y), keras.ops.sum(y * y)]))

    def result(self):
        return self.sums.value


def _epochs_seen_by_fit(pipeline, spe, epochs, start=0):
    """Per epoch that fit trains: (images, sum of labels, sum of squares) and the optimizer's step count at
    its end, for 20 images labelled 0..19 in batches of 8, seed 5."""
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(keras.ops.cast(inputs, "float32"))))
    model.compile("sgd", "mse", metrics=[_Seen()], steps_per_execution=spe)
    x, y = np.zeros((N, 32, 32, 3), np.uint8), np.arange(N, dtype=np.int32)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append(
            (*np.round(logs["seen"]).astype(int).tolist(), int(as_numpy(model.optimizer.iterations)))
        )
    )
    stream = Feeder(BATCH, pipeline).train(x, y, 5, epochs, start)
    model.fit(**stream.fit_arguments(), epochs=epochs, initial_epoch=start, callbacks=[stream.callback(), record], verbose=0)
    return seen


@pytest.mark.backend
@pytest.mark.parametrize("spe", SPES)
@pytest.mark.parametrize("pipeline", ["tf_data", "numpy"])
def test_an_epoch_is_its_own_batches_with_any_steps_per_execution(pipeline, spe):
    """Each epoch trains ceil(N / batch) = 3 steps of its own order, and the step count is 3e at the end of
    epoch e, with steps_per_execution 1, 3 and 8 (PyTorch runs 1 only). Told a stream's steps per epoch,
    Keras ran ceil(S / k) executions of k steps: with 8, every epoch took 8 batches, some of the next
    epoch's among them (this fails on the previous main). A resumed fit sees the same epochs."""
    expected = []
    for e in range(4):
        order = epoch_order(N, BATCH, 5, e)
        expected.append((len(order), int(order.sum()), int((order.astype(int) ** 2).sum()), 3 * (e + 1)))
    assert _epochs_seen_by_fit(pipeline, spe, 4) == expected
    assert _epochs_seen_by_fit(pipeline, spe, 4, start=2)[0][:3] == expected[2][:3]  # resumed at epoch 2
    assert len({e[1] for e in expected}) > 1  # the epochs differ: a new order each time
