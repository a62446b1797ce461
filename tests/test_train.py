"""Training end to end through the CLI: run folders, divergence, mixed precision, learning and resume
on every backend; refusal, reuse and planning on copies of the shared sweep."""

import io
import json
import math
import re
import shutil
import signal
import types
import zipfile

import keras
import numpy as np
import pytest

from keras_cifar import config as config
from keras_cifar.core.record import ALL_COLUMNS, HISTORY_COLUMNS, DataSizes
from keras_cifar.nn import custom_objects
from keras_cifar.training import callbacks, decisions, sweep, train
from keras_cifar.training.runs import RunFolder
from tests.helpers import as_numpy, make_run, tiny_compile_model, tiny_recipe


def _metrics(run_dir):
    return RunFolder(run_dir).read_metrics()


@pytest.mark.backend
def test_sweep_writes_run_folders_and_goes_on_after_a_divergence(trained):
    assert trained.exit_code == 0, trained.output
    assert "ETA" in trained.output and "test acc" in trained.output and "3 runs, 12 epochs" in trained.output
    lines = trained.output.splitlines()  # the sweep's table and the report's name their times apart
    assert next(line for line in lines if line.startswith("variant ")).split()[-3:] == ["training", "wall", "time"]
    assert "| status | training time per run | images/s |" in trained.output
    for variant, epochs in (("a", 8), ("bf16", 2)):
        folder = RunFolder(trained.out / "tiny" / variant / "seed0")
        ident, source, config = folder.read_config()
        assert ident == {"recipe": "tiny", "variant": variant, "seed": 0} and source == str(trained.data)
        assert config.train.mixed_precision == (variant == "bf16")
        rows = folder.read_history()
        assert [r.epoch for r in rows] == list(range(1, epochs + 1))
        columns = ALL_COLUMNS if variant == "a" else HISTORY_COLUMNS  # a evaluates with eval.tta: flip too
        assert (folder.path / "history.csv").read_text().splitlines()[0] == ",".join(columns)
        metrics = folder.read_metrics()
        assert metrics.status == "completed" and metrics.epochs_completed == epochs
        assert metrics.backend == keras.backend.backend()
        assert metrics.data == DataSizes(str(trained.data), 320 if variant == "a" else 160, 64, 64)
        assert metrics.test_accuracy == pytest.approx(rows[-1].test_accuracy)
        model = keras.saving.load_model(folder.model_file)
        assert model.output_shape == (None, 10)
        if variant == "a":  # TTA scores beside the plain ones, every epoch; the model saved with its averaged weights
            assert all(math.isfinite(getattr(r, c)) for r in rows for c in ALL_COLUMNS[len(HISTORY_COLUMNS) :])
            assert metrics.tta == "flip" and metrics.reported_accuracy == metrics.test_tta_accuracy
            assert (metrics.test_tta_accuracy, metrics.val_tta_accuracy) == pytest.approx(
                (rows[-1].test_tta_accuracy, rows[-1].val_tta_accuracy)
            )
            for weight, average in zip(model.trainable_weights, model.optimizer._model_variables_moving_average, strict=True):
                np.testing.assert_array_equal(as_numpy(weight), as_numpy(average))
        else:
            assert metrics.tta is None and metrics.test_tta_accuracy is None
        assert folder.checkpoints() == [] and not list(folder.path.glob(".*"))  # no checkpoint, lock or temporary
    lrs = [r.lr for r in RunFolder(trained.out / "tiny" / "a" / "seed0").read_history()]
    assert lrs == pytest.approx(_last_step_rates(), abs=1e-6)  # cosine, as each epoch's last step used it
    assert _metrics(trained.out / "tiny" / "bf16" / "seed0").images_per_second > 0  # epoch 2, compiled
    boom = _metrics(trained.out / "tiny" / "boom" / "seed0")
    assert boom.status == "diverged" and boom.epochs_completed == 1 and boom.test_accuracy is None
    assert "tiny/boom/seed0: diverged" in trained.output
    assert [line.split()[2] for line in trained.output.splitlines() if line.startswith(("a ", "bf16 ", "boom "))] == [
        "completed",
        "completed",
        "diverged",
    ]
    (hparams,) = _hparams(trained.out / "tiny" / "a" / "seed0" / "tb")  # written once, at the start
    assert {k: hparams[k] for k in ("model.width", "train.epochs", "data.subset", "variant", "seed")} == {
        "model.width": 8,
        "train.epochs": 8,
        "data.subset": 320,
        "variant": "a",
        "seed": 0,
    }


def _last_step_rates():
    """The rate of each epoch's last step for `a`: cosine from 0.05 over 8 epochs of 10 steps."""
    return [0.025 * (1 + math.cos(math.pi * (10 * e - 1) / 80)) for e in range(1, 9)]


def _hparams(logdir):
    """The hparams of each session in `logdir`'s event files, as TensorBoard's HParams dashboard reads them."""
    from google.protobuf import json_format
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    values = [
        value
        for path in sorted(logdir.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "hparams"
    ]
    starts = [plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info for v in values]
    return [{k: json_format.MessageToDict(v) for k, v in start.hparams.items()} for start in starts if start.hparams]


@pytest.mark.backend
def test_a_killed_or_signalled_run_resumes_from_its_last_epoch(trained, cli):
    """SIGKILL loses at most the epoch under way; SIGTERM and SIGINT write the last finished epoch's
    checkpoint (the run checkpoints hourly there), say so in one line and exit 143 / 130."""
    killed, *signalled = trained.stops
    assert killed.exit_code == -signal.SIGKILL and killed.checkpoint >= 1 and len(killed.history) >= killed.checkpoint
    for stop, code, name in zip(signalled, (143, 130), ("SIGTERM", "SIGINT")):
        assert stop.exit_code == code, stop.output
        epoch = len(stop.history)
        assert epoch > stop.resumed and stop.checkpoint == epoch  # the signal's checkpoint: the last finished epoch
        assert stop.output.splitlines()[-1] == (
            f"interrupted ({name}): tiny/a/seed0 stopped after epoch {epoch} of 8,"
            f" checkpoint of epoch {epoch} kept; run the same command again to "
            "resume"
        )
        assert "Traceback" not in stop.output
        assert [f for f in stop.files if f.startswith(".")] == []  # no lock, no temporary file
    assert f"tiny/a/seed0: resuming after epoch {signalled[-1].checkpoint}" in trained.output
    folder = RunFolder(trained.out / "tiny" / "a" / "seed0")
    after = folder.read_history()
    assert [r.epoch for r in after] == list(range(1, 9))
    assert after[: signalled[-1].checkpoint] == signalled[-1].history  # the epochs before the stop are kept
    assert after[-1].lr == pytest.approx(_last_step_rates()[-1], abs=1e-6)  # the schedule went on from where it stopped
    assert folder.read_metrics().epochs_completed == 8
    assert (
        "already completed, skipped"
        in cli("run", trained.recipe, "--data", trained.data, "--out", trained.out, "--variants", "a").output
    )


@pytest.mark.backend
def test_a_stopped_and_resumed_run_equals_the_run_trained_straight_through(trained):
    """`a` stopped by SIGKILL, SIGTERM and SIGINT and resumed each time, augmentation on, ends with the history
    and weights of the same command trained without a stop, to the bit (one CPU thread): every random draw
    is in the checkpoint (the previous main restarted the augmentation's stream on a resume). `a` has the
    tricks on (alternating flip, weight averaging, label smoothing, flip TTA): their state is resumed too."""
    scores = [c for c in ALL_COLUMNS if not c.endswith("seconds")]  # the TTA scores too
    stopped = RunFolder(trained.out / "tiny" / "a" / "seed0")
    assert [[getattr(r, c) for c in scores] for r in stopped.read_history()] == [
        [getattr(r, c) for c in scores] for r in trained.straight.read_history()
    ]
    for a, b in zip(custom_objects.load(stopped.model_file).weights, custom_objects.load(trained.straight.model_file).weights):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
    assert _metrics(trained.straight.path).status == "completed"


@pytest.mark.backend
def test_the_model_learns(trained):
    """Eight epochs on 320 images of 10 learnable patterns: far above chance (10%) on held-out images."""
    folder = RunFolder(trained.out / "tiny" / "a" / "seed0")
    assert folder.read_metrics().test_accuracy > 0.5
    assert folder.read_history()[-1].accuracy > 0.8


@pytest.mark.backend
def test_the_gpu_defaults_on_the_cpu(trained, tmp_path, cli):
    """bf16 ran as a GPU runs by default: mixed_bfloat16, and on TensorFlow and JAX 8 steps per execution
    (more than its 5 steps an epoch) and XLA. Each epoch trained its 5 steps, and metrics.json records
    the settings it trained with."""
    folder = trained.out / "tiny" / "bf16" / "seed0"
    model = keras.saving.load_model(folder / "model.keras")
    assert model.get_layer("resnet18").get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"  # logits stay float32
    assert int(as_numpy(model.optimizer.iterations)) == 2 * 5  # 2 epochs of ceil(160 / 32) steps
    metrics, gpu_defaults = _metrics(folder), keras.backend.backend() != "torch"
    assert (metrics.precision, metrics.steps_per_execution, metrics.jit_compile) == (
        "mixed_bfloat16",
        8 if gpu_defaults else 1,
        gpu_defaults,
    )
    if keras.backend.backend() == "torch":  # refused before anything is written
        result = cli(
            "run",
            tiny_recipe(tmp_path),
            "--data",
            "synthetic:100",
            "--out",
            tmp_path / "out",
            "--set",
            "train.steps_per_execution=2",
        )
        assert result.exit_code == 2 and "steps_per_execution must be 1 on the PyTorch backend" in result.output
        assert not (tmp_path / "out").exists()


def _copy(trained, tmp_path):
    return shutil.copytree(trained.out, tmp_path / "out")


@pytest.mark.backend
def test_run_folder_with_another_config_is_refused_also_by_the_dry_run(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    for extra in ((), ("--dry-run",)):
        result = cli("run", trained.recipe, "--data", trained.data, "--out", out, "--set", "model.width=16", *extra)
        assert result.exit_code == 2, result.output
        assert "different config (differs in model.width)" in result.output


@pytest.mark.backend
def test_equal_config_in_another_recipe_is_reused(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(trained.recipe.read_text().replace("name: tiny", "name: other").replace("  a: ", "  same: "))
    result = cli("run", other, "--data", trained.data, "--out", out, "--variants", "same")
    assert "same config as tiny/a/seed0, reused" in result.output
    reused, original = _metrics(out / "other/same/seed0"), _metrics(out / "tiny/a/seed0")
    assert reused.variant == "same" and reused.reused_from == "tiny/a/seed0"
    assert reused.test_accuracy == original.test_accuracy


@pytest.mark.backend
def test_dry_run_says_what_is_done_and_estimates_the_rest(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    args = ("run", trained.recipe, "--out", out, "--variants", "a,boom", "--seeds", "0,1", "--dry-run")
    lines = cli(*args, "--data", trained.data).output.splitlines()
    assert lines[0] == "tiny/a/seed0: already completed"
    assert re.fullmatch(r"tiny/a/seed1: new, width 8, 8 epochs, batch 32, about \d+m\d\ds", lines[1])  # timed by seed 0
    assert lines[2] == "tiny/boom/seed0: already diverged"
    assert re.fullmatch(r"estimated total: at least \d+m\d\ds, plus 1 run at a scale not timed yet \(.*\)", lines[4])
    result = cli(*args, "--data", tmp_path / "missing.tar.gz")  # refused as the real run would
    assert result.exit_code == 2 and "missing.tar.gz: no such file or folder" in result.output


def _unfinished(run, checkpoints):
    """Make the finished run folder `run` an interrupted one after epoch 1, holding `checkpoints`
    {file name: bytes}."""
    for name in ("metrics.json", "model.keras"):
        (run.path / name).unlink(missing_ok=True)
    run.remove_checkpoints()
    run.write_history(run.read_history()[:1])
    for name, content in checkpoints.items():
        (run.path / name).write_bytes(content)


@pytest.mark.backend
def test_an_unreadable_checkpoint_falls_back_or_says_how_to_restart(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    run = RunFolder(out / "tiny" / "bf16" / "seed0")
    state = run.model_file.read_bytes()  # the compiled model with its optimizer: a readable checkpoint
    args = ("run", trained.recipe, "--data", trained.data, "--out", out, "--variants", "bf16")
    _unfinished(run, {"checkpoint-epoch1.keras": state, "checkpoint-epoch2.keras": state[:1000]})
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert (
        "tiny/bf16/seed0: checkpoint-epoch2.keras cannot be read (BadZipFile: File is not a zip file); "
        "resuming from checkpoint-epoch1.keras"
    ) in result.output
    assert [r.epoch for r in run.read_history()] == [1, 2] and run.read_metrics().status == "completed"

    foreign = io.BytesIO()  # a whole archive whose model cannot be built, as from another Keras version
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "NoSuchModel", "config": {}}))
        archive.writestr("metadata.json", json.dumps({"keras_version": "9.0.0"}))
        archive.writestr("model.weights.h5", b"")
    (tmp_path / "state.keras").write_bytes(state)
    with pytest.MonkeyPatch.context() as mp:  # a checkpoint of an older version, whose optimizer lacked a variable
        mp.setattr(
            custom_objects._ScheduleSteps,
            "build",
            lambda self, variables: super(custom_objects._ScheduleSteps, self).build(variables),
        )
        older = custom_objects.load(tmp_path / "state.keras")
        older.optimizer.iterations.assign(5)
        older.save(tmp_path / "older.keras")
    fix = "; run the same command with --restart to train tiny/bf16/seed0 again from epoch 0"
    for content, why in (
        (b"", f"{run.path / 'checkpoint-epoch1.keras'}: cannot be read (BadZipFile: "),
        (foreign.getvalue(), f"{run.path}: checkpoint-epoch1.keras cannot be read ("),
        (
            (tmp_path / "older.keras").read_bytes(),
            f"{run.path}: checkpoint-epoch1.keras cannot be read (ValueError: its optimizer state did not load",
        ),
    ):
        _unfinished(run, {"checkpoint-epoch1.keras": content})
        for extra in ((), ("--dry-run",)) if content == b"" else ((),):
            result = cli(*args, *extra)
            assert result.exit_code == 2, result.output
            (line,) = result.output.strip().splitlines()[-1:]
            assert line.startswith(f"Error: {why}") and line.endswith(fix) and "Traceback" not in result.output
    assert cli(*args, "--restart", "--dry-run").output.startswith("tiny/bf16/seed0: new,")
    result = cli(*args, "--restart")
    assert result.exit_code == 0, result.output
    assert [r.epoch for r in run.read_history()] == [1, 2] and run.checkpoints() == []


@pytest.mark.backend
def test_a_run_stopped_after_its_last_checkpoint_is_finished_without_training(trained, tmp_path, cli):
    """Stopped (a scheduler's time limit, say) between its last epoch's checkpoint and model.keras, the run
    is finished by the rerun: its model, metrics and report, without training. The previous main resumed
    it at its last epoch, failed ('need at least one array to concatenate') and did so at every rerun;
    the failed metrics.json it left is no obstacle."""
    out = _copy(trained, tmp_path)
    run = RunFolder(out / "tiny" / "bf16" / "seed0")
    history, state, finished = run.read_history(), run.model_file.read_bytes(), _metrics(run.path)
    for left in (None, finished.replace(status="failed", error="ValueError: need at least one array to concatenate")):
        for name in ("metrics.json", "model.keras"):
            (run.path / name).unlink(missing_ok=True)
        (run.path / "checkpoint-epoch2.keras").write_bytes(state)
        if left:
            run.write_metrics(left)
        result = cli("run", trained.recipe, "--data", trained.data, "--out", out, "--variants", "bf16")
        assert result.exit_code == 0, result.output
        assert "tiny/bf16/seed0: all 2 epochs were trained before it stopped; writing its model and metrics" in result.output
        assert not re.search(r"bf16/seed0 epoch +\d", result.output)  # nothing trained
        assert run.read_history() == history and run.checkpoints() == [] and run.model_file.is_file()
        metrics = run.read_metrics()
        assert metrics.status == "completed" and metrics.test_accuracy == finished.test_accuracy


@pytest.mark.backend  # it reads the backend pass's `trained` sweep, which the other pass would train again
def test_a_run_is_decided_again_once_its_lock_is_taken(trained, tmp_path, capsys):
    """The sweep decided to start bf16 anew; before it came to the run, another process trained its first
    epoch and was preempted. Once it holds the lock, the run reads its folder again and resumes from that
    checkpoint (the previous main deleted it and trained from epoch 0)."""
    from keras_cifar.data import sources as data_lib

    out = tmp_path / "out"
    source = data_lib.canonical_source(str(trained.data))
    (spec,) = config.sweep(config.load_recipe(trained.recipe), variants=["bf16"], seeds=[0])
    (decision,) = decisions.decide_all([spec], out, source)
    assert decision.action == "new"
    run = RunFolder(shutil.copytree(trained.out / "tiny" / "bf16" / "seed0", out / "tiny" / "bf16" / "seed0"))
    _unfinished(run, {"checkpoint-epoch1.keras": run.model_file.read_bytes()})
    splits = data_lib.split(data_lib.load(source), spec.config.data.subset, spec.config.data.eval_subset)
    metrics = train.train_run(spec, decision, splits, sweep.Sweep([spec], out, source))
    assert "tiny/bf16/seed0: resuming after epoch 1" in capsys.readouterr().out
    assert metrics.status == "completed" and [r.epoch for r in run.read_history()] == [1, 2]


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_resumes(tmp_path, cli, full_disk):
    disk, free = full_disk
    args = ("run", tiny_recipe(tmp_path), "--data", "synthetic:100", "--out", disk / "runs", "--epochs", "2")
    result = cli(*args)
    assert result.exit_code == 2, result.output
    run = disk / "runs" / "tiny" / "a" / "seed0"
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {run}: cannot write checkpoint-epoch1.keras (No space left on device); free some space or fix the "
        "folder's permissions, then run the same command again"
    )
    assert [p.name for p in disk.rglob(".*")] == []  # no temporary file, no lock
    free()
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert RunFolder(run).read_metrics().status == "completed"


class _Model:
    """What Recorder uses of a model."""

    stop_training = False
    weights = variables = ()

    def save(self, path):
        zipfile.ZipFile(path, "w").close()


def test_training_time_waits_for_the_last_dispatched_step(tmp_path, monkeypatch):
    """JAX (and PyTorch on a GPU) return from a step before it has run: the epoch's training time
    ends when the last step has, which reading the step counter waits for (here: 10 s)."""
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])

    def wait_for_device(x):
        now[0] += 10.0
        return 7

    monkeypatch.setattr(train.keras.ops, "convert_to_numpy", wait_for_device)
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    model = _Model()
    model.optimizer = types.SimpleNamespace(iterations="pending")
    recorder = callbacks.Recorder(folder, [], checkpoint_seconds=0)
    recorder.set_model(model)
    recorder.set_params({"epochs": 1})
    recorder.on_train_begin()
    recorder.on_epoch_begin(0)
    recorder.on_test_begin()  # validation starts
    now[0] += 3.0  # validation, test evaluation
    recorder.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
    (row,) = folder.read_history()
    assert row.train_seconds == 10.0 and row.epoch_seconds == 13.0


@pytest.mark.backend
def test_checkpoints_follow_the_cadence_and_a_signal_keeps_the_last_epoch(tmp_path, monkeypatch):
    """Every 30 s (a fake clock: 10 s an epoch) and after the last epoch; an epoch in between is kept in
    memory and written by keep_last_epoch when a signal stops the run, with the state of that epoch's
    end (the weights have moved on since)."""
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    model = tiny_compile_model(config.Config(), 1)
    model.optimizer.build(model.trainable_variables)
    recorder = callbacks.Recorder(folder, [], checkpoint_seconds=30)
    recorder.set_model(model)
    recorder.set_params({"epochs": 6})
    recorder.on_train_begin()
    saved, kernel = [], model.trainable_variables[0]
    for epoch in range(4):
        recorder.on_epoch_begin(epoch)
        kernel.assign(kernel + 1.0)  # training moves the weights
        now[0] += 10.0
        recorder.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5})
        saved.append(folder.checkpoint()[1])
    assert saved == [0, 0, 3, 3]  # 30 s passed by epoch 3
    epoch4 = as_numpy(kernel).copy()
    kernel.assign(kernel + 1.0)  # epoch 5 is under way when the signal comes
    assert recorder.keep_last_epoch() == 4
    assert [e for e, _ in folder.checkpoints()] == [4, 3]  # the newest two are kept
    restored = custom_objects.load(folder.checkpoint()[0])
    np.testing.assert_array_equal(as_numpy(restored.trainable_variables[0]), epoch4)
    assert [r.epoch for r in folder.read_history()] == [1, 2, 3, 4]
    recorder.on_epoch_begin(4)
    recorder.on_epoch_end(4, {"loss": float("nan"), "accuracy": 0.1})
    assert recorder.diverged and model.stop_training and folder.checkpoint()[1] == 4


def test_a_cpu_sweep_at_the_reports_scale_names_the_quick_look():
    full = config.sweep(config.load_recipe("baseline"))
    assert "For a quick look, add --quick" in sweep._quick_look(full, 50_000)  # the test machine is a CPU
    quick = config.sweep(config.load_recipe("baseline"), config.parse_sets(["model.width=16", "data.subset=10000"]))
    assert sweep._quick_look(quick, 50_000) == ""


def test_a_run_finished_by_another_process_since_the_decision_is_skipped_not_trained(tmp_path, capsys):
    """The sweep decides every run before training; a run that another process sharing OUT finished
    in between is skipped once its lock is taken (and the lock is given back), not trained again."""
    other = RunFolder(make_run(tmp_path / "other", "tiny", "a", 0, 0.4)).load()  # the other process's finished run
    spec, source, out = config.RunSpec("tiny", "a", 0, other.config), other.data_source, tmp_path / "out"
    (decision,) = decisions.decide_all([spec], out, source)
    assert decision.action == "new"
    folder = shutil.copytree(other.path, out / "tiny" / "a" / "seed0")
    metrics = train.train_run(spec, decision, None, sweep.Sweep([spec], out, source))
    assert metrics.status == "completed" and metrics.test_accuracy == 0.4
    assert "tiny/a/seed0: already completed, skipped" in capsys.readouterr().out
    assert not list(folder.glob(".lock*")) and RunFolder(folder).checkpoints() == []
