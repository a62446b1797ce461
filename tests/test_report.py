"""`keras-cifar report` and `compare` on fabricated run folders: no training, backend-independent."""

import json
import math
import statistics

import pytest
import yaml

from keras_cifar import compare, report
from keras_cifar.runfiles import write_history

EPOCHS = 4


def make_run(out, recipe, variant, seed, final_acc, status="completed", epochs_done=EPOCHS, config=None):
    """A run folder as `keras-cifar run` leaves it; accuracy climbs linearly to `final_acc`.
    status "unfinished" writes no metrics.json (a run still going); "diverged" ends in a NaN loss."""
    run = out / recipe / variant / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = {"recipe": recipe, "variant": variant, "seed": seed, "data_source": "/data/cifar10-jpeg.tar.gz",
           "model": {"width": 8, "batch_norm": True}, "data": {"batch_size": 32, "subset": 1000},
           "optimizer": {"learning_rate": 0.1}, "schedule": {"name": "cosine"}, "loss": "cross_entropy",
           "train": {"epochs": EPOCHS, "seeds": [seed]}}
    for section, values in (config or {}).items():
        cfg[section] = {**cfg[section], **values} if isinstance(values, dict) else values
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for e in range(1, epochs_done + 1):
        acc = final_acc * e / EPOCHS
        lr = 0.1 if cfg["schedule"]["name"] == "constant" else 0.05 * (1 + math.cos(math.pi * e / EPOCHS))
        loss = float("nan") if status == "diverged" and e == epochs_done else 2.0 - acc
        rows.append({"epoch": e, "loss": loss, "accuracy": acc, "val_loss": loss, "val_accuracy": acc - 0.01,
                     "test_loss": loss, "test_accuracy": acc, "lr": lr, "epoch_seconds": 10.0, "train_seconds": 8.0})
    write_history(run / "history.csv", rows)
    if status != "unfinished":
        metrics = {"status": status, "epochs_completed": epochs_done, "epochs": EPOCHS,
                   "test_accuracy": None if status == "diverged" else final_acc,
                   "val_accuracy": final_acc - 0.01, "best_val_accuracy": final_acc - 0.01,
                   "train_seconds": 8.0 * epochs_done, "wall_seconds": 10.0 * epochs_done,
                   "images_per_second": 125.0, "backend": "jax", "device": "gpu: Test GPU",
                   "data": {"source": "/data/cifar10-jpeg.tar.gz", "train": 1000, "val": 5000, "test": 5000}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def bn_runs(tmp_path):
    """Recipe bn: `bn` has three completed seeds; `no_bn` one completed, one diverged and seed 2 missing."""
    out = tmp_path / "runs"
    for seed, acc in enumerate((0.60, 0.62, 0.67)):
        make_run(out, "bn", "bn", seed, acc)
    make_run(out, "bn", "no_bn", 0, 0.50, config={"model": {"batch_norm": False}})
    make_run(out, "bn", "no_bn", 1, 0.1, status="diverged", epochs_done=2, config={"model": {"batch_norm": False}})
    return out
