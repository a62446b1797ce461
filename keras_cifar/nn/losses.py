"""Losses by recipe name: the LOSSES registry (``loss:`` in a recipe). Keras is imported when a loss is
built, so that recipes are checked without it. Both losses take integer labels and logits."""

from __future__ import annotations

from typing import Any

from keras_cifar.core.registry import Registry

LOSSES = Registry("loss")


@LOSSES.add("cross_entropy", "softmax cross-entropy of the logits (loss_options.label_smoothing applies to it)")
def cross_entropy(label_smoothing: float = 0.0) -> Any:
    import keras

    if label_smoothing:
        from keras_cifar.nn.custom_objects import SmoothedCrossEntropy

        return SmoothedCrossEntropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="cross_entropy")


@LOSSES.add("multi_margin", "PyTorch's MultiMarginLoss, p=1, margin 1: mean over classes i != y of max(0, 1 - x[y] + x[i])")
def multi_margin() -> Any:
    from keras_cifar.nn.custom_objects import MultiMarginLoss

    return MultiMarginLoss()


def get_loss(name: str, label_smoothing: float = 0.0) -> Any:
    """The Keras loss a recipe's ``loss`` names; `label_smoothing` (``loss_options``, which the config
    allows for cross_entropy only) > 0 trains each image towards 1 - s + s/C on its class, s/C elsewhere."""
    return LOSSES[name](label_smoothing) if label_smoothing else LOSSES[name]()


def __getattr__(name: str) -> Any:
    """``keras_cifar.nn.losses.MultiMarginLoss`` (the documented API), importing Keras only then."""
    if name == "MultiMarginLoss":
        from keras_cifar.nn.custom_objects import MultiMarginLoss

        return MultiMarginLoss
    raise AttributeError(f"module 'keras_cifar.nn.losses' has no attribute {name!r}")
