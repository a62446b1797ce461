"""Helpers the tests share: recipes, data written on the fly, fabricated run folders, a tiny model, and
the installed `keras-cifar` command run in a subprocess as a user runs it."""

import io
import math
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from keras_cifar.config import Config, RunSpec
from keras_cifar.core.record import DataSizes, Epoch, RunRecord
from keras_cifar.data import sources as data
from keras_cifar.training.runs import RunFolder

REPO = Path(__file__).resolve().parents[1]
WIDTH = 8  # the narrowest test model: PyTorch's CPU convolution hangs on AVX2-only CPUs with 4 channels


def tiny_recipe(tmp_path, variants="  a: {}\n", extra_base="", name="tiny"):
    """Write a small recipe (width 8, batch 32, 1 epoch, 64 validation / 64 test images, a checkpoint
    after every epoch) and return its path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ndescription: test recipe\nbase:\n"
        f"  model: {{width: {WIDTH}}}\n  data: {{batch_size: 32, eval_subset: 64}}\n"
        "  train: {epochs: 1, checkpoint_seconds: 0}\n" + extra_base + "variants:\n" + variants
    )
    return path


def as_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def write_jpeg_tree(out, train_per_class, test_per_class, seed=0):
    """A class-folder .tar.gz (``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``), laid out like
    the CIFAR-10 JPEG copy, of learnable synthetic images (data.synthetic's class patterns). Returns
    (path, the decoded arrays as data.load should read them: x_train, y_train, x_test, y_test)."""
    cifar = data.synthetic(10 * train_per_class, 10 * test_per_class, seed=seed)
    decoded = []
    with tarfile.open(out, "w:gz") as tar:
        for split, x, y in (("train", cifar.x_train, cifar.y_train), ("test", cifar.x_test, cifar.y_test)):
            order = np.lexsort((np.arange(len(y)), y))  # data.load reads class by class, files in name order
            for i, k in enumerate(order):
                buf = io.BytesIO()
                Image.fromarray(x[k]).save(buf, "JPEG", quality=90)
                info = tarfile.TarInfo(f"cifar10/{split}/{data.CLASS_NAMES[y[k]]}/{i:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
                decoded.append((split, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), y[k]))
    arrays = []
    for split in ("train", "test"):
        arrays += [
            np.stack([img for s, img, _ in decoded if s == split]),
            np.array([label for s, _, label in decoded if s == split], np.int32),
        ]
    return Path(out), tuple(arrays)


def make_run(
    out,
    recipe,
    variant,
    seed,
    final_acc,
    status="completed",
    epochs_done=4,
    epochs=4,
    config=None,
    seconds=(10.0, 8.0),
    tta_acc=None,
):
    """A finished (or unfinished, or diverged) run folder, written through runs.RunFolder as training
    writes it; accuracy climbs linearly to `final_acc`. "unfinished" writes no metrics.json (a run
    still going); "diverged" ends in a NaN loss. With `tta_acc` it evaluates with eval.tta: flip, its
    accuracy under it climbing to `tta_acc`. Returns the folder."""
    cfg = {
        "model": {"width": 8, "batch_norm": True},
        "data": {"batch_size": 32, "subset": 1000},
        "optimizer": {"learning_rate": 0.1},
        "schedule": {"name": "cosine"},
        "loss": "cross_entropy",
        "train": {"epochs": epochs, "seeds": [seed]},
    }
    if tta_acc is not None:
        cfg["eval"] = {"tta": "flip"}
    for section, values in (config or {}).items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    spec = RunSpec(recipe, variant, seed, Config.from_dict(cfg))
    folder = RunFolder.of(out, spec)
    folder.write_config(spec, "/data/cifar10-jpeg.tar.gz")
    rows = []
    for e in range(1, epochs_done + 1):
        acc = final_acc * e / epochs
        lr = 0.1 if spec.config.schedule.name == "constant" else 0.05 * (1 + math.cos(math.pi * e / epochs))
        loss = float("nan") if status == "diverged" and e == epochs_done else 2.0 - acc
        rows.append(
            Epoch(
                e,
                loss=loss,
                accuracy=acc,
                val_loss=loss,
                val_accuracy=acc - 0.01,
                test_loss=loss,
                test_accuracy=acc,
                lr=lr,
                epoch_seconds=seconds[0],
                train_seconds=seconds[1],
                **_tta_scores(tta_acc, e / epochs),
            )
        )
    folder.write_history(rows)
    if status != "unfinished":
        folder.write_metrics(
            RunRecord(
                status,
                recipe,
                variant,
                seed,
                epochs_completed=epochs_done,
                epochs=epochs,
                test_accuracy=None if status == "diverged" else final_acc,
                val_accuracy=final_acc - 0.01,
                best_val_accuracy=final_acc - 0.01,
                train_seconds=seconds[1] * epochs_done,
                wall_seconds=seconds[0] * epochs_done,
                images_per_second=125.0 if epochs_done > 1 else None,
                backend="jax",
                device="gpu: Test GPU",
                data=DataSizes("/data/cifar10-jpeg.tar.gz", 1000, 5000, 5000),
                **_tta_scores(tta_acc, 1.0),
                tta=None if tta_acc is None else "flip",
            )
        )
    return folder.path


def _tta_scores(tta_acc, share):
    """make_run's validation and test accuracy under TTA at `share` of its epochs; {} without TTA."""
    return {} if tta_acc is None else {"val_tta_accuracy": tta_acc * share, "test_tta_accuracy": tta_acc * share}


def tiny_compile_model(config, steps_per_epoch):
    """A stand-in for train.compile_model in tests of orchestration (tuner bookkeeping, resume,
    distribution): the config's optimizer, schedule and loss on a model of a few hundred weights."""
    from keras_cifar.nn.losses import get_loss
    from keras_cifar.nn.optim import make_optimizer

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.AveragePooling2D(8)(x)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=get_loss(config.loss),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def tiny_network(model, num_classes):
    """A second network for networks.MODELS (tests add it as "tiny" with `monkeypatch.setitem(
    MODELS.entries, ...)`): one strided convolution, pooling and logits, a few hundred weights."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(model.width, 3, strides=4)(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="tiny")


def tune_with_tiny_model(args):
    """`keras-cifar ARGS` with trials on tiny_compile_model, for tests that run the CLI in a subprocess
    (the distributed search: a chief and workers). Returns the exit code."""
    from keras_tuner.src.distribute import oracle_chief

    from keras_cifar.cli import main
    from keras_cifar.tools import tune

    tune.compile_model = tiny_compile_model
    # A chief polls every 20 s for trials still running when the search ends; 0.5 s keeps a test short.
    oracle_chief.time = type("Clock", (), {"sleep": staticmethod(lambda s: time.sleep(min(s, 0.5)))})
    try:
        main(args)
    except SystemExit as e:
        return e.code
    return 0


class Command:
    """The installed `keras-cifar` console script in a subprocess, as a user runs it: the test's
    KERAS_BACKEND and environment, a fresh interpreter (no imports done, no state set). Its output
    (stdout and stderr) is collected line by line while it runs."""

    def __init__(self, *args, cwd=None, env=None, program=None):
        """`program` (a list) runs instead of keras-cifar, in a session of its own (see `signal_all`)."""
        script = shutil.which("keras-cifar")
        assert script, "the keras-cifar command is not installed: pip install -e '.[test]'"
        self.proc = subprocess.Popen(
            [*(program or [script]), *map(str, args)],
            cwd=cwd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=program is not None,
        )
        self.lines = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(line.rstrip("\n") for line in self.proc.stdout), daemon=True
        )
        self._reader.start()

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, timeout=180):
        """The first output line that matches the regular expression `pattern`, once it is printed."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((line for line in list(self.lines) if re.search(pattern, line)), None)
            if found is not None:
                return found
            ended = self.proc.poll() is not None
            if ended or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(
                    f"no line matching {pattern!r} ({'the command ended' if ended else 'timed out'}):\n{self.output[-3000:]}"
                )
            time.sleep(0.05)

    def finish(self, timeout=540):
        """Wait for the command to end; returns its exit code."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"keras-cifar did not end within {timeout} s:\n{self.output[-3000:]}") from None
        self._reader.join()
        return self.proc.returncode

    def stop(self, *signums):
        """Send each of `signums`, one right after the other, and wait for the command to end; returns its
        exit code."""
        for signum in signums:
            self.proc.send_signal(signum)
        return self.finish(60)

    def signal_all(self, signum):
        """Send `signum` to the program and every process it started, as a scheduler does to a job (SIGTERM
        to preempt it, SIGKILL after the grace period); returns the exit code."""
        os.killpg(self.proc.pid, signum)
        return self.finish(60)


def lacking(tmp_path, *modules):
    """The environment of a subprocess in which `modules` cannot be imported, as in a venv without them: a
    sitecustomize.py on PYTHONPATH sets them to None in sys.modules (importlib.util.find_spec then finds
    nothing, and `import` fails)."""
    folder = tmp_path / "lacking"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def keras_cifar(*args, timeout=540, cwd=None):
    """Run the installed `keras-cifar ARGS` to its end; returns (exit code, output)."""
    command = Command(*args, cwd=cwd)
    return command.finish(timeout), command.output


def keras_cifar_each(commands, lanes=2, cwd=None):
    """Run several `keras-cifar` commands in `cwd`, `lanes` at a time (each is mostly single-threaded
    compilation on a 2-core machine); returns [(exit code, output)] in order."""
    with ThreadPoolExecutor(lanes) as pool:
        return list(pool.map(lambda args: keras_cifar(*args, cwd=cwd), commands))
