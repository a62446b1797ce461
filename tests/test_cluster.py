"""Several devices, processes and machines: data parallelism, one run in two processes, a sweep in
two shards, run-folder locks, and the errors of each set-up. The multi-process parts run in
subprocesses on 127.0.0.1 (JAX fixes its devices and processes once per process)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from keras_cifar.runs import RunFolder
from tests.helpers import REPO, tiny_recipe


def _env(**extra):
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_BACKEND"))},
            "PYTHONPATH": str(REPO), **extra}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_parallel_steps_equal_single_device_steps():
    """Two steps of the width-8 ResNet-18 with augmentation, on 2 virtual CPU devices and on one, in
    float64: the same weights within 1e-5 (in float32 the order of the sums alone moves them by about
    1e-4). BatchNormalization is left in: under JAX's data parallelism its statistics are those of the
    whole global batch, as on one device."""
    script = textwrap.dedent("""
        import jax
        jax.config.update("jax_enable_x64", True)
        import keras, numpy as np
        from keras_cifar import backend, cluster, config
        from keras_cifar.train import compile_model
        backend.precision = lambda config: "float64"  # the model's dtype policy (float32 rounds to ~1e-4 here)
        assert len(jax.devices()) == 2
        cfg = config.defaults(); cfg["model"]["width"] = 8
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8); y = rng.integers(0, 10, 64)
        weights = []
        for distribution in ("none", "data_parallel"):
            cfg["train"]["distribution"] = distribution
            keras.utils.set_random_seed(0)
            devices, _ = cluster.distribute(cfg)
            model = compile_model(cfg, 2)
            model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
            weights.append([np.asarray(w) for w in model.weights])
            print("devices", devices)
        print("max difference", max(float(np.max(np.abs(a - b))) for a, b in zip(*weights)))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env=_env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices 1\ndevices 2\n" in done.stdout
    assert float(done.stdout.split("max difference")[1]) < 1e-5


def test_two_processes_train_one_run(tmp_path):
    recipe, port = tiny_recipe(tmp_path), _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "keras_cifar", "run", str(recipe), "--data", "synthetic:256",
                               "--out", str(tmp_path / "out"), "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)],
                              cwd=REPO, env=_env(KERAS_BACKEND="jax"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    (metrics,) = list((tmp_path / "out").glob("*/*/*/metrics.json"))  # exactly one run folder
    m = json.loads(metrics.read_text())
    assert m["status"] == "completed" and m["processes"] == 2 and m["devices"] == 2
    assert m["data"]["train"] == 256  # the global training set, each process fed half of it
    assert not (metrics.parent / ".lock").exists()
    losses = [line.split("loss")[1].split()[0] for out in outputs for line in out.splitlines() if "epoch   1/1" in line]
    assert len(losses) == 2 and losses[0] == losses[1]  # one computation, seen by both


def test_two_shards_train_each_run_once_and_take_over_a_stale_lock(tmp_path):
    recipe = tiny_recipe(tmp_path, "  a: {}\n  b: {model: {batch_norm: false}}\n")
    out = tmp_path / "out"
    stale = RunFolder(out / "tiny" / "b" / "seed1")  # left by a process that died: taken over
    stale.path.mkdir(parents=True)
    stale.lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "time": "earlier"}))
    args = ["run", str(recipe), "--data", "synthetic:128", "--out", str(out), "--seeds", "0,1"]
    procs = [subprocess.Popen([sys.executable, "-m", "keras_cifar", *args, "--shard", f"{i}/2"], cwd=REPO,
                              env=_env(KERAS_BACKEND="tensorflow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in (0, 1)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [sorted(line.split()[1].rstrip(":") for line in stdout.splitlines() if "width 8, 1 epoch" in line)
               for stdout, _ in outputs]
    assert trained == [["tiny/a/seed0", "tiny/b/seed0"], ["tiny/a/seed1", "tiny/b/seed1"]]  # positions 0, 2 / 1, 3
    assert len(list(out.glob("*/*/*/metrics.json"))) == 4 and not list(out.glob("*/*/*/.lock*"))
    for _, stderr in outputs:  # TensorFlow started without its log lines
        assert "cudart_stub" not in stderr and "oneDNN" not in stderr, stderr


def test_a_live_lock_keeps_the_run_and_a_dead_or_silent_one_is_taken_over(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    assert folder.claim() is None  # ours now
    assert "pid" in RunFolder(tmp_path / "run").claim()  # held by a live process: this one
    folder.lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": "earlier"}))
    assert folder.claim() is not None  # another machine, heartbeat fresh
    old = time.time() - 3600
    os.utime(folder.lock, (old, old))
    assert folder.claim() is None  # no heartbeat for an hour: taken over
    with folder.heartbeat():
        pass
    assert not folder.lock.exists()


def test_of_two_processes_taking_over_a_stale_lock_one_wins(tmp_path, monkeypatch):
    """Both find the lock stale; the other one takes it over first, between this one's look and its
    rename: this one gives the fresh lock back and does not train."""
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": "earlier"}))
    old = time.time() - 3600
    os.utime(folder.lock, (old, old))
    fresh = {"host": "elsewhere", "pid": 2, "time": "now"}
    rename = os.rename

    def other_process_first(src, dst):
        if Path(src) == folder.lock and not Path(dst).name == ".lock":
            folder.lock.write_text(json.dumps(fresh))  # its takeover: a new lock in place of the stale one
        rename(src, dst)

    monkeypatch.setattr(os, "rename", other_process_first)
    assert "took over the stale lock first" in folder.claim()
    assert json.loads(folder.lock.read_text()) == fresh


@pytest.mark.parametrize("args, message", [
    (["--shard", "2/2"], "--shard: expected I/N with 0 <= I < N"),
    (["--shard", "x"], "--shard: expected I/N"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id 2 with --num-processes 2"),
    (["--coordinator", "nowhere", "--num-processes", "2", "--process-id", "1"], "--coordinator: expected HOST:PORT"),
    (["--num-processes", "2"], "a multi-process run needs --coordinator"),
])
def test_bad_shard_and_process_options_are_one_line_errors(tmp_path, cli, args, message):
    result = cli("run", tiny_recipe(tmp_path), "--data", "synthetic:100", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_an_unreachable_coordinator_fails_in_bounded_time(tmp_path, cli):
    start = time.monotonic()
    result = cli("run", tiny_recipe(tmp_path), "--data", "synthetic:100", "--out", tmp_path / "out", "--coordinator",
                 f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "2")
    assert result.exit_code == 2 and "nothing answered within 2 s" in result.output
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()
