"""Several devices, several processes, several machines.

- ``train.distribution`` (auto, none, data_parallel): on JAX, data_parallel is Keras's DataParallel
  over every visible device: each global batch (``data.batch_size``) is split over the devices, the
  weights are replicated. BatchNormalization then normalizes with the statistics of the whole global
  batch, because XLA partitions the mean and variance across devices (unlike PyTorch DDP, whose
  statistics are per device), so a data-parallel run computes what one device would. auto is
  data_parallel where JAX sees more than one accelerator, or several processes.
- One run trained by N processes (``--coordinator HOST:PORT --num-processes N --process-id I``, or
  Keras's KERAS_DISTRIBUTION_* variables, or ``--cluster`` where JAX detects the cluster itself, as
  under SLURM): keras.distribution.initialize joins them; each process feeds its own share of every
  global batch (pre-sharded numpy arrays: ``auto_shard_dataset=False``); only process 0 writes.
- A sweep split between machines (``--shard I/N``): the runs whose position in the sweep is I modulo
  N; run folders are claimed with lock files (runs.py), so no run is trained twice.
"""

import socket
import time
from dataclasses import dataclass

from keras_cifar.errors import BackendError, ConfigError

DISTRIBUTIONS = ("auto", "none", "data_parallel")
JOIN_TIMEOUT = 60.0  # seconds to wait for the coordinator before giving up


# ------------------------------------------------------------------------------- one process, N devices


def distribute(config):
    """Set Keras's distribution for a run's config; returns (devices, processes) it trains on."""
    import keras

    wanted = config["train"]["distribution"]
    backend = keras.backend.backend()
    if backend != "jax":
        if wanted == "data_parallel":
            raise BackendError(f"train.distribution: data_parallel runs on JAX (keras.distribution), not on "
                               f"{backend}; set KERAS_BACKEND=jax")
        return 1, 1
    import jax

    devices = jax.devices()  # of every process
    if jax.process_count() > 1 and wanted == "none":
        raise ConfigError("train.distribution: none cannot train one run in several processes; use auto or "
                          "data_parallel")
    accelerators = len(devices) > 1 and devices[0].platform != "cpu"
    parallel = wanted == "data_parallel" or (wanted == "auto" and (accelerators or jax.process_count() > 1))
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False) if parallel else None)
    return (len(devices) if parallel else 1), jax.process_count()


# -------------------------------------------------------------------------------- N processes, one run


@dataclass(frozen=True)
class Processes:
    """How this process joins a multi-process run: the coordinator's HOST:PORT, the number of
    processes and this one's index, each None where Keras's variables or the cluster say."""

    coordinator: str = None
    count: int = None
    index: int = None


def processes_of(coordinator, count, index, cluster):
    """The Processes the command line asks for (None: a single process), checked without JAX."""
    if cluster and (coordinator or count is not None or index is not None):
        raise ConfigError("--cluster lets JAX find the cluster; leave out --coordinator, --num-processes and "
                          "--process-id, or --cluster")
    if not (cluster or coordinator or count is not None or index is not None):
        return None
    if not cluster:
        if not coordinator or count is None or index is None:
            raise ConfigError("a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
                              "--process-id I (or KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES, _PROCESS_ID)")
        parse_address(coordinator, "--coordinator")
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"--process-id {index} with --num-processes {count}: the id must be 0 to {count - 1}")
    return Processes(coordinator, count, index)


def parse_address(text, option):
    """``HOST:PORT`` -> (host, port), or a ConfigError naming `option`."""
    host, _, port = (text or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option}: expected HOST:PORT, e.g. 10.0.0.5:8000, got {text!r}")
    return host, int(port)


def join(processes, timeout=JOIN_TIMEOUT):
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


def _wait_for(host, port, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2.0).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise ConfigError(f"--coordinator {host}:{port}: nothing answered within {timeout:.0f} s ({e}); start "
                                  "process 0 there, or check the address") from None
            time.sleep(0.5)


def process():
    """(index, count) of this process in the run: (0, 1) alone."""
    import keras

    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def agree(*values):
    """Process 0's `values` (small integers or booleans), in every process of the run."""
    if process()[1] == 1:
        return values
    import numpy as np
    from jax.experimental import multihost_utils

    return tuple(int(v) for v in multihost_utils.broadcast_one_to_all(np.array(values, dtype=np.int64)))


# ----------------------------------------------------------------------------------- a sweep, N machines


def parse_shard(text):
    """``I/N`` -> (I, N), or a ConfigError."""
    index, sep, count = (text or "").partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or int(count) < 1 or int(index) >= int(count):
        raise ConfigError(f"--shard: expected I/N with 0 <= I < N, e.g. 0/2 on the first of two machines, got {text!r}")
    return int(index), int(count)


def shard_of(runs, shard):
    """The runs at positions I, I + N, I + 2N, ... of the sweep."""
    index, count = shard
    return runs[index::count]
