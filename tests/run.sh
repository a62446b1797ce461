#!/usr/bin/env bash
# The test command: everything under TensorFlow, then the `backend` tests under JAX and PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
KERAS_BACKEND=tensorflow python -m pytest "$@"
KERAS_BACKEND=jax python -m pytest -m backend "$@"
KERAS_BACKEND=torch python -m pytest -m backend "$@"
