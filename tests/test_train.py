"""Training end to end through the CLI: run folders, divergence, mixed precision, learning and resume
on every backend; refusal, reuse and planning on copies of the shared sweep."""

import json
import shutil
import types

import keras
import pytest

from keras_cifar import train
from keras_cifar.runs import HISTORY_COLUMNS, RunFolder
from tests.helpers import tiny_recipe


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.backend
def test_sweep_writes_run_folders_and_goes_on_after_a_divergence(trained):
    assert trained.exit_code == 0, trained.output
    assert "ETA" in trained.output and "test acc" in trained.output and "3 runs, 6 epochs" in trained.output
    for variant in ("a", "bf16"):
        folder = RunFolder(trained.out / "tiny" / variant / "seed0")
        ident, config = folder.read_config()
        assert ident == {"recipe": "tiny", "variant": variant, "seed": 0}
        assert config["train"]["mixed_precision"] == (variant == "bf16")
        rows = folder.read_history()
        assert tuple(rows[0]) == HISTORY_COLUMNS and [r["epoch"] for r in rows] == [1, 2]
        metrics = folder.read_metrics()
        assert metrics["status"] == "completed" and metrics["epochs_completed"] == 2
        assert metrics["backend"] == keras.backend.backend()
        assert metrics["data"] == {"source": str(trained.data), "train": 640 if variant == "a" else 160,
                                   "val": 64, "test": 64}
        assert metrics["test_accuracy"] == pytest.approx(rows[-1]["test_accuracy"])
        assert keras.saving.load_model(folder.model_file).output_shape == (None, 10)
        assert folder.checkpoint() == (None, 0)
    assert _metrics(trained.out / "tiny" / "bf16" / "seed0")["images_per_second"] > 0  # epoch 2, compiled
    boom = _metrics(trained.out / "tiny" / "boom" / "seed0")
    assert boom["status"] == "diverged" and boom["epochs_completed"] == 1 and boom["test_accuracy"] is None
    assert "tiny/boom/seed0: diverged" in trained.output
    assert [line.split()[2] for line in trained.output.splitlines() if line.startswith(("a ", "bf16 ", "boom "))] == \
        ["completed", "completed", "diverged"]


@pytest.mark.backend
def test_interrupted_run_resumes_from_its_last_epoch(trained, cli):
    first = trained.interrupted  # Ctrl-C after epoch 1 of tiny/a/seed0
    assert first.exit_code == 130 and "run the same command again to resume" in trained.first
    assert len(first.history) == 1 and first.checkpoint == 1 and first.metrics is None
    assert "tiny/a/seed0: resuming after epoch 1" in trained.output
    folder = RunFolder(trained.out / "tiny" / "a" / "seed0")
    after = folder.read_history()
    assert [r["epoch"] for r in after] == [1, 2] and after[:1] == first.history
    assert after[1]["lr"] == pytest.approx(0.0, abs=1e-6)  # the schedule went on from step 1 epoch in
    metrics = folder.read_metrics()
    assert metrics["epochs_completed"] == 2
    assert metrics["images_per_second"] is None  # both epochs compiled (the start and the resume)
    assert "already completed, skipped" in cli("run", trained.recipe, "--data", trained.data, "--out", trained.out,
                                               "--epochs", "2", "--variants", "a").output


@pytest.mark.backend
def test_the_model_learns(trained):
    """Two epochs on 640 images of 10 learnable patterns: far above chance (10%) on held-out images."""
    folder = RunFolder(trained.out / "tiny" / "a" / "seed0")
    assert folder.read_metrics()["test_accuracy"] > 0.3
    assert folder.read_history()[-1]["accuracy"] > 0.6


@pytest.mark.backend
def test_mixed_precision_and_steps_per_execution(trained, tmp_path, cli):
    model = keras.saving.load_model(trained.out / "tiny" / "bf16" / "seed0" / "model.keras")
    assert model.get_layer("resnet18").get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"  # logits stay float32
    if keras.backend.backend() == "torch":  # refused before anything is written
        result = cli("run", tiny_recipe(tmp_path), "--data", "synthetic:100", "--out", tmp_path / "out",
                     "--set", "train.steps_per_execution=2")
        assert result.exit_code == 2 and "steps_per_execution must be 1 on the PyTorch backend" in result.output
        assert not (tmp_path / "out").exists()


def _copy(trained, tmp_path):
    return shutil.copytree(trained.out, tmp_path / "out")


def test_run_folder_with_another_config_is_refused_also_by_the_dry_run(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    for extra in ((), ("--dry-run",)):
        result = cli("run", trained.recipe, "--data", trained.data, "--out", out, "--epochs", "2",
                     "--set", "model.width=16", *extra)
        assert result.exit_code == 2, result.output
        assert "different config (differs in model.width)" in result.output


def test_equal_config_in_another_recipe_is_reused(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(trained.recipe.read_text().replace("name: tiny", "name: other").replace("  a: {}", "  same: {}"))
    result = cli("run", other, "--data", trained.data, "--out", out, "--epochs", "2", "--variants", "same")
    assert "same config as tiny/a/seed0, reused" in result.output
    reused, original = _metrics(out / "other/same/seed0"), _metrics(out / "tiny/a/seed0")
    assert reused["variant"] == "same" and reused["reused_from"] == "tiny/a/seed0"
    assert reused["test_accuracy"] == original["test_accuracy"]


def test_dry_run_says_what_is_done_and_estimates_the_rest(trained, tmp_path, cli):
    out = _copy(trained, tmp_path)
    args = ("run", trained.recipe, "--out", out, "--epochs", "2", "--variants", "a,boom", "--seeds", "0,1", "--dry-run")
    lines = cli(*args, "--data", trained.data).output.splitlines()
    assert lines[0] == "tiny/a/seed0: already completed"
    assert lines[1].startswith("tiny/a/seed1: new, width 8, 2 epochs, batch 32, about 0m")  # timed by seed 0
    assert lines[2] == "tiny/boom/seed0: already diverged"
    assert lines[4].startswith("estimated total: 0m")
    result = cli(*args, "--data", tmp_path / "missing.tar.gz")  # refused as the real run would
    assert result.exit_code == 2 and "missing.tar.gz: no such file or folder" in result.output


class _Model:
    """What Recorder uses of a model."""

    stop_training = False

    def save(self, path):
        path.write_text("weights")


def test_training_time_waits_for_the_last_dispatched_step(tmp_path, monkeypatch):
    """JAX (and PyTorch on a GPU) return from a step before it has run: the epoch's training time
    ends when the last step has, which reading the step counter waits for (here: 10 s)."""
    now = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: now[0])

    def wait_for_device(x):
        now[0] += 10.0
        return 7

    monkeypatch.setattr(train.keras.ops, "convert_to_numpy", wait_for_device)
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    model = _Model()
    model.optimizer = types.SimpleNamespace(iterations="pending")
    recorder = train.Recorder(folder, [], checkpoint_seconds=0)
    recorder.set_model(model)
    recorder.set_params({"epochs": 1})
    recorder.on_train_begin()
    recorder.on_epoch_begin(0)
    recorder.on_test_begin()  # validation starts
    now[0] += 3.0  # validation, test evaluation
    recorder.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
    (row,) = folder.read_history()
    assert row["train_seconds"] == 10.0 and row["epoch_seconds"] == 13.0


def test_checkpoints_follow_the_cadence_and_end_with_the_last_epoch(tmp_path, monkeypatch):
    clock = iter(range(0, 1000))  # perf_counter: one tick per call
    monkeypatch.setattr(train.time, "perf_counter", lambda: 4 * next(clock))
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    recorder = train.Recorder(folder, [], checkpoint_seconds=30)
    recorder.set_model(_Model())
    recorder.set_params({"epochs": 5})
    recorder.on_train_begin()
    saved = []
    for epoch in range(5):
        recorder.on_epoch_begin(epoch)
        recorder.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5})
        saved.append(folder.checkpoint()[1])
    assert saved == [0, 0, 3, 3, 5]  # 30 s passed by epoch 3; the last epoch is always saved
    assert [r["epoch"] for r in folder.read_history()] == [1, 2, 3, 4, 5]
    recorder.on_epoch_begin(5)
    recorder.on_epoch_end(5, {"loss": float("nan"), "accuracy": 0.1})
    assert recorder.diverged and recorder.model.stop_training and folder.checkpoint()[1] == 5
