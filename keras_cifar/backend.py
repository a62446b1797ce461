"""The Keras backend a command runs on, checked before Keras is imported; a quiet start of TensorFlow;
the settings a backend cannot run, refused before training; the device it computes on."""

import contextlib
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

from keras_cifar.errors import BackendError

BACKENDS = ("tensorflow", "jax", "torch")  # Keras's names, which are also the modules they need
INSTALL = {"tensorflow": "pip install tensorflow", "jax": 'pip install -e ".[jax]"', "torch": 'pip install -e ".[torch]"'}
TORCH_MIN_WIDTH = 8


def selected():
    """The backend Keras will use: $KERAS_BACKEND, else the one in keras.json, else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend") or "tensorflow"
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def check():
    """The selected backend's name, or a BackendError saying how to fix it."""
    name = selected()
    if name not in BACKENDS:
        raise BackendError(f"KERAS_BACKEND={name} is not a backend keras-cifar runs on; "
                           f"set KERAS_BACKEND to {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}")
    if importlib.util.find_spec(name) is None:
        raise BackendError(f"KERAS_BACKEND={name}, but {name} is not installed: {INSTALL[name]} "
                           "(or choose another backend with KERAS_BACKEND)")
    return name


def start():
    """Check the backend and import Keras, then TensorFlow where installed; returns the keras module.

    Both imports run with stderr silenced: TensorFlow's native libraries print start-up lines
    (oneDNN, cudart_stub, cuInit) before any log level applies. TensorFlow comes after the backend's
    own library, because PyTorch's import crashes in a process that imported TensorFlow first. Under
    JAX or PyTorch, TensorFlow only feeds data (tf.data, TFDS), so it is kept off their GPUs.
    """
    name = check()
    with _stderr_silenced():
        import keras

        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow as tf

            if name != "tensorflow":
                try:
                    tf.config.set_visible_devices([], "GPU")
                except RuntimeError:  # TensorFlow has run in this process already: its devices are set
                    pass
            tf.config.list_physical_devices("GPU")  # CUDA's own start-up messages come here
    return keras


@contextlib.contextmanager
def _stderr_silenced():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_settings(config, where):
    """Refuse, before training, settings the selected backend cannot run."""
    name = selected()
    if name == "torch" and config["train"]["steps_per_execution"] != 1:
        raise BackendError(f"{where}: train.steps_per_execution must be 1 on the PyTorch backend (a Keras "
                           "limitation); use --set train.steps_per_execution=1 or another backend")
    if name == "torch" and config["model"]["width"] < TORCH_MIN_WIDTH and _torch_cpu_lacks_avx512():
        raise BackendError(f"{where}: model.width {config['model']['width']} on PyTorch's CPU without AVX-512 "
                           f"would hang or crash (its oneDNN convolution breaks on narrow 1x1 stride-2 "
                           f"layers); use model.width >= {TORCH_MIN_WIDTH} or another backend")


def _torch_cpu_lacks_avx512():
    import torch

    return not torch.cuda.is_available() and "AVX512" not in torch.backends.cpu.get_cpu_capability()


def device():
    """'cpu (2 cores, x86_64)', 'gpu: NVIDIA H200', ...: where the current backend computes."""
    import keras

    name = keras.backend.backend()
    cpu = f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    if name == "jax":
        import jax

        dev = jax.devices()[0]
        return cpu if dev.platform == "cpu" else f"{dev.platform}: {dev.device_kind}"
    if name == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else cpu
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"gpu: {tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)}" if gpus else cpu
    return cpu
