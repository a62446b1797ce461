"""Several devices, several processes, several machines.

- ``train.distribution`` (auto, none, data_parallel): on JAX, data_parallel is Keras's DataParallel
  over every visible device: each global batch (``data.batch_size``) is split over the devices, the
  weights are replicated. BatchNormalization then normalizes with the statistics of the whole global
  batch, because XLA partitions the mean and variance across devices (unlike PyTorch DDP, whose
  statistics are per device), so a data-parallel run computes what one device would. On TensorFlow
  it is MirroredStrategy, with BatchNormalization synchronized to the same effect. auto is
  data_parallel in a run of several processes, and where JAX sees several accelerators and the global
  batch gives each at least MIN_IMAGES_PER_DEVICE images; otherwise one device trains (and a sweep
  uses the others with ``run --parallel``).
- One run trained by N processes (``--coordinator HOST:PORT --num-processes N --process-id I``, or
  Keras's KERAS_DISTRIBUTION_* variables, or ``--cluster`` where JAX detects the cluster itself, as
  under SLURM): keras.distribution.initialize joins them; each process feeds its own share of every
  global batch (pre-sharded numpy arrays: ``auto_shard_dataset=False``); only process 0 writes.
- A sweep split between machines (``--shard I/N``): the runs whose position in the sweep is I modulo
  N; run folders are claimed with lock files (runs.py), so no run is trained twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from keras_cifar.config import Config
from keras_cifar.core.errors import BackendError, ConfigError

T = TypeVar("T")

# Below this many images per device, splitting a batch over GPUs costs more than it gains: each device's
# step is bound by kernel launches and the all-reduce of every gradient (45 MB at width 64), not by
# arithmetic. ResNet-18 on CIFAR at batch 128 keeps one H200 far from busy (about 2.4 s an epoch), so
# at the report's batch sizes a sweep gains more from one run per GPU (`run --parallel gpus`).
MIN_IMAGES_PER_DEVICE = 256
JOIN_TIMEOUT = 60.0  # seconds to wait for the coordinator before giving up


# ------------------------------------------------------------------------------- one process, N devices


@dataclass(frozen=True)
class Placement:
    """Where a run trains: its devices and processes, and `scope`, the context its model is built or
    loaded in (TensorFlow's strategy scope; JAX's distribution is set globally instead)."""

    devices: int = 1
    processes: int = 1
    scope: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext


def distribute(config: Config) -> Placement:
    """Set up the distribution a run's config asks for; returns its Placement.

    On JAX, data_parallel is Keras's DataParallel over every device of every process. On TensorFlow
    it is tf.distribute.MirroredStrategy over the visible GPUs (or, without any, the logical CPU
    devices), which Keras's fit supports: the model is built in its scope, each global batch is split
    over the replicas and the gradients are summed. BatchNormalization then uses the statistics of
    the global batch (models.BatchNorm synchronizes them), so one device and several compute the same.
    PyTorch: Keras 3.15's fit has no DistributedDataParallel support."""
    import keras

    wanted = config.train.distribution
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _mirrored(config, wanted)
    if backend != "jax":
        if wanted == "data_parallel":
            raise BackendError(
                f"train.distribution: data_parallel runs on JAX (keras.distribution) and TensorFlow "
                f"(MirroredStrategy); Keras {keras.__version__}'s fit has no data parallelism on "
                f"{backend} (its DistributedDataParallel support comes in a later Keras); set "
                "KERAS_BACKEND=jax or tensorflow"
            )
        return Placement()
    import jax

    devices = jax.devices()  # of every process
    if jax.process_count() > 1 and wanted == "none":
        raise ConfigError("train.distribution: none cannot train one run in several processes; use auto or data_parallel")
    parallel = data_parallel(wanted, len(devices), devices[0].platform, config.data.batch_size, jax.process_count())
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False) if parallel else None
    )
    return Placement(len(devices) if parallel else 1, jax.process_count())


def _mirrored(config: Config, wanted: str) -> Placement:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    platform = "gpu" if gpus else "cpu"
    if not data_parallel(wanted, len(devices), platform, config.data.batch_size, 1):
        return Placement()
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    return Placement(strategy.num_replicas_in_sync, 1, strategy.scope)


def data_parallel(wanted: str, devices: int, platform: str, batch_size: int, processes: int) -> bool:
    """Whether a run of train.distribution `wanted` trains data-parallel over `devices` devices."""
    if wanted != "auto":
        return wanted == "data_parallel"
    return processes > 1 or (devices > 1 and platform != "cpu" and batch_size >= MIN_IMAGES_PER_DEVICE * devices)


# -------------------------------------------------------------------------------- N processes, one run


@dataclass(frozen=True)
class Processes:
    """How this process joins a multi-process run: the coordinator's HOST:PORT, the number of
    processes and this one's index, each None where Keras's variables or the cluster say."""

    coordinator: str | None = None
    count: int | None = None
    index: int | None = None


def processes_of(coordinator: str | None, count: int | None, index: int | None, cluster: bool) -> Processes | None:
    """The Processes the command line asks for (None: a single process), checked without JAX."""
    if cluster and (coordinator or count is not None or index is not None):
        raise ConfigError(
            "--cluster lets JAX find the cluster; leave out --coordinator, --num-processes and --process-id, or --cluster"
        )
    if not (cluster or coordinator or count is not None or index is not None):
        return None
    if not cluster:
        if not coordinator or count is None or index is None:
            raise ConfigError(
                "a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
                "--process-id I (or KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES, _PROCESS_ID)"
            )
        parse_address(coordinator, "--coordinator")
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"--process-id {index} with --num-processes {count}: the id must be 0 to {count - 1}")
    return Processes(coordinator, count, index)


def parse_address(text: str | None, option: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), or a ConfigError naming `option`."""
    host, _, port = (text or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option}: expected HOST:PORT, e.g. 10.0.0.5:8000, got {text!r}")
    return host, int(port)


def join(processes: Processes, timeout: float = JOIN_TIMEOUT) -> None:
    """Join the multi-process run (before anything runs on JAX). A process other than 0 first waits up
    to `timeout` seconds for the coordinator to listen, so that a wrong address fails in bounded time."""
    import keras

    if processes.coordinator and processes.index:
        _wait_for(*parse_address(processes.coordinator, "--coordinator"), timeout)
    if keras.backend.backend() != "jax":
        raise BackendError("a multi-process run trains on JAX (keras.distribution); set KERAS_BACKEND=jax")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU processes
    keras.distribution.initialize(processes.coordinator, processes.count, processes.index)


def _wait_for(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2.0).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"--coordinator {host}:{port}: nothing answered within {timeout:.0f} s ({e}); start "
                    "process 0 there, or check the address"
                ) from None
            time.sleep(0.5)


def process() -> tuple[int, int]:
    """(index, count) of this process in the run: (0, 1) alone."""
    import keras

    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def agree(*values: int) -> tuple[int, ...]:
    """Process 0's `values` (small integers or booleans), in every process of the run."""
    if process()[1] == 1:
        return values
    import numpy as np
    from jax.experimental import multihost_utils

    return tuple(int(v) for v in multihost_utils.broadcast_one_to_all(np.array(values, dtype=np.int64)))


# ----------------------------------------------------------------------------------- a sweep, N machines


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``I/N`` -> (I, N); ``auto`` or ``auto/N`` take them from the scheduler (scheduler_shard); or a
    ConfigError."""
    if text == "auto" or (text or "").startswith("auto/"):
        return scheduler_shard(text.partition("/")[2], os.environ if env is None else env)
    index, sep, count = (text or "").partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or int(count) < 1 or int(index) >= int(count):
        raise ConfigError(
            f"--shard: expected I/N with 0 <= I < N (e.g. 0/2 on the first of two machines), or auto, got {text!r}"
        )
    return int(index), int(count)


def scheduler_shard(count: str, env: Mapping[str, str]) -> tuple[int, int]:
    """(I, N) of this task of a SLURM job array (SLURM_ARRAY_TASK_ID, and SLURM_ARRAY_TASK_COUNT or
    _MIN/_MAX) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, and N from ``auto/N`` or
    KERAS_CIFAR_SHARDS); an explicit `count` (auto/N) overrides the scheduler's."""
    if "SLURM_ARRAY_TASK_ID" in env:
        low = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        index = int(env["SLURM_ARRAY_TASK_ID"]) - low
        total = env.get("SLURM_ARRAY_TASK_COUNT") or (
            int(env["SLURM_ARRAY_TASK_MAX"]) - low + 1 if "SLURM_ARRAY_TASK_MAX" in env else None
        )
        where = "the SLURM job array"
    elif "JOB_COMPLETION_INDEX" in env:
        index, total, where = int(env["JOB_COMPLETION_INDEX"]), env.get("KERAS_CIFAR_SHARDS"), "the Indexed Job"
    else:
        raise ConfigError(
            "--shard auto: neither SLURM_ARRAY_TASK_ID (a SLURM job array) nor JOB_COMPLETION_INDEX "
            "(a Kubernetes Indexed Job) is set; give --shard I/N instead"
        )
    total = int(count or total or 0)
    if total < 1:
        raise ConfigError(
            f"--shard auto: {where} does not say how many tasks there are; give --shard auto/N (or set KERAS_CIFAR_SHARDS)"
        )
    if not 0 <= index < total:
        raise ConfigError(f"--shard auto: task {index} of {where} is not one of 0..{total - 1}")
    return index, total


def task_identity(env: Mapping[str, str] | None = None) -> str | None:
    """The scheduler's name for this task, the same when it is requeued or its pod is replaced
    ('slurm 1234_5 rank 0', 'k8s sweep-3'), or None outside a scheduler. Each process of a SLURM job step
    has its own rank (SLURM_PROCID); two shells in one allocation share a name, and are told apart by
    their host and pid (locks.py)."""
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" in env:
        job = env.get("SLURM_ARRAY_JOB_ID") or env["SLURM_JOB_ID"]
        task = f"_{env['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in env else ""
        return f"slurm {job}{task} rank {env.get('SLURM_PROCID', 0)}"
    if "JOB_COMPLETION_INDEX" in env and env.get("HOSTNAME"):  # pod <job>-<index>-<random>
        return f"k8s {env['HOSTNAME'].rsplit('-', 1)[0]}"
    return None


def task_incarnation(env: Mapping[str, str] | None = None) -> int | str | None:
    """Which incarnation of its scheduler task this process is: SLURM's restart count (a requeued job's is
    higher), or the pod's name (an Indexed Job's replacement pod has another); None outside a scheduler."""
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" in env:
        return int(env.get("SLURM_RESTART_COUNT", 0))
    if "JOB_COMPLETION_INDEX" in env and env.get("HOSTNAME"):
        return env["HOSTNAME"]
    return None


def shard_of(runs: list[T], shard: tuple[int, int]) -> list[T]:
    """The runs at positions I, I + N, I + 2N, ... of the sweep."""
    index, count = shard
    return runs[index::count]
