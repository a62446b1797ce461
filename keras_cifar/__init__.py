"""keras-cifar: study ResNet-18 on CIFAR-10 with Keras 3 (TensorFlow, JAX or PyTorch backend)."""

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

__all__ = ["build_resnet18", "load_model"]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    """Import Keras only when the model builder or loader is used, so that `--help`, config and reports start fast."""
    if name == "build_resnet18":
        from keras_cifar.nn.resnet import build_resnet18

        return build_resnet18
    if name == "load_model":  # a .keras file of ours, with the custom objects registered, safe_mode on
        from keras_cifar.tools.serving import load_keras

        return load_keras
    raise AttributeError(f"module 'keras_cifar' has no attribute {name!r}")
