"""keras-cifar bench: its options, its timing summary and its table. (The whole bench, reference
included, runs at toy size in CI: `SMOKE=1 bash benchmarks/gpu.sh`.)"""

import os
import subprocess
import sys

import pytest

from keras_cifar.core.errors import BackendError, ConfigError
from keras_cifar.tools import bench
from tests.helpers import REPO


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
    assert lines[-1] == bench.GPU_INPUT_NOTE and "keeps the training set on the device" in lines[-1]  # on the GPU
    record["reference"]["device"] = "cpu"
    assert bench.GPU_INPUT_NOTE not in bench.table(record)


def test_the_pytorch_reference_crops_and_flips_only_where_data_augment_asks():
    """One training step of the reference with data.augment true and false, counting its crop-and-flip
    calls (in a process of its own, as bench runs it: PyTorch and TensorFlow do not share one)."""
    code = (
        "import torch\n"
        "from keras_cifar.tools import torch_reference as ref\n"
        "from keras_cifar.config import Config\n"
        "calls, original = [], ref._augment\n"
        "ref._augment = lambda *args: calls.append(1) or original(*args)\n"
        "for augment in (True, False):\n"
        "    config = Config.from_dict({'model': {'width': 8}, 'data': {'augment': augment}})\n"
        "    r = ref.Reference(config, 1, torch.device('cpu'), 'fp32', seed=0)\n"
        "    r.step(torch.zeros((4, 32, 32, 3), dtype=torch.uint8), torch.zeros(4, dtype=torch.long))\n"
        "    print(augment, len(calls))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "1", "False", "1"]  # the second step did not augment
