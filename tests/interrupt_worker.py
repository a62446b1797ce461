"""A process that runs one `keras-cifar run` command again and again, as the installed script runs it
(``cli.main``), and stops each try with SIGINT or SIGTERM in a window chosen on purpose, for
tests/test_signals.py. Keras and the backends are imported once, so a try costs about a second: the
command trains a tiny network registered here (``model.name: tiny_cnn``), whose windows are those of
ResNet-18, only shorter.

    python -m tests.interrupt_worker OUT TRIES SEED -- RUN ARGS...

Prints one JSON line per try: its window, signal, exit code, the last line it wrote, whether the try
wrote "Exception ignored" or a traceback, and the "resuming after epoch" it began with. Then the same
command runs once more without a signal, and once into OUT-straight (a line each, with its exit code),
so that the caller can compare the interrupted run with one trained straight through."""

import contextlib
import gc
import io
import json
import os
import random
import re
import signal
import sys
import threading


def _register_tiny_network():
    import keras

    from keras_cifar.nn.networks import MODELS

    @MODELS.add("tiny_cnn", "two convolutions: the signal test's network")
    def tiny_cnn(model, num_classes):
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(model.width, 3, strides=2, activation=model.activation)(inputs)
        x = keras.layers.Conv2D(model.width, 3, strides=2, activation=model.activation)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="tiny_cnn")


def _send(signum):
    os.kill(os.getpid(), signum)


class Windows:
    """Where a try's signal is sent: each window patches the code it lands in, once per try."""

    def __init__(self, rng):
        import keras

        from keras_cifar.training import callbacks, runs

        self.rng, self.signum, self.window, self.timers = rng, None, None, []
        self.patch(callbacks.Recorder, "on_train_begin", self._compile)  # a timer that fires while the first step compiles
        self.patch(callbacks.Evaluation, "on_epoch_end", self._evaluation)
        self.patch(keras.Model, "save", self._checkpoint)  # a checkpoint (or the model at the end)
        self.patch(runs.RunFolder, "write_history", self._history)  # after history.csv, before the checkpoint
        gc.callbacks.append(self._gc)  # inside a garbage collection, where a raise would be ignored

    def patch(self, owner, name, wrapper):
        original = getattr(owner, name)

        def patched(*args, **kwargs):
            return wrapper(original, *args, **kwargs)

        setattr(owner, name, patched)

    def arm(self, window, signum):
        self.window, self.signum = window, signum
        if window == "timer":  # any moment of the command: data, model, compilation, training, evaluation
            self.later(self.rng.uniform(0.0, 1.0), signum)

    def later(self, seconds, signum):
        timer = threading.Timer(seconds, _send, (signum,))
        self.timers.append(timer)
        timer.start()

    def disarm(self):
        """After a try: no signal is left to come."""
        self.signum = None
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()

    def fire(self, window):
        if self.window == window and self.signum:
            signum, self.signum = self.signum, None
            _send(signum)

    def _compile(self, original, *args, **kwargs):
        if self.window == "compile" and self.signum:
            signum, self.signum = self.signum, None
            self.later(self.rng.uniform(0.0, 0.3), signum)
        return original(*args, **kwargs)

    def _evaluation(self, original, *args, **kwargs):
        if self.rng.random() < 0.5:
            self.fire("evaluation")
        return original(*args, **kwargs)

    def _checkpoint(self, original, *args, **kwargs):  # a timer that fires while the file is written
        if self.window == "checkpoint" and self.signum:
            signum, self.signum = self.signum, None
            self.later(self.rng.uniform(0.0, 0.05), signum)
        return original(*args, **kwargs)

    def _history(self, original, *args, **kwargs):
        original(*args, **kwargs)
        if self.rng.random() < 0.5:
            self.fire("history")

    def _gc(self, phase, info):
        if phase == "start" and self.window == "gc" and self.signum and self.rng.random() < 0.2:
            signum, self.signum = self.signum, None
            _send(signum)


def _try(args):
    """Run the command once in this process: (exit code, stderr text)."""
    from keras_cifar.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            main(args, standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def main():
    out, tries, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1 :] + ["--out", out]
    for s in (signal.SIGINT, signal.SIGTERM):  # between tries a late signal is ignored; the command sets its own
        signal.signal(s, signal.SIG_IGN)
    import jax  # noqa: F401  (installed, as the test extra has it: its garbage-collection callback is there too)

    from keras_cifar.core import backend

    backend.start()
    _register_tiny_network()
    rng = random.Random(seed)
    windows = Windows(rng)
    names = ["timer", "compile", "evaluation", "checkpoint", "history", "gc"]
    for i in range(tries):
        window, signum = names[i % len(names)], (signal.SIGINT, signal.SIGTERM)[i % 2]
        windows.arm(window, signum)
        code, text = _try(args)
        windows.disarm()
        resumed = re.search(r"resuming after epoch (\d+)", text)
        print(
            json.dumps(
                {
                    "window": window,
                    "signal": signal.Signals(signum).name,
                    "exit_code": code,
                    "last_line": text.strip().splitlines()[-1] if text.strip() else "",
                    "noise": "Exception ignored" in text or "Traceback" in text,
                    "resumed": int(resumed.group(1)) if resumed else 0,
                }
            ),
            flush=True,
        )
    windows.window = None
    for folder in (out, out + "-straight"):  # the same command once more, then straight through elsewhere
        code, text = _try(args[:-1] + [folder])
        print(json.dumps({"window": None, "exit_code": code, "last_line": text.strip().splitlines()[-1]}), flush=True)


if __name__ == "__main__":
    main()
