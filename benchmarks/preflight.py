"""The GPU script's preflight (benchmarks/gpu.sh): which backends can train here, found in well under a
minute. Checks that JAX computes on a GPU (JAX_PLATFORMS=cuda: no silent CPU fallback) and that PyTorch
sees CUDA, then trains one batch of the classifier through keras-cifar's own compile on each backend,
in a process of its own. Prints a line per check, and last the backends that passed (comma-separated;
an empty line when none did). Usage: python3 benchmarks/preflight.py jax,torch [--cpu]
"""

import os
import subprocess
import sys

FIT_ONE_BATCH = """
import numpy as np
from keras_cifar.core import backend
from keras_cifar import config as config
keras = backend.start()
from keras_cifar.training.train import compile_model
cfg = config.Config.from_dict({"model": {"width": 8}})
model = compile_model(cfg, steps_per_epoch=1)
x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
loss = model.fit(x, np.arange(32) % 10, batch_size=32, epochs=1, verbose=0).history["loss"][0]
print(f"one batch of fit: loss {loss:.3f} on {backend.device()}")
"""
DEVICE = {
    "jax": "import jax; d = jax.devices(); assert d[0].platform == 'gpu', d; print('JAX devices:', d)",
    "torch": "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; "
    "print('PyTorch CUDA:', torch.cuda.get_device_name(0))",
}


def check(backend, cpu):
    """Whether `backend` sees its GPU (skipped with `cpu`) and trains one batch; prints why not."""
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu" if cpu else "cuda"}
    for what, code in (("device", None if cpu else DEVICE[backend]), ("fit", FIT_ONE_BATCH)):
        if code is None:
            continue
        try:
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=50)
        except subprocess.TimeoutExpired:
            print(f"preflight {backend}: {what} took over 50 s", flush=True)
            return False
        lines = (done.stdout + done.stderr).strip().splitlines() or ["no output"]
        print(f"preflight {backend}: {what}: {lines[-1] if done.returncode else done.stdout.strip()}", flush=True)
        if done.returncode:
            return False
    return True


if __name__ == "__main__":
    wanted, cpu = sys.argv[1].split(","), "--cpu" in sys.argv[2:]
    print(",".join(b for b in wanted if check(b, cpu)))
