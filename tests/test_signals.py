"""SIGINT and SIGTERM: no stop is lost, whenever it comes, and the command that stopped resumes."""

import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from keras_cifar.core.record import HISTORY_COLUMNS
from keras_cifar.nn import custom_objects
from keras_cifar.training.runs import RunFolder
from tests.helpers import REPO, Command, as_numpy, tiny_recipe

SCORES = [c for c in HISTORY_COLUMNS if not c.endswith("seconds")]


@pytest.mark.backend
def test_no_stop_is_lost_whenever_it_comes_and_the_run_ends_as_if_never_stopped(tmp_path):
    """14 tries of one command, each stopped by SIGINT or SIGTERM in a window chosen on purpose (a random
    moment, the first step's compilation, the test evaluation, a checkpoint being written, between
    history.csv and the checkpoint, a garbage collection: where the previous main's handler raised into
    a gc callback, Python ignored it and the run trained on). Every try exits 130 or 143 with its one
    line, the next resumes from the epoch it kept, and the run then ends as the same command trained
    straight through does, to the bit: train.deterministic, whose kernels are the backends' deterministic
    ones (TensorFlow's op determinism, PyTorch's deterministic algorithms), runs on every backend."""
    recipe = tmp_path / "storm.yaml"
    recipe.write_text(
        "name: storm\ndescription: signal test\nbase:\n  model: {name: tiny_cnn, width: 8}\n"
        "  data: {batch_size: 32, eval_subset: 64}\n  train: {epochs: 60, checkpoint_seconds: 0.3, deterministic: true}\n"
        "variants:\n  a: {}\n"
    )
    out = tmp_path / "out"
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.interrupt_worker",
            str(out),
            "14",
            "7",
            "--",
            "run",
            str(recipe),
            "--data",
            "synthetic:160",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    lines = [json.loads(line) for line in worker.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 16, worker.stdout + worker.stderr
    kept = 0
    for i, stop in enumerate(lines[:-2]):
        name = stop["signal"]
        assert stop["exit_code"] == 128 + signal.Signals[name], (i, stop)
        assert re.fullmatch(  # stopped in the run, or before it began
            rf"interrupted \({name}\): (storm/a/seed0 stopped after epoch \d+ of 60(, checkpoint of epoch \d+ kept)?|"
            "completed runs are kept); run the same command again to resume",
            stop["last_line"],
        ), (i, stop)
        assert not stop["noise"], (i, stop)
        began = "stopped after epoch" in stop["last_line"]  # else stopped before the run began (a timer at start-up)
        assert stop["resumed"] in ((kept,) if began else (0, kept)), (i, stop)  # the rerun resumes from what was kept
        found = re.search(r"checkpoint of epoch (\d+) kept", stop["last_line"])
        kept = int(found.group(1)) if found else kept
    assert kept >= 5  # the stops came throughout the run, not all before its first epoch
    assert [line["exit_code"] for line in lines[-2:]] == [0, 0]
    stopped, straight = RunFolder(out / "storm/a/seed0"), RunFolder(tmp_path / "out-straight/storm/a/seed0")
    assert [[getattr(r, c) for c in SCORES] for r in stopped.read_history()] == [
        [getattr(r, c) for c in SCORES] for r in straight.read_history()
    ]
    for a, b in zip(custom_objects.load(stopped.model_file).weights, custom_objects.load(straight.model_file).weights):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))


def test_a_second_signal_ends_the_command_at_once(tmp_path, jpeg_tree):
    """The first signal (SIGINT) asks the run to stop at its next batch; a second one right after it (SIGTERM:
    two of one kind coalesce before Python sees them) ends the command at once, exit 143 and one line."""
    command = Command("run", tiny_recipe(tmp_path), "--data", jpeg_tree[0], "--out", tmp_path / "out", "--epochs", "50")
    command.wait_for(r"tiny/a/seed0 epoch +1/")
    code = command.stop(signal.SIGINT, signal.SIGTERM)
    assert code == 143, command.output
    assert command.output.strip().splitlines()[-1] == (
        "interrupted again (SIGTERM): stopped at once; run the same command again to resume"
    )
