#!/usr/bin/env bash
# The test command: everything under TensorFlow, then the `backend` tests under JAX and PyTorch,
# each pass listing its 15 slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."
KERAS_BACKEND=tensorflow python -m pytest --durations=15 "$@"
KERAS_BACKEND=jax python -m pytest -m backend --durations=15 "$@"
KERAS_BACKEND=torch python -m pytest -m backend --durations=15 "$@"
