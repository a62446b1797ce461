"""Several devices, processes and machines: data parallelism, one run in two processes, a sweep in
two shards, run-folder locks, and the errors of each set-up. The multi-process parts run in
subprocesses on 127.0.0.1 (JAX fixes its devices and processes once per process)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from keras_cifar.core.errors import ConfigError
from keras_cifar.training import locks
from keras_cifar.training.cluster import parse_shard, task_identity
from keras_cifar.training.runs import RunFolder
from tests.helpers import REPO, Command, tiny_recipe

pytestmark = pytest.mark.cluster


# What both data-parallel tests' scripts start with: the width-8 model in float64, 64 images, two steps' data.
TWO_STEPS = textwrap.dedent("""
    import keras, numpy as np
    from keras_cifar.core import backend
    from keras_cifar.training import cluster
    from keras_cifar import config as config
    from keras_cifar.training.train import compile_model
    backend.precision = lambda config: "float64"  # the model's dtype policy (float32 rounds to ~1e-4 here)
    width8 = config.Config.from_dict({"model": {"width": 8}})
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8); y = rng.integers(0, 10, 64)
    weights = []
""")


def _env(**extra):
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_BACKEND"))},
        "PYTHONPATH": str(REPO),
        **extra,
    }


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_parallel_steps_equal_single_device_steps(tmp_path):
    """Two steps of the width-8 ResNet-18 with augmentation, on 2 virtual CPU devices and on one, in
    float64: the same weights within 1e-5 (in float32 the order of the sums alone moves them by about
    1e-4). BatchNormalization is left in: under JAX's data parallelism its statistics are those of the
    whole global batch, as on one device. A run with a batch that cannot split evenly is refused."""
    script = (
        textwrap.dedent("""
        import jax
        jax.config.update("jax_enable_x64", True)
    """)
        + TWO_STEPS
        + textwrap.dedent("""
        assert len(jax.devices()) == 2
        for distribution in ("none", "data_parallel"):
            cfg = width8.updated({"train": {"distribution": distribution}})
            keras.utils.set_random_seed(0)
            devices = cluster.distribute(cfg).devices
            model = compile_model(cfg, 2)
            model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
            weights.append([np.asarray(w) for w in model.weights])
            print("devices", devices)
        print("max difference", max(float(np.max(np.abs(a - b))) for a, b in zip(*weights)))
        import click, sys
        from keras_cifar.cli import main
        try:  # 27 held-out images: a validation split of 13, which JAX cannot shard over 2 devices
            main(["run", sys.argv[1], "--data", "synthetic:135", "--out", sys.argv[2],
                  "--set", "train.distribution=data_parallel"], standalone_mode=False)
        except click.ClickException as e:
            print("refused:", e.format_message())
    """)
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_recipe(tmp_path)), str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env=_env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices 1\ndevices 2\n" in done.stdout
    assert float(done.stdout.split("max difference")[1].split()[0]) < 1e-5
    assert (
        "refused: tiny/a/seed0: on 2 devices every batch must split evenly, but a validation batch has 13 images" in done.stdout
    )


def test_mirrored_strategy_steps_equal_single_device_steps(tmp_path):
    """TensorFlow: two steps on 2 logical CPU devices (MirroredStrategy, BatchNormalization synchronized,
    augmentation drawn as on one device) end with one device's weights, in float64. (In float32 they
    differ by up to about 1e-2 here: TensorFlow's synchronized moments compute the variance as
    E[x^2] - E[x]^2.) Then `run` trains on both devices and records them."""
    recipe = tiny_recipe(tmp_path)
    two_devices = textwrap.dedent("""
        import sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    """)
    steps = (
        two_devices
        + TWO_STEPS
        + textwrap.dedent("""
        for distribution in ("none", "data_parallel"):
            cfg = width8.updated({"train": {"distribution": distribution}})
            keras.utils.set_random_seed(0)
            placement = cluster.distribute(cfg)
            with placement.scope():
                model = compile_model(cfg, 2)
            model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), epochs=1, verbose=0)
            weights.append([np.asarray(w) for w in model.weights])
            print("devices", placement.devices)
        print("max difference", max(float(np.max(np.abs(a - b))) for a, b in zip(*weights)))
    """)
    )
    run = two_devices + textwrap.dedent("""
        import click
        from keras_cifar.cli import main
        for data in ("synthetic:135", "synthetic:160"):  # 135: 27 held-out images, a validation split of 13
            try:
                main(["run", sys.argv[1], "--data", data, "--out", sys.argv[2], "--epochs", "1",
                      "--set", "train.distribution=data_parallel"], standalone_mode=False)
            except click.ClickException as e:
                print("refused:", e.format_message())
    """)
    for script in (steps, run):  # a process each: in one, TensorFlow's collective ops of the two set-ups clash
        done = subprocess.run(
            [sys.executable, "-c", script, str(recipe), str(tmp_path / "out")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
            env=_env(KERAS_BACKEND="tensorflow"),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        if script == steps:
            assert "devices 1\ndevices 2\n" in done.stdout
            assert float(done.stdout.split("max difference")[1].split()[0]) < 1e-10
        else:  # TensorFlow aborts on a batch that does not split evenly: refused first
            assert (
                "refused: tiny/a/seed0: on 2 devices every batch must split evenly, but a validation batch "
                "has 13 images" in done.stdout
            )
    metrics = RunFolder(tmp_path / "out" / "tiny" / "a" / "seed0").read_metrics()
    assert metrics.status == "completed" and metrics.devices == 2


def test_two_processes_train_one_run(tmp_path):
    recipe, port = tiny_recipe(tmp_path), _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keras_cifar",
                "run",
                str(recipe),
                "--data",
                "synthetic:256",
                "--out",
                str(tmp_path / "out"),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            cwd=REPO,
            env=_env(KERAS_BACKEND="jax"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    (metrics,) = list((tmp_path / "out").glob("*/*/*/metrics.json"))  # exactly one run folder
    m = RunFolder(metrics.parent).read_metrics()
    assert m.status == "completed" and m.processes == 2 and m.devices == 2
    assert m.data.train == 256  # the global training set, each process fed half of it
    assert not (metrics.parent / ".lock").exists()
    losses = [line.split("loss")[1].split()[0] for out in outputs for line in out.splitlines() if "epoch   1/1" in line]
    assert len(losses) == 2 and losses[0] == losses[1]  # one computation, seen by both


def test_two_shards_train_each_run_once_and_take_over_a_stale_lock(tmp_path):
    recipe = tiny_recipe(tmp_path, "  a: {}\n  b: {model: {batch_norm: false}}\n")
    out = tmp_path / "out"
    stale = RunFolder(out / "tiny" / "b" / "seed1")  # left by a process that died: taken over
    stale.path.mkdir(parents=True)
    (stale.path / ".lock.1").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "time": "earlier"}))
    args = ["run", str(recipe), "--data", "synthetic:128", "--out", str(out), "--seeds", "0,1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "keras_cifar", *args, "--shard", f"{i}/2"],
            cwd=REPO,
            env=_env(KERAS_BACKEND="tensorflow"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [
        sorted(line.split()[1].rstrip(":") for line in stdout.splitlines() if "width 8, 1 epoch" in line)
        for stdout, _ in outputs
    ]
    assert trained == [["tiny/a/seed0", "tiny/b/seed0"], ["tiny/a/seed1", "tiny/b/seed1"]]  # positions 0, 2 / 1, 3
    assert len(list(out.glob("*/*/*/metrics.json"))) == 4 and not list(out.glob("*/*/*/.lock*"))
    for _, stderr in outputs:  # TensorFlow started without its log lines
        assert "cudart_stub" not in stderr and "oneDNN" not in stderr, stderr


def _owner(folder, number, **fields):
    """A lock file of another process: `fields` over a live one on another host."""
    record = {"token": "theirs", "host": "elsewhere", "pid": 1, "started": "1", "task": None, "incarnation": None}
    (folder / f".lock.{number}").write_text(json.dumps({**record, **fields, "time": "earlier", "beats": 0}))


def test_a_live_lock_keeps_the_run_and_a_dead_or_silent_one_is_taken_over(tmp_path, monkeypatch):
    """Taken over at once when its owner is proved dead (this host: no such process; this scheduler task in
    an earlier incarnation), or once it has not changed for STALE_SECONDS while this process watched it:
    never from file times, so a clock that runs ahead or behind makes no live lock stale (the previous
    main judged an mtime by this host's clock)."""
    now = [1000.0]
    monkeypatch.setattr(locks.time, "monotonic", lambda: now[0])
    ahead = time.time() + 3600
    monkeypatch.setattr(locks.time, "time", lambda: ahead)  # this host's clock an hour ahead
    folder = RunFolder(tmp_path / "run")
    assert folder.lock.claim() is None and folder.lock.owned()  # ours now
    assert "pid" in RunFolder(tmp_path / "run").lock.claim()  # held by a live process: this one
    folder.lock.release()
    assert folder.lock.files() == []
    _owner(folder.path, 3, host=socket.gethostname(), pid=2**22 + 12345)  # this host, no such process
    assert folder.lock.claim() is None and folder.lock.number == 4
    folder.lock.release()
    _owner(folder.path, 1)
    old = time.time() - 3600
    os.utime(folder.path / ".lock.1", (old, old))  # an hour old by its file time
    assert folder.lock.claim() == "elsewhere pid 1 since earlier"  # first seen: live until watched
    now[0] += locks.STALE_SECONDS - 1
    assert folder.lock.claim() is not None and not folder.lock.beating()
    _owner(folder.path, 1, beats=1)  # it beats (the same owner: its token)
    now[0] += locks.STALE_SECONDS - 1
    assert folder.lock.claim() is not None and folder.lock.beating()
    now[0] += locks.STALE_SECONDS  # silent for STALE_SECONDS as this process watched it
    assert folder.lock.takeable() and folder.lock.claim() is None and folder.lock.number == 2


def test_a_requeued_task_takes_its_own_lock_and_processes_of_one_job_are_distinct(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    for key, value in {"SLURM_JOB_ID": "77", "SLURM_PROCID": "0", "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(key, value)
    _owner(folder.path, 1, task="slurm 77 rank 0", incarnation=1)  # this task, this incarnation: another shell
    assert folder.lock.claim() is not None
    _owner(folder.path, 1, task="slurm 77 rank 1", incarnation=0)  # another rank of the job
    assert folder.lock.claim() is not None
    _owner(folder.path, 1, task="slurm 77 rank 0", incarnation=0)  # this rank before its requeue
    assert folder.lock.claim() is None


def test_a_lock_taken_over_is_neither_refreshed_nor_removed_by_its_old_owner(tmp_path, monkeypatch):
    """Its owner paused past the stale time; another process took the run over. Continued, the old owner
    finds the lock not its own: its heartbeat stops (`lost`), its check raises LockLost, and its release
    leaves the successor's lock (the previous main refreshed and then deleted whatever lock was there)."""
    now = [0.0]
    monkeypatch.setattr(locks.time, "monotonic", lambda: now[0])
    old, new = RunFolder(tmp_path / "run").lock, RunFolder(tmp_path / "run").lock
    assert old.claim() is None
    monkeypatch.setattr(locks, "_dead", lambda owner: False)  # the old owner lives on, paused
    assert new.claim() is not None
    now[0] += locks.STALE_SECONDS
    assert new.claim() is None and new.number == old.number + 1
    assert not old.beat() and old.lost.is_set()
    with pytest.raises(locks.LockLost):
        old.check()
    numbers = new.number, old.number
    old.release()
    assert new.owned() and [n for n, _ in new.files()] == list(numbers)
    new.release()
    assert new.files() == []


def test_of_two_processes_taking_over_a_silent_lock_one_wins(tmp_path, monkeypatch):
    """Both judge the lock silent; each creates the next number exclusively: one gets it, the other finds it
    taken and does not train (the previous main renamed the lock away and back, and a third process could
    create one in between)."""
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    _owner(folder.path, 5)
    monkeypatch.setattr(locks, "_takeable", lambda file, contents: True)
    first, second = RunFolder(folder.path).lock, RunFolder(folder.path).lock
    assert first.claim() is None and first.number == 6
    monkeypatch.setattr(locks, "_takeable", lambda file, contents: json.loads(contents)["token"] == "theirs")
    assert second.claim() is not None and second.number is None  # it sees the new owner, alive
    assert first.owned()


@pytest.mark.scheduler
def test_processes_of_one_slurm_job_share_a_sweep_and_train_each_run_once(tmp_path):
    """Two shells of one SLURM allocation (one SLURM_JOB_ID, no array, no rank) run the same sweep: each
    skips the runs the other holds, then watches those locks change and leaves the runs to it (the
    previous main took the other's live locks over as "this task's own" and trained runs twice)."""
    recipe = tiny_recipe(tmp_path, "  a: {}\n  b: {model: {batch_norm: false}}\n  c: {model: {activation: tanh}}\n")
    args = ["run", str(recipe), "--data", "synthetic:128", "--out", str(tmp_path / "out")]
    env = _env(KERAS_BACKEND="tensorflow", SLURM_JOB_ID="4242", KERAS_CIFAR_LOCK_STALE_SECONDS="8")
    procs = [Command(*args, env=env) for _ in range(2)]
    outputs = [(p.finish(), p.output) for p in procs]
    assert [code for code, _ in outputs] == [0, 0], outputs
    for variant in "abc":
        trained = [out for _, out in outputs if re.search(rf"tiny/{variant}/seed0 epoch +1/1", out)]
        assert len(trained) == 1, (variant, outputs)
        assert RunFolder(tmp_path / "out" / "tiny" / variant / "seed0").read_metrics().status == "completed"


def test_a_paused_owner_continued_leaves_the_run_to_its_successor(tmp_path):
    """An owner stopped (SIGSTOP) past the stale time: a second process watches its lock, takes the run
    over and resumes it. Continued (SIGCONT), the first process finds its lock taken, writes nothing more
    and leaves the run; the run is trained once, every epoch recorded once, and the successor's lock
    stays its own to the end."""
    recipe = tiny_recipe(tmp_path)
    args = ["run", str(recipe), "--data", "synthetic:160", "--out", str(tmp_path / "out"), "--epochs", "6"]
    env = _env(KERAS_BACKEND="tensorflow", KERAS_CIFAR_LOCK_STALE_SECONDS="4")
    first = Command(*args, env=env)
    first.wait_for(r"tiny/a/seed0 epoch +2/6")
    first.proc.send_signal(signal.SIGSTOP)
    second = Command(*args, env=env)
    second.wait_for(r"tiny/a/seed0: resuming after epoch 2")
    first.proc.send_signal(signal.SIGCONT)
    assert first.finish() == 0 and second.finish() == 0, (first.output, second.output)
    assert "tiny/a/seed0: its lock was taken over" in first.output
    assert "its lock was taken over" not in second.output and "Traceback" not in first.output + second.output
    folder = RunFolder(tmp_path / "out" / "tiny" / "a" / "seed0")
    assert [r.epoch for r in folder.read_history()] == [1, 2, 3, 4, 5, 6]
    assert folder.read_metrics().status == "completed" and folder.lock.files() == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard", "2/2"], "--shard: expected I/N with 0 <= I < N"),
        (["--shard", "x"], "--shard: expected I/N"),
        (
            ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2 with --num-processes 2",
        ),
        (["--coordinator", "nowhere", "--num-processes", "2", "--process-id", "1"], "--coordinator: expected HOST:PORT"),
        (["--num-processes", "2"], "a multi-process run needs --coordinator"),
        (
            ["--seeds", "auto", "--shard", "0/2"],
            "--seeds auto decides each next seed from the finished runs; it does not combine with --shard",
        ),
        (["--seeds", "0,x"], "--seeds: expected comma-separated integers or 'auto', got '0,x'"),
    ],
)
def test_bad_shard_and_process_options_are_one_line_errors(tmp_path, cli, args, message):
    result = cli("run", tiny_recipe(tmp_path), "--data", "synthetic:100", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_an_unreachable_coordinator_fails_in_bounded_time(tmp_path, cli):
    start = time.monotonic()
    result = cli(
        "run",
        tiny_recipe(tmp_path),
        "--data",
        "synthetic:100",
        "--out",
        tmp_path / "out",
        "--coordinator",
        f"127.0.0.1:{_free_port()}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--coordinator-timeout",
        "2",
    )
    assert result.exit_code == 2 and "nothing answered within 2 s" in result.output
    assert time.monotonic() - start < 30 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "wanted, devices, platform, batch, processes, parallel",
    [
        ("auto", 8, "gpu", 128, 1, False),  # 16 images a GPU: one GPU trains, the sweep uses the others
        ("auto", 8, "gpu", 2048, 1, True),  # 256 a GPU
        ("auto", 2, "cpu", 4096, 1, False),  # virtual CPU devices only on request
        ("auto", 1, "gpu", 128, 2, True),  # one run in two processes shares its batches
        ("data_parallel", 2, "cpu", 128, 1, True),
        ("none", 8, "gpu", 4096, 1, False),
    ],
)
def test_auto_distribution_splits_a_batch_only_when_each_device_gets_enough(
    wanted, devices, platform, batch, processes, parallel
):
    from keras_cifar.training.cluster import data_parallel

    assert data_parallel(wanted, devices, platform, batch, processes) is parallel


def _slurm(task, tasks=2, job="4242"):
    return {
        "SLURM_JOB_ID": job,
        "SLURM_ARRAY_JOB_ID": job,
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(tasks),
    }


def test_shard_auto_reads_slurm_and_kubernetes_and_refuses_without_them():
    assert parse_shard("auto", _slurm(1, 4)) == (1, 4)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "8"}) == (
        2,
        4,
    )  # --array=5-8
    assert parse_shard("auto", {"JOB_COMPLETION_INDEX": "2", "KERAS_CIFAR_SHARDS": "3"}) == (2, 3)
    assert parse_shard("auto/5", {"JOB_COMPLETION_INDEX": "4"}) == (4, 5)
    with pytest.raises(ConfigError, match="neither SLURM_ARRAY_TASK_ID .* nor JOB_COMPLETION_INDEX"):
        parse_shard("auto", {})
    with pytest.raises(ConfigError, match="does not say how many tasks there are; give --shard auto/N"):
        parse_shard("auto", {"JOB_COMPLETION_INDEX": "0"})
    assert task_identity(_slurm(3)) == "slurm 4242_3 rank 0"
    assert task_identity({"JOB_COMPLETION_INDEX": "1", "HOSTNAME": "keras-cifar-sweep-1-x7k2p"}) == "k8s keras-cifar-sweep-1"


@pytest.mark.scheduler
def test_sbatch_script_shards_the_sweep_and_a_requeued_task_takes_its_lock_back(tmp_path):
    """docs/cluster/sweep.sbatch as SLURM runs it (fake array variables). Task 0 is preempted (SIGTERM to
    the job): it keeps its last epoch and frees its lock. Requeued, it resumes, and is then killed with its
    job (SIGKILL: no time to clean up, its lock stays, as if on another host); requeued again (SLURM counts
    the restarts), it takes its own earlier incarnation's lock at once and finishes, with the reports and
    the comparison page. Task 1 would train the other run (the Kubernetes test trains one)."""
    recipe = tiny_recipe(tmp_path, "  a: {}\n  b: {model: {activation: tanh}}\n  c: {model: {activation: sigmoid}}\n")
    env = {"OUT": str(tmp_path / "out"), "DATA": "synthetic:200", "RECIPES": str(recipe), "EXTRA": "--epochs 3"}
    script = ["bash", str(REPO / "docs" / "cluster" / "sweep.sbatch")]
    lock = RunFolder(tmp_path / "out" / "tiny" / "a" / "seed0").lock
    task0 = Command(program=script, env={**env, **_slurm(0)}, cwd=REPO)
    task0.wait_for(r"tiny/a/seed0 epoch +1/3")
    assert task0.signal_all(signal.SIGTERM) != 0 and "stopped after epoch 1 of 3" in task0.output, task0.output
    assert lock.files() == []
    requeued = Command(program=script, env={**env, **_slurm(0), "SLURM_RESTART_COUNT": "1"}, cwd=REPO)
    requeued.wait_for(r"tiny/a/seed0: resuming after epoch 1")
    requeued.wait_for(r"tiny/a/seed0 epoch +2/3")
    requeued.signal_all(signal.SIGKILL)
    ((_, left),) = lock.files()
    left.write_text(json.dumps({**json.loads(left.read_text()), "host": "node-17", "pid": 1}))  # alive elsewhere
    again = Command(program=script, env={**env, **_slurm(0), "SLURM_RESTART_COUNT": "2"}, cwd=REPO)
    assert again.finish() == 0, again.output
    assert "tiny/a/seed0: resuming after epoch 2" in again.output and "being trained by" not in again.output
    assert RunFolder(tmp_path / "out" / "tiny" / "a" / "seed0").read_metrics().status == "completed"
    assert not (tmp_path / "out" / "tiny" / "b").exists()  # task 1's share
    assert "| [tiny](#tiny) | not in the report |" in (tmp_path / "out" / "comparison.md").read_text()


@pytest.mark.scheduler
def test_kubernetes_job_manifest_shards_the_sweep(tmp_path):
    """docs/cluster/sweep-job.yaml's container command, run as pod 1 of a 2-pod Indexed Job: it trains
    its half of the sweep and writes the reports of what the shared folder holds."""
    import yaml

    job = yaml.safe_load((REPO / "docs" / "cluster" / "sweep-job.yaml").read_text())
    assert job["spec"]["completionMode"] == "Indexed"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(
        KERAS_CIFAR_SHARDS="2",
        DATA="synthetic:200",
        OUT=str(tmp_path / "out"),
        EXTRA="",
        RECIPES=str(tiny_recipe(tmp_path, "  a: {}\n  b: {model: {activation: tanh}}\n")),
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"),
    )
    pod = Command(
        program=[*container["command"], *container["args"]],
        cwd=REPO,
        env={**env, "JOB_COMPLETION_INDEX": "1", "HOSTNAME": "keras-cifar-sweep-1-x7k2p"},
    )
    assert pod.finish() == 0, pod.output
    assert RunFolder(tmp_path / "out" / "tiny" / "b" / "seed0").read_metrics().status == "completed"
    assert not (tmp_path / "out" / "tiny" / "a").exists()  # pod 0's share
    assert "| [tiny](#tiny) | not in the report |" in (tmp_path / "out" / "comparison.md").read_text()


def test_parallel_trains_each_run_once_and_a_crashed_process_loses_only_its_run(tmp_path):
    recipe = tiny_recipe(tmp_path, "  a: {}\n  b: {model: {activation: tanh}}\n  c: {model: {activation: sigmoid}}\n")
    args = [
        "run",
        recipe,
        "--data",
        "synthetic:200",
        "--epochs",
        "2",
        "--out",
        tmp_path / "out",
        "--parallel",
        "2",
    ]
    sweep = Command(*args[1:], program=[shutil.which("keras-cifar"), "run"])
    first = sweep.wait_for(r"^\[w\d\] \[\d/3\] ")
    victim_key, victim_pid = first.split()[2], int(first.split("(pid ")[1].rstrip(")"))
    sweep.wait_for(rf"{victim_key} epoch +1/2")
    os.kill(victim_pid, 9)
    assert sweep.finish() == 1, sweep.output  # one run failed; the others went on
    statuses = {
        key: RunFolder(tmp_path / "out" / key).read_metrics().status for key in ("tiny/a/seed0", "tiny/b/seed0", "tiny/c/seed0")
    }
    assert statuses == {key: "failed" if key == victim_key else "completed" for key in statuses}
    assert f"{victim_key}: failed (its process ended by SIGKILL)" in sweep.output
    for key in statuses:  # each run trained once: its epoch lines, each prefixed with its process's slot
        epochs = re.findall(rf"^\[w\d\] {key} epoch +(\d)/2", sweep.output, re.M)
        assert epochs == (["1"] if key == victim_key else ["1", "2"]), (key, epochs)
    assert re.search(r"\| sweep 5/6 epochs", sweep.output)  # one ETA for the whole sweep
    assert sweep.output.count("tiny: ") == 1 and (tmp_path / "out" / "tiny" / "report.md").is_file()  # one report
    again = Command(*args[1:], program=[shutil.which("keras-cifar"), "run"])
    assert again.finish() == 0, again.output
    assert f"{victim_key}: resuming after epoch 1" in again.output
    assert RunFolder(tmp_path / "out" / victim_key).read_metrics().status == "completed"
