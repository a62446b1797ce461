"""The Keras backend a command runs on, checked before Keras is imported; a quiet start of TensorFlow;
the settings a backend cannot run, refused before training; the device it computes on."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from keras_cifar.core.errors import BackendError

if TYPE_CHECKING:
    from collections.abc import Iterator

BACKENDS = ("tensorflow", "jax", "torch")  # Keras's names, which are also the modules they need
INSTALL = {"tensorflow": "pip install tensorflow", "jax": 'pip install -e ".[jax]"', "torch": 'pip install -e ".[torch]"'}
TORCH_MIN_WIDTH = 8


def selected() -> str:
    """The backend Keras will use: $KERAS_BACKEND, else the one in keras.json, else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend") or "tensorflow"
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def check(name: str | None = None, setting: str = "KERAS_BACKEND") -> str:
    """The selected backend's name (or `name`, given by `setting`), or a BackendError that names the
    setting and how to fix it."""
    name = name or selected()
    if name not in BACKENDS:
        raise BackendError(
            f"{setting}={name} is not a backend keras-cifar runs on; "
            f"set {setting} to {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}"
        )
    if not installed(name):
        raise BackendError(
            f"{setting}={name}, but {name} is not installed: {INSTALL[name]} (or choose another backend with {setting})"
        )
    return name


def installed(name: str) -> bool:
    """Whether backend `name`'s library can be imported (checked without importing it)."""
    return importlib.util.find_spec(name) is not None


# What train.deterministic needs before the libraries start: XLA's deterministic GPU kernels (JAX) and a
# cuBLAS workspace of fixed size (PyTorch's deterministic algorithms refuse to run without one on a GPU).
DETERMINISTIC_ENVIRONMENT = {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def start(deterministic: bool = False) -> ModuleType:
    """Check the backend and import Keras, then TensorFlow where installed; returns the keras module.
    `deterministic`: some run will set train.deterministic; the environment it needs is set first.

    Both imports run with stderr silenced: TensorFlow's native libraries print start-up lines
    (oneDNN, cudart_stub, cuInit) before any log level applies. TensorFlow comes after the backend's
    own library, because PyTorch's import crashes in a process that imported TensorFlow first. Under
    JAX or PyTorch, TensorFlow only feeds data (tf.data, TFDS), so it is kept off their GPUs. JAX
    keeps its compiled programs under cache_root(), so that later processes skip the compilation.
    """
    name = check()
    if deterministic:
        for key, value in DETERMINISTIC_ENVIRONMENT.items():
            if value not in os.environ.get(key, ""):
                os.environ[key] = f"{os.environ.get(key, '')} {value}".strip()
    with _stderr_silenced():
        import keras

        if name == "jax":  # a second seed, a resumed run, a later sweep: compiled programs are reused
            import jax

            jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
        if name == "torch":
            _torch_like_the_others()

        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow as tf

            if name != "tensorflow":
                try:
                    tf.config.set_visible_devices([], "GPU")
                except RuntimeError:  # TensorFlow has run in this process already: its devices are set
                    pass
            tf.config.list_physical_devices("GPU")  # CUDA's own start-up messages come here
    return keras


def make_deterministic(on: bool) -> None:
    """train.deterministic for the run about to train: TensorFlow's op determinism (once on, it stays on
    in this process: TensorFlow cannot turn it off), PyTorch's deterministic algorithms (and cuDNN's
    deterministic convolutions instead of the fastest ones); JAX's comes from XLA_FLAGS (start)."""
    import keras

    name = keras.backend.backend()
    if name == "tensorflow" and on:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if name == "torch":
        import torch

        torch.use_deterministic_algorithms(on)
        torch.backends.cudnn.deterministic = on
        torch.backends.cudnn.benchmark = torch.cuda.is_available() and not on


def _torch_like_the_others() -> None:
    """On an NVIDIA GPU, PyTorch computes float32 matrix products in TensorFloat-32 like JAX and TensorFlow
    do by default (its convolutions already do), and lets cuDNN pick its fastest convolution for the
    fixed CIFAR shapes, as the PyTorch reference does (cudnn.benchmark)."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set to `values` for the duration, then restored (unset where they were)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_settings(config: Any, where: str) -> None:  # config: a config.Config (core imports nothing above it)
    """Refuse, before training, settings the selected backend cannot run."""
    name = selected()
    if name == "torch" and config.train.steps_per_execution not in (1, "auto"):
        raise BackendError(
            f"{where}: train.steps_per_execution must be 1 on the PyTorch backend (a Keras "
            "limitation); use --set train.steps_per_execution=1 or another backend"
        )
    if name == "torch" and config.model.width < TORCH_MIN_WIDTH and _torch_cpu_lacks_avx512():
        raise BackendError(
            f"{where}: model.width {config.model.width} on PyTorch's CPU without AVX-512 "
            f"would hang or crash (its oneDNN convolution breaks on narrow 1x1 stride-2 "
            f"layers); use model.width >= {TORCH_MIN_WIDTH} or another backend"
        )


def _torch_cpu_lacks_avx512() -> bool:
    import torch

    return not torch.cuda.is_available() and "AVX512" not in torch.backends.cpu.get_cpu_capability()


@dataclass(frozen=True)
class Accelerator:
    """What the current backend computes on: kind 'cpu', 'gpu' or 'tpu', its name, and whether it
    computes in bfloat16 natively (NVIDIA compute capability 8.0 or more, or a TPU)."""

    kind: str
    name: str
    bf16: bool = False


@functools.cache
def accelerator() -> Accelerator:
    """The Accelerator of the current backend (its first device)."""
    import keras

    backend = keras.backend.backend()
    cpu = Accelerator("cpu", f"cpu ({os.cpu_count()} cores, {platform.machine()})")
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return cpu
        major = float(getattr(dev, "compute_capability", "0") or 0)
        return Accelerator(dev.platform, f"{dev.platform}: {dev.device_kind}", dev.platform == "tpu" or major >= 8)
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return cpu
        return Accelerator("gpu", f"cuda: {torch.cuda.get_device_name(0)}", torch.cuda.get_device_capability(0)[0] >= 8)
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return cpu
        details = tf.config.experimental.get_device_details(gpus[0])
        return Accelerator(
            "gpu",
            f"gpu: {details.get('device_name', gpus[0].name)}",
            tuple(details.get("compute_capability") or (0, 0)) >= (8, 0),
        )
    return cpu


def device() -> str:
    """'cpu (2 cores, x86_64)', 'gpu: NVIDIA H200', ...: where the current backend computes."""
    return accelerator().name


def precision(config: Any) -> str:  # config: a config.Config
    """The dtype policy of train.mixed_precision: true, false, or auto (bfloat16 where it is native)."""
    wanted = config.train.mixed_precision
    bf16 = wanted is True or (wanted == "auto" and accelerator().bf16)
    return "mixed_bfloat16" if bf16 else "float32"


def math_precision(config: Any) -> str:  # config: a config.Config
    """What convolutions and matrix products compute in: bf16 (mixed_bfloat16); tf32 for float32 on an
    NVIDIA GPU of compute capability 8 or more (Ampere, Hopper), where all three backends use
    TensorFloat-32 (a 10-bit mantissa); else fp32."""
    if precision(config) == "mixed_bfloat16":
        return "bf16"
    return "tf32" if accelerator().kind == "gpu" and accelerator().bf16 else "fp32"


def steps_per_execution(config: Any) -> int:  # config: a config.Config
    """train.steps_per_execution, with auto = 8 on an accelerator with JAX or TensorFlow (fewer
    dispatches and log updates per step), else 1 (PyTorch allows only 1; a CPU gains nothing)."""
    wanted = config.train.steps_per_execution
    if wanted != "auto":
        return wanted
    import keras

    return 8 if accelerator().kind != "cpu" and keras.backend.backend() in ("jax", "tensorflow") else 1


def cache_root() -> Path:
    """Where keras-cifar keeps what it can compute again: decoded data, compiled programs."""
    return Path(os.environ.get("KERAS_CIFAR_CACHE") or Path.home() / ".cache" / "keras_cifar")


def environment() -> dict[str, Any]:
    """Backend, library versions and device, for metrics.json (imports Keras)."""
    import keras

    versions = {"python": platform.python_version()}
    for pkg in ("keras", "numpy", "tensorflow", "jax", "jaxlib", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"backend": keras.backend.backend(), "versions": versions, "device": device()}
