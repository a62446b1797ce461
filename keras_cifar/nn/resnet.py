"""The report's ResNet-18 (CIFAR variant) as a functional Keras model, plus the trained classifier."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_cifar.data.augment import Normalize, RandomCropFlip

STAGES = (1, 2, 4, 8)  # width multipliers of the four stages
BLOCKS_PER_STAGE = 2


@keras.saving.register_keras_serializable("keras_cifar")
class TorchUniform(keras.initializers.Initializer):
    """PyTorch's default Conv2d/Linear init (kaiming_uniform with a=sqrt(5)): U(-b, b) with
    b = 1/sqrt(fan_in), variance 1/(3 fan_in). The report trained PyTorch models; with He init a
    ResNet without BN diverges at lr 0.1.

    Drawn with NumPy's global generator, which ``keras.utils.set_random_seed`` seeds: every layer gets
    its own draw, and a seed gives the same weights on every backend. (Keras's own random
    initializers on JAX compile a kernel per weight shape: about 6 s for one ResNet-18 on a CPU.)
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
        return keras.ops.convert_to_tensor(np.random.uniform(-bound, bound, shape), dtype=dtype)


@keras.saving.register_keras_serializable("keras_cifar")
class BatchNorm(keras.layers.BatchNormalization):
    """Keras's BatchNormalization, with the statistics of the global batch when it is built under a
    TensorFlow distribution strategy (``synchronized``; on JAX data parallelism gives them without it).
    The flag is not saved, so the model loads on every backend (Keras refuses it outside TensorFlow)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("synchronized", None)
        super().__init__(synchronized=_under_tensorflow_strategy(), **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {k: v for k, v in super().get_config().items() if k != "synchronized"}


def _under_tensorflow_strategy() -> bool:
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def build_resnet18(
    width: int = 64, batch_norm: bool = True, shortcut: bool = True, activation: str = "relu", num_classes: int = 10
) -> keras.Model:
    """ResNet-18 for 32x32 inputs: 3x3 stem (no max-pool), basic blocks [2,2,2,2], logits out.

    Matches the common PyTorch CIFAR ResNet-18 (11,173,962 parameters at width 64): stride-2 stages
    with 1x1 projection shortcuts, symmetric padding. ``batch_norm=False`` removes every
    BatchNormalization layer (convolutions then get biases); ``shortcut=False`` removes every residual
    addition and projection (a plain 18-layer net). The input is a normalized float image.
    """
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = _conv_bn(inputs, width, 3, 1, batch_norm, "stem")
    x = keras.layers.Activation(activation, name="stem_act")(x)
    for s, mult in enumerate(STAGES, start=1):
        for b in range(1, BLOCKS_PER_STAGE + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            x = _basic_block(x, width * mult, stride, batch_norm, shortcut, activation, f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # Logits in float32 under mixed precision; otherwise in the policy's dtype (float64 in tests).
    policy = keras.mixed_precision.global_policy()
    dtype = "float32" if policy.compute_dtype != policy.variable_dtype else None
    outputs = keras.layers.Dense(num_classes, kernel_initializer=TorchUniform(), name="logits", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name="resnet18")


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, batch_norm: bool, name: str) -> Any:
    # Padding 1 on every side, as PyTorch pads: "same" does that for stride 1 without a separate op;
    # for stride 2 "same" would pad only the bottom and right, so the 3x3 convolution pads first.
    padding = "same" if stride == 1 else "valid"
    if kernel == 3 and stride != 1:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=not batch_norm,
        kernel_initializer=TorchUniform(),
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = BatchNorm(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return x


def _basic_block(x: Any, filters: int, stride: int, batch_norm: bool, shortcut: bool, activation: str, name: str) -> Any:
    y = _conv_bn(x, filters, 3, stride, batch_norm, f"{name}_1")
    y = keras.layers.Activation(activation, name=f"{name}_1_act")(y)
    y = _conv_bn(y, filters, 3, 1, batch_norm, f"{name}_2")
    if shortcut:
        if stride != 1 or x.shape[-1] != filters:
            x = _conv_bn(x, filters, 1, stride, batch_norm, f"{name}_proj")
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return keras.layers.Activation(activation, name=f"{name}_out")(y)


def build_classifier(net: Callable[[Any], Any], augment: bool = True, flip: bool = True) -> keras.Model:
    """The trained model: uint8 images -> [random crop + flip (if `flip`) in training] -> normalize -> `net`
    (a model from normalized images to logits, such as build_resnet18's)."""
    inputs = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = RandomCropFlip(flip=flip, name="augment")(inputs) if augment else inputs
    x = Normalize(name="normalize")(x)
    return keras.Model(inputs, net(x), name="classifier")
