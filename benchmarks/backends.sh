#!/usr/bin/env bash
# The baseline recipe on each backend at a CPU-sized scale: ResNet-18 width 16, 10,000 class-balanced
# training images of the CIFAR-10 JPEG copy, EPOCHS epochs (default 10), full 5,000/5,000
# validation/test halves.
# Prints final-epoch test accuracy and training throughput per backend (from each run's metrics.json).
#   bash benchmarks/backends.sh [OUT]      BACKENDS="jax torch" to run a subset, EPOCHS=3 to be quick
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/backends}
DATA=${KERAS_CIFAR_DATA:?set KERAS_CIFAR_DATA to a local CIFAR-10 copy, e.g. the JPEG copy cifar10-jpeg.tar.gz}
for b in ${BACKENDS:-tensorflow jax torch}; do
  KERAS_BACKEND=$b keras-cifar run recipes/baseline.yaml --data "$DATA" --out "$OUT/$b" \
    --set model.width=16 --subset 10000 --epochs "${EPOCHS:-10}"
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
print(f"{'backend':<11} {'test acc':>9} {'train img/s':>12} {'s/epoch':>8}  device")
for m in sorted(Path(sys.argv[1]).glob("*/baseline/baseline/seed0/metrics.json")):
    r = json.loads(m.read_text())
    print(f"{r['backend']:<11} {r['test_accuracy']:>9.2%} {r['images_per_second']:>12.0f} "
          f"{r['wall_seconds'] / r['epochs_completed']:>8.1f}  {r['device']}")
PY
