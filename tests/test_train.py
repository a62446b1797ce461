"""Training end to end through the CLI: run folders, resume, divergence, learning; on every backend."""

import csv
import json

import keras
import numpy as np
import pytest
import yaml

from keras_cifar import train
from tests.conftest import tiny_recipe


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.backend
def test_run_writes_a_valid_run_folder(tmp_path, cli, jpeg_slice):
    out = tmp_path / "out"
    result = cli("run", tiny_recipe(tmp_path, "  a: {}\n  b: {model: {batch_norm: false}}\n"),
                 "--data", jpeg_slice, "--out", out)
    assert result.exit_code == 0, result.output
    assert "ETA" in result.output and "test acc" in result.output
    for variant in ("a", "b"):
        run_dir = out / "tiny" / variant / "seed0"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["variant"] == variant and config["model"]["batch_norm"] == (variant == "a")
        rows = _history(run_dir)
        assert list(rows[0]) == list(train.HISTORY_COLUMNS) and len(rows) == 1
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["epochs_completed"] == 1
        assert metrics["backend"] == keras.backend.backend()
        assert metrics["data"] == {"source": str(jpeg_slice), "train": 300, "val": 40, "test": 40}
        assert metrics["test_accuracy"] == pytest.approx(float(rows[0]["test_accuracy"]))
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["images_per_second"] > 0
        model = keras.saving.load_model(run_dir / "model.keras")
        assert model.output_shape == (None, 10)
        assert not list(run_dir.glob("checkpoint-*"))


@pytest.mark.backend
def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, cli, monkeypatch):
    recipe = tiny_recipe(tmp_path)
    args = ("run", recipe, "--data", "synthetic:200", "--out", tmp_path / "out", "--epochs", "3")
    original = train.Monitor.on_epoch_end

    def stop_after_two(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.Monitor, "on_epoch_end", stop_after_two)
    assert cli(*args).exit_code == 130
    run_dir = tmp_path / "out" / "tiny" / "a" / "seed0"
    before = _history(run_dir)
    assert len(before) == 2 and (run_dir / "checkpoint-epoch2.keras").exists()
    assert not (run_dir / "metrics.json").exists()

    monkeypatch.setattr(train.Monitor, "on_epoch_end", original)
    result = cli(*args)
    assert "resuming after epoch 2" in result.output
    after = _history(run_dir)
    assert [r["epoch"] for r in after] == ["1", "2", "3"] and after[:2] == before
    assert float(after[2]["lr"]) == pytest.approx(0.0, abs=1e-6)  # the schedule went on from step 2 epochs
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 3
    assert "already completed, skipped" in cli(*args).output


@pytest.mark.backend
def test_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path, cli):
    recipe = tiny_recipe(tmp_path, "  boom: {optimizer: {learning_rate: 1.0e+12}, model: {batch_norm: false}}\n  ok: {}\n")
    result = cli("run", recipe, "--data", "synthetic:200", "--out", tmp_path / "out", "--epochs", "2")
    assert result.exit_code == 0, result.output
    boom = json.loads((tmp_path / "out/tiny/boom/seed0/metrics.json").read_text())
    assert boom["status"] == "diverged" and boom["epochs_completed"] == 1 and boom["test_accuracy"] is None
    assert json.loads((tmp_path / "out/tiny/ok/seed0/metrics.json").read_text())["status"] == "completed"
    assert "boom" in result.output and "diverged" in result.output.splitlines()[-2]


@pytest.mark.backend
def test_synthetic_source_is_learned(tmp_path, cli):
    recipe = tiny_recipe(tmp_path, "  a: {}\n", extra_base="  optimizer: {learning_rate: 0.05}\n")
    result = cli("run", recipe, "--data", "synthetic:1000", "--out", tmp_path / "out", "--epochs", "4",
                 "--set", "model.width=8", "--set", "data.eval_subset=200", "--set", "data.pipeline=numpy")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out/tiny/a/seed0/metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9, result.output


def test_run_folder_with_another_config_is_refused(tmp_path, cli):
    recipe = tiny_recipe(tmp_path)
    cli("run", recipe, "--data", "synthetic:100", "--out", tmp_path / "out")
    result = cli("run", recipe, "--data", "synthetic:100", "--out", tmp_path / "out", "--set", "model.width=8")
    assert result.exit_code == 2 and "different config (differs in model.width)" in result.output


def test_equal_config_in_another_recipe_is_reused(tmp_path, cli):
    first = tiny_recipe(tmp_path)
    cli("run", first, "--data", "synthetic:100", "--out", tmp_path / "out")
    second = tmp_path / "other.yaml"
    second.write_text(first.read_text().replace("name: tiny", "name: other").replace("  a: {}", "  same: {}"))
    result = cli("run", second, "--data", "synthetic:100", "--out", tmp_path / "out")
    assert "same config as tiny/a/seed0, reused" in result.output
    reused = json.loads((tmp_path / "out/other/same/seed0/metrics.json").read_text())
    original = json.loads((tmp_path / "out/tiny/a/seed0/metrics.json").read_text())
    assert reused["variant"] == "same" and reused["reused_from"] == "tiny/a/seed0"
    assert reused["test_accuracy"] == original["test_accuracy"]


def test_dry_run_after_a_run_says_what_is_done_and_estimates_the_rest(tmp_path, cli):
    recipe = tiny_recipe(tmp_path)
    out = tmp_path / "out"
    cli("run", recipe, "--data", "synthetic:100", "--out", out)
    lines = cli("run", recipe, "--data", "synthetic:100", "--out", out, "--seeds", "0,1", "--dry-run").output.splitlines()
    assert lines[0] == "tiny/a/seed0: already completed"
    assert lines[1].startswith("tiny/a/seed1: new, width 4") and "about 0m" in lines[1]
    assert lines[2].startswith("estimated total: 0m")


@pytest.mark.backend
def test_mixed_precision_and_steps_per_execution(tmp_path, cli):
    args = ("run", tiny_recipe(tmp_path), "--data", "synthetic:100", "--out", tmp_path / "out",
            "--set", "train.mixed_precision=true", "--set", "train.steps_per_execution=2")
    result = cli(*args)
    if keras.backend.backend() == "torch":
        assert result.exit_code == 2 and "steps_per_execution must be 1 on the PyTorch backend" in result.output
        result = cli(*args[:-2])
    assert result.exit_code == 0, result.output
    model = keras.saving.load_model(tmp_path / "out/tiny/a/seed0/model.keras")
    assert model.get_layer("resnet18").get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"  # logits stay float32
