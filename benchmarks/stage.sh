#!/usr/bin/env bash
# Stage what benchmarks/gpu.sh needs on a machine without Keras or a network, into two git-ignored
# folders of the repo: .whl/ (Keras 3.15.1 and the two packages it needs there, namex and optree, as
# wheels for that machine's Python) and .gpu-data/ (the CIFAR-10 copy the script trains on).
#
#   bash benchmarks/stage.sh DATA                 wheels for Python 3.12 (the GPU machine), DATA copied
#   PYTHON_VERSION=3.11 bash benchmarks/stage.sh   wheels for another Python (a CPU stand-in), no data
#
# DATA is a local CIFAR-10 copy as `keras-cifar run --data` takes it (a .tar.gz, e.g. the CIFAR-10
# JPEG copy); `SMOKE=1 bash benchmarks/gpu.sh` needs none. The GPU machine has Python 3.12, JAX with CUDA, PyTorch, numpy, Pillow, matplotlib, click,
# pyyaml, h5py, ml-dtypes and scipy, but no Keras, TensorFlow, tensorflow-datasets or keras-tuner.
set -euo pipefail
data=${1:-}
[ -z "$data" ] || [ -f "$data" ] || { echo "stage.sh: $data: no such file" >&2; exit 2; }
[ -z "$data" ] || data=$(cd "$(dirname "$data")" && pwd)/$(basename "$data")
cd "$(dirname "$0")/.."
python=${PYTHON_VERSION:-3.12}
rm -rf .whl && mkdir -p .whl
[ -z "$data" ] || { mkdir -p .gpu-data && cp -f "$data" .gpu-data/cifar10-jpeg.tar.gz; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "keras==${KERAS_VERSION:-3.15.1}" namex "optree==0.20.0"
ls .whl ${data:+.gpu-data}
echo "staged .whl/ (Python $python)${data:+ and .gpu-data/}: carry them to the GPU machine"
