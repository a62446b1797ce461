"""Networks by recipe name: the MODELS registry (``model.name`` in a recipe). A network is one decorated
function of (the ``model`` section, number of classes) -> a Keras model from normalized 32x32 images to
logits; it imports Keras when called, so that recipes are checked without it."""

from __future__ import annotations

from typing import Any

from keras_cifar.core.registry import Registry

MODELS = Registry("network")


@MODELS.add("resnet18", "the report's ResNet-18 for 32x32 images, with model.width, .batch_norm, .shortcut and .activation")
def resnet18(model: Any, num_classes: int) -> Any:  # model: a config.ModelConfig
    from keras_cifar.nn.resnet import build_resnet18

    return build_resnet18(model.width, model.batch_norm, model.shortcut, model.activation, num_classes)
