"""keras-cifar bench: its options, its timing summary and its table. (The whole bench, reference
included, runs at toy size in CI: `SMOKE=1 bash benchmarks/gpu.sh`.)"""

import pytest

from keras_cifar import bench
from keras_cifar.errors import BackendError, ConfigError


def test_backends_and_precisions_expand_and_are_checked_before_training():
    assert bench.configurations("jax, torch:fp32", "fp32,bf16", reference=False) == [
        ("jax", "fp32"),
        ("jax", "bf16"),
        ("torch", "fp32"),
    ]
    with pytest.raises(ConfigError, match="--precision: fp16 given; use fp32 and/or bf16"):
        bench.configurations("jax", "fp16", reference=False)
    with pytest.raises(BackendError, match="pytorch"):
        bench.configurations("pytorch", "fp32", reference=False)


def _rows(epoch_seconds, train_seconds, accuracy=0.5):
    return [{"epoch_seconds": e, "train_seconds": t, "test_accuracy": accuracy} for e, t in zip(epoch_seconds, train_seconds)]


def test_first_epoch_is_compilation_and_the_rest_are_medians():
    s = bench.summarize(_rows([30.0, 2.0, 3.0, 9.0], [29.0, 1.5, 2.0, 2.5]), images=1000)
    assert s["compile_seconds"] == 30.0
    assert s["epoch_seconds"] == 3.0 and s["train_seconds"] == 2.0
    assert s["overhead_seconds"] == pytest.approx(1.0)
    assert s["images_per_second"] == pytest.approx(500.0)


def test_table_gives_each_configuration_its_ratio_to_the_fastest_reference():
    record = {
        "results": [
            {
                "backend": "jax",
                "requested": "fp32",
                "precision": "float32",
                "math": "tf32",
                "device": "gpu: H200",
                "status": "completed",
                **bench.summarize(_rows([9, 2], [8, 2]), 1000),
            },
            {"backend": "torch", "requested": "bf16", "status": "failed", "error": "exit code 1"},
        ],
        "reference": {
            "device": "H200",
            "tf32": True,
            "modes": {
                "fp32": bench.summarize(_rows([5, 4], [5, 4]), 1000),
                "bf16": bench.summarize(_rows([5, 1], [5, 1]), 1000),
            },
        },
    }
    lines = bench.table(record).splitlines()
    jax, torch, ref32, ref16 = lines[2:6]
    # float32 on a Hopper GPU computes in TensorFloat-32: the rows say so
    assert "| keras-cifar jax tf32 | gpu: H200 |" in jax and "| 500 | 0.50x |" in jax  # 500 img/s against bf16's 1000
    assert "keras-cifar torch bf16" in torch and "failed: exit code 1" in torch
    assert "| PyTorch reference tf32 |" in ref32 and "| 250 | 0.25x |" in ref32
    assert "| 1000 | 1.00x |" in ref16
