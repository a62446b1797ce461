"""The command line's contract: mistakes are one-line errors with exit code 2, found before Keras is
imported; a wrong backend is named with its fix; the command list of --help is whole. (That TensorFlow
starts without its log lines is checked in test_cluster.py, on commands run as a user runs them.)"""

import subprocess
import sys
import textwrap

import pytest

from keras_cifar.config import Config
from keras_cifar.core import backend
from keras_cifar.core.errors import BackendError
from tests.helpers import REPO, Command, lacking, tiny_recipe


def test_mistakes_are_reported_before_keras_is_imported(tmp_path):
    """Each case fails with exit code 2 and its message while neither Keras nor TensorFlow is loaded,
    so the answer comes in about a second instead of after TensorFlow's 5-30 s import."""
    recipe = tiny_recipe(tmp_path)
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / "empty").mkdir()
    for name, tta in (("tta", "flip"), ("bad_tta", "mirror")):  # exports (SavedModel) made with export --tta
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "saved_model.pb").write_bytes(b"")
        (tmp_path / name / "1" / "tta.txt").write_text(tta)
    cases = [
        (["run", recipe, "--set", "model.widht=16"], "unknown key 'model.widht'"),
        (["run", recipe, "--data", tmp_path / "notes.txt"], "not a folder or a .tar(.gz) archive"),
        (["run", recipe, "--data", tmp_path / "empty"], "no CIFAR-10 copy found in it"),
        (["run", recipe, "--data", tmp_path / "missing", "--dry-run"], "no such file or folder"),
        (["tune", recipe, "--set", "tune.tuner=grid"], "tune.tuner: 'grid' is not allowed"),
        (["run", recipe, "--set", "eval.tta=flips"], "eval.tta: 'flips' is not allowed"),
        (["run", recipe, "--set", "data.flip=alternating", "--set", "data.augment=false"], "needs data.augment: true"),
        (["predict", tmp_path, tmp_path / "empty"], "no image files in"),
        (["export", tmp_path], "not a run folder, model file or export folder"),
        (["evaluate", tmp_path, "--data", "synthetic:100"], "not a run folder, model file or export folder"),
        (["serve", tmp_path / "empty"], "not a run folder, model file or export folder"),
        (["evaluate", tmp_path / "tta", "--tta", "mirror"], "'mirror' is not one of 'none', 'flip', 'flip_translate'"),
        (["predict", tmp_path / "tta", tmp_path / "notes.txt", "--tta", "none"], "computes test-time augmentation flip"),
        (["evaluate", tmp_path / "bad_tta"], "tta.txt: names no test-time augmentation ('mirror')"),
        (["landscape", tmp_path / "empty"], "not a run folder (no config.yaml)"),
        (["landscape", tmp_path, tmp_path / "empty"], "several RUN_DIRs are compared in one figure"),
    ]
    script = textwrap.dedent("""
        import sys, click
        from keras_cifar.cli import main
        for args in CASES:
            try:
                main([str(a) for a in args], standalone_mode=False)
                print("no error")
            except click.ClickException as e:
                print(e.exit_code, e.format_message().replace("\\n", " "))
            print("imported:", sorted({"keras", "tensorflow", "jax", "torch"} & set(sys.modules)))
    """).replace("CASES", repr([[str(a) for a in args] for args, _ in cases]))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 2 * len(cases), done.stdout + done.stderr
    for (args, message), result, imported in zip(cases, lines[::2], lines[1::2]):
        assert result.startswith("2 ") and message in result, (args, result)
        assert imported == "imported: []", (args, imported)


def test_mistakes_as_users_make_them_are_one_line_before_keras_is_imported(tmp_path):
    """The installed `keras-cifar`, with Python's import log on (PYTHONPROFILEIMPORTTIME): each mistake is
    one line on stderr with exit code 2 while no module of Keras or a backend has been imported."""
    recipe = tiny_recipe(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")  # a model folder, as far as can be told before loading
    cases = [
        ([recipe, "--set", "model.activation=rleu"], {}, "model.activation: 'rleu' is not allowed; use relu, tanh"),
        (
            [recipe, "--set", "loss=multi_margin", "--set", "loss_options.label_smoothing=0.2"],
            {},
            "command line: loss_options.label_smoothing applies to the cross_entropy loss only, not multi_margin",
        ),
        (["predict", tmp_path / "run", tmp_path / "notes.txt"], {}, "notes.txt: not a readable image"),
        (
            [recipe, "--dry-run"],
            {"KERAS_CIFAR_DATA": "missing.tar.gz"},
            f"KERAS_CIFAR_DATA=missing.tar.gz: {tmp_path / 'missing.tar.gz'}: no such file or folder",
        ),
        (
            [recipe, "--data", tmp_path / "notes.txt"],
            {},
            f"{tmp_path / 'notes.txt'}: not a folder or a .tar(.gz) archive; --data accepts a CIFAR-10 copy "
            "(binary / python / images), a TFDS data dir or synthetic[:N] (docs/recipes.md#data)",
        ),
        (["bench", "--backends", "jax"], lacking(tmp_path, "jax"), "--backends=jax, but jax is not installed"),
    ]
    for args, env, message in cases:
        args = ["run", "--out", tmp_path / "out", *args] if args[0] == recipe else args
        command = Command(*args, env={"PYTHONPROFILEIMPORTTIME": "1", **env}, cwd=tmp_path)
        code = command.finish(120)
        imported = [line.rpartition("|")[2].strip() for line in command.lines if line.startswith("import time:")]
        said = [line for line in command.lines if not line.startswith("import time:")]
        assert code == 2 and len(said) == 1 and said[0].startswith("Error: ") and message in said[0], (args, said)
        assert not {m.split(".")[0] for m in imported} & {"keras", "tensorflow", "jax", "torch"}, args
    assert not (tmp_path / "out").exists()


def test_every_command_has_a_first_line_that_fits_the_command_list():
    """`keras-cifar --help` in an 80-column terminal lists each command with its whole first line (click
    cuts a longer one to '...'), and so does `keras-cifar recipes --help` for its subcommand."""
    from keras_cifar.cli import main

    for args, group in (([], main), (["recipes"], main.commands["recipes"])):
        command = Command(*args, "--help", env={"COLUMNS": "80"})
        assert command.finish(60) == 0, command.output
        listed = command.lines[command.lines.index("Commands:") + 1 :]
        shown = dict(line.split(maxsplit=1) for line in listed if line.strip())
        assert shown == {name: " ".join(cmd.help.partition("\n\n")[0].split()) for name, cmd in group.commands.items()}, (
            command.output
        )


def test_unknown_or_missing_backend_is_one_line_with_the_fix(tmp_path, cli, monkeypatch):
    recipe = tiny_recipe(tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", "pytorch")
    result = cli("run", recipe, "--data", "synthetic:100", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: KERAS_BACKEND=pytorch is not a backend keras-cifar runs on; set KERAS_BACKEND to tensorflow, jax or torch"
    )
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    result = cli("run", recipe, "--data", "synthetic:100", "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 2 and 'jax is not installed: pip install -e ".[jax]"' in result.output
    assert not (tmp_path / "out").exists()


def test_narrow_models_are_refused_where_pytorch_hangs(monkeypatch):
    """PyTorch's CPU convolution breaks on 4-channel 1x1 stride-2 layers without AVX-512."""
    config = Config.from_dict({"model": {"width": 4}})
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    monkeypatch.setattr(backend, "_torch_cpu_lacks_avx512", lambda: True)
    with pytest.raises(BackendError, match="model.width 4 on PyTorch's CPU without AVX-512 would hang"):
        backend.check_settings(config, "tiny/a/seed0")
    backend.check_settings(config.updated({"model": {"width": 8}}), "tiny/a/seed0")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    backend.check_settings(config, "tiny/a/seed0")
