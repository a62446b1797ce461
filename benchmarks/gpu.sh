#!/usr/bin/env bash
# The prepared GPU run: one script, at most 9 minutes, everything it measures written under $OUT.
#
# 1. `keras-cifar bench` of the baseline recipe at full scale (width 64, 50,000 images, 3 epochs):
#    JAX fp32, JAX bf16 and Keras on PyTorch (fp32), against the PyTorch reference (eager fp32, bf16
#    channels-last), all in this one run.
# 2. `keras-cifar run recipes/baseline.yaml` on JAX (auto precision) for as many epochs as the time
#    left allows at the measured speed, all 200 if it can; its run folder, without weights, is packed
#    into one file.
#
# Where Keras is installed it is used as it is. A GPU machine with JAX and PyTorch but no Keras or
# TensorFlow gets Keras from wheels staged beside the checkout in .whl/ (installed into /tmp/site; stage
# them with `pip download --no-deps --only-binary=:all: -d .whl keras namex optree`, for that machine's
# Python and platform) and the data from .gpu-data/cifar10-jpeg.tar.gz; training then feeds numpy arrays.
#   bash benchmarks/gpu.sh                  OUT=dir (default out/gpu), DATA=path, BUDGET=seconds (540)
#   SMOKE=1 bash benchmarks/gpu.sh          the same steps at toy size on a CPU (width 8, 400 images)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:-out/gpu}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KERAS_CIFAR_CACHE=${KERAS_CIFAR_CACHE:-/tmp/keras-cifar-cache}
if [ -n "${SMOKE:-}" ]; then
  DATA=${DATA:-synthetic:400}
  SCALE=(--set model.width=8 --subset 400 --set data.eval_subset=100)
  EPOCHS=2
else
  DATA=${DATA:-.gpu-data/cifar10-jpeg.tar.gz}
  SCALE=()
  EPOCHS=3
fi
cli() { python3 -m keras_cifar "$@"; }
failed() { echo "gpu.sh: $1 failed"; if [ -n "${SMOKE:-}" ]; then exit 1; fi; }  # on the GPU: keep what was measured

{ date -u; nvidia-smi -L 2>/dev/null || echo "no GPU"; python3 --version
  python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices()); print('keras', keras.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. bench
cli bench recipes/baseline.yaml --backends jax,torch:fp32 --precision fp32,bf16 --epochs "$EPOCHS" --reference \
  --data "$DATA" --set data.pipeline=numpy "${SCALE[@]}" --json "$OUT/bench.json" || failed bench
python3 -c "import json, sys; from keras_cifar.bench import table; print(table(json.load(open(sys.argv[1]))))" \
  "$OUT/bench.json" > "$OUT/bench.md"

# 2. the baseline, for the epochs the time left allows at the measured JAX speed
epochs=$(python3 - "$OUT/bench.json" "$start" "$BUDGET" "${SMOKE:-}" <<'PY'
import json, sys, time
record, start, budget, smoke = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
jax = [r for r in record["results"] if r["backend"] == "jax" and "epoch_seconds" in r]
if smoke or not jax:
    print(2)
else:
    fastest = min(jax, key=lambda r: r["epoch_seconds"])
    left = budget - (time.time() - start) - fastest["compile_seconds"] - 45  # 45 s: start-up, packing, margin
    print(max(1, min(200, int(left / fastest["epoch_seconds"]))))
PY
)
echo "baseline: $epochs epochs"
KERAS_BACKEND=jax cli run recipes/baseline.yaml --data "$DATA" --out "$OUT/runs" --epochs "$epochs" \
  --set train.mixed_precision=auto --set data.pipeline=numpy "${SCALE[@]}" || failed run
tar -czf "$OUT/baseline-run.tar.gz" -C "$OUT/runs" --exclude='*.keras' --exclude=tb baseline && rm -rf "$OUT/runs"
echo "gpu.sh: $(( $(date +%s) - start )) s; files: $(ls "$OUT" | tr '\n' ' ')"
