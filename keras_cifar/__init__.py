"""keras-cifar: study ResNet-18 on CIFAR-10 with Keras 3 (TensorFlow, JAX or PyTorch backend)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output

from keras_cifar.models import build_resnet18  # noqa: E402

__all__ = ["build_resnet18"]
__version__ = "0.1.0"
