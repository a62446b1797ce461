"""Losses by recipe name, including PyTorch's MultiMarginLoss, which Keras lacks."""

import keras
from keras import ops


@keras.saving.register_keras_serializable("keras_cifar")
class MultiMarginLoss(keras.losses.Loss):
    """PyTorch ``nn.MultiMarginLoss`` (p=1): mean over the C classes of max(0, margin - x[y] + x[i]), i != y.

    ``y_true`` holds integer labels, ``y_pred`` raw logits.
    """

    def __init__(self, margin=1.0, name="multi_margin", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        classes = y_pred.shape[-1]
        onehot = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes, dtype="float32")
        correct = ops.sum(y_pred * onehot, axis=-1, keepdims=True)
        margins = ops.maximum(0.0, self.margin - correct + y_pred) * (1.0 - onehot)
        return ops.sum(margins, axis=-1) / classes

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def get_loss(name):
    """The Keras loss for a recipe's ``loss`` name (both take integer labels and logits)."""
    if name == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="cross_entropy")
    if name == "multi_margin":
        return MultiMarginLoss()
    raise ValueError(f"unknown loss {name!r}; use cross_entropy or multi_margin")
