#!/usr/bin/env bash
# The prepared GPU run: one script, at most BUDGET seconds (540; 1500 with SMOKE), everything it measures under $OUT.
#
# The GPU machine has Python 3.12, JAX with CUDA, PyTorch and numpy but no Keras, TensorFlow,
# tensorflow-datasets, keras-tuner or network. Stage Keras's wheels and the data first, on a machine
# with pip, and carry .whl and .gpu-data with the repo:   bash benchmarks/stage.sh cifar10-jpeg.tar.gz
#
# 0. Preflight (at most 60 s, benchmarks/preflight.py): JAX on a GPU (JAX_PLATFORMS=cuda, no silent CPU
#    fallback), PyTorch with CUDA, and one batch of fit through keras-cifar on each. A backend that
#    fails is left out and the others are measured.
# 1. `keras-cifar bench` of the baseline recipe at full scale (width 64, 50,000 images, 3 epochs): JAX
#    bf16 (what a GPU takes by default), Keras on PyTorch fp32 (tf32 on the GPU), then the PyTorch
#    reference; bench.json grows by one configuration at a time.
# 2. The same two configurations with train.deterministic (bench-deterministic.json): what determinism
#    costs on a GPU.
# 3. `keras-cifar run recipes/baseline.yaml` on JAX (auto precision) for as many epochs as the time left
#    allows at the measured speed, all 200 if it can. Stopped at the budget by SIGTERM, it keeps its last
#    epoch; its run folder, without weights, is packed into one file whatever happens. The steps it
#    trained are counted from its optimizer (an epoch is 391 steps with 8 steps per execution).
#
# 4. study: the recipes beyond the report, tricks and fast, at results/'s scale (width 16, 10,000
#    training images, 10 epochs, float32, deterministic) on JAX, seeds 0-2 four runs at a time on the one
#    GPU, then `--seeds auto` per recipe; packed without weights into study-runs.tar.gz.
# 5. speed: what the speed tricks change: the baseline at full scale on JAX in bf16 and in fp32
#    (hlb-CIFAR10's bf16; tricks-bench.json), and bf16 with data.flip alternating (airbench's
#    alternating flip; tricks-bench-flip.json); both as tables in tricks.md.
#
# STEPS picks the steps after the preflight (default: all, in the order bench deterministic baseline
# study speed). Each step runs under `timeout` with the time left. $OUT then holds at most these files:
# env.txt, log.txt, preflight.txt, bench.json, bench-deterministic.json, bench.md, baseline-run.tar.gz,
# study-runs.tar.gz, tricks-bench.json, tricks-bench-flip.json, tricks.md (11 files in all).
#   bash benchmarks/gpu.sh                  OUT=dir (default out/gpu), DATA=path, BUDGET=seconds
#   STEPS="study speed" bash benchmarks/gpu.sh     only those steps
#   SMOKE=1 bash benchmarks/gpu.sh          the same steps at toy size on a CPU (width 8, 400 images)
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:-out/gpu}
BUDGET=${BUDGET:-$([ -n "${SMOKE:-}" ] && echo 1500 || echo 540)}  # a CPU's toy run is not held to the GPU's time
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 KERAS_CIFAR_CACHE=${KERAS_CIFAR_CACHE:-/tmp/keras-cifar-cache}
left() { echo $(( BUDGET - $(date +%s) + start )); }
within() { local t=$(( $(left) - $1 )); echo $(( t > 10 ? t : 10 )); }  # the time left but $1 s, 10 s at least
status=0
failed() { echo "gpu.sh: $1 failed"; status=1; }
pack() {  # on exit, whatever happened: the run folders as one file each, without weights
  kill "${watcher:-}" 2>/dev/null
  for runs in runs:baseline-run study:study-runs; do
    if [ -d "$OUT/${runs%%:*}" ]; then
      tar -czf "$OUT/${runs##*:}.tar.gz" -C "$OUT/${runs%%:*}" --exclude='*.keras' --exclude=tb --exclude=checkpoints . \
        && rm -rf "${OUT:?}/${runs%%:*}"
    fi
  done
  echo "gpu.sh: $(( $(date +%s) - start )) s; files: $(ls "$OUT" | tr '\n' ' ')"
}
trap pack EXIT

STEPS=" ${STEPS:-bench deterministic baseline study speed} "
step() { [[ $STEPS == *" $1 "* ]]; }
if [ -n "${SMOKE:-}" ]; then
  DATA=${DATA:-synthetic:400}
  SCALE=(--set model.width=8 --subset 400 --set data.eval_subset=100)
  STUDY=(--set model.width=4 --subset 200 --set data.eval_subset=100 --epochs 2)
  STUDY_PARALLEL=${STUDY_PARALLEL:-2}  # a CPU's two cores
  EPOCHS=2 PLATFORM=(--cpu)
else
  DATA=${DATA:-.gpu-data/cifar10-jpeg.tar.gz}
  SCALE=()
  STUDY=(--set model.width=16 --subset 10000 --epochs 10)  # results/reproduce.sh's scale
  EPOCHS=3 PLATFORM=()
fi

if ! python3 -c "import keras" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu.sh: no Keras here and no wheels in .whl/: stage them first (bash benchmarks/stage.sh DATA)"
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
case $DATA in
  synthetic*) ;;
  *) [ -f "$DATA" ] || { echo "gpu.sh: no data at $DATA: stage it first (bash benchmarks/stage.sh DATA)"; exit 2; } ;;
esac
cli() { timeout --kill-after=20 "$1" python3 -m keras_cifar "${@:2}"; }

{ date -u; nvidia-smi -L 2>/dev/null || echo "no GPU"; python3 --version
  python3 -c "import jax, keras; print('jax', jax.__version__); print('keras', keras.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 0. preflight: PyTorch only where a step measures it
wanted=jax
step bench && wanted=jax,torch
backends=$(timeout 60 python3 benchmarks/preflight.py "$wanted" "${PLATFORM[@]}" | tee "$OUT/preflight.txt" | tail -n 1)
echo "gpu.sh: preflight passed for: ${backends:-no backend} ($(( $(date +%s) - start )) s)"
[ -n "$backends" ] || exit 1
has() { [[ ,$backends, == *,$1,* ]]; }
bench_table() {  # bench_table NAME...: each NAME.json as a table in NAME.md
  for f in "$@"; do
    [ -f "$OUT/$f.json" ] && python3 -c "import json, sys; from keras_cifar.tools.bench import table; \
print(sys.argv[2]); print(); print(table(json.load(open(sys.argv[1])))); print()" "$OUT/$f.json" "$f.json" >> "$OUT/${f%%-*}.md"
  done
}

# 1. bench: JAX bf16 first (the baseline run's precision); Keras on PyTorch fp32 and the reference
configs=() reference=()
has jax && configs+=(jax:bf16)
has torch && configs+=(torch:fp32) reference=(--reference)
bench() {  # bench TIME JSON BACKENDS [OPTION...]: configurations BACKENDS at full scale
  cli "$1" bench recipes/baseline.yaml --backends "$3" --epochs "$EPOCHS" --data "$DATA" \
    --set data.pipeline=numpy "${SCALE[@]}" --json "$OUT/$2" "${@:4}"
}
if step bench; then
  ( while [ ! -f "$OUT/bench.json" ]; do sleep 1; done  # when the first number is in hand
    echo "gpu.sh: first measured configuration in bench.json after $(( $(date +%s) - start )) s" ) & watcher=$!
  bench "$(within 240)" bench.json "$(IFS=,; echo "${configs[*]}")" "${reference[@]}" || failed bench
  kill "$watcher" 2>/dev/null
fi

# 2. the same with train.deterministic
if step deterministic; then
  bench "$(within 150)" bench-deterministic.json "$(IFS=,; echo "${configs[*]}")" --set train.deterministic=true \
    || failed "deterministic bench"
fi
bench_table bench bench-deterministic
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"

# 3. the baseline on JAX, for the epochs the time left allows at the measured speed
if step baseline && has jax; then
epochs=$(python3 - "$OUT/bench.json" "$(left)" "${SMOKE:-}" <<'PY'
import json, sys
bench, left, smoke = sys.argv[1], float(sys.argv[2]), sys.argv[3]
try:
    jax = [r for r in json.load(open(bench))["results"] if r["backend"] == "jax" and "epoch_seconds" in r]
except (OSError, ValueError):
    jax = []
if smoke or not jax:
    print(2)
else:  # the bf16 run first, the precision auto picks on a GPU with bfloat16
    r = jax[0]
    print(max(1, min(200, int((left - r["compile_seconds"] - 60) / r["epoch_seconds"]))))
PY
)
echo "gpu.sh: baseline for $epochs epochs, $(left) s left"
cli "$(within 25)" run recipes/baseline.yaml --data "$DATA" --out "$OUT/runs" --epochs "$epochs" \
  --set train.mixed_precision=auto --set data.pipeline=numpy "${SCALE[@]}" || failed run
timeout 20 python3 - "$OUT/runs/baseline/baseline/seed0" <<'PY' || failed "the count of steps"
import json, pathlib, sys
from keras_cifar.core import backend
from keras_cifar.nn import custom_objects
from keras_cifar.training.runs import RunFolder
backend.start()
folder = RunFolder(sys.argv[1])
file = folder.model_file if folder.model_file.is_file() else folder.checkpoint()[0]
metrics = json.loads((folder.path / "metrics.json").read_text()) if (folder.path / "metrics.json").is_file() else {}
epochs = len(folder.read_history()) if file == folder.model_file else folder.checkpoint()[1]
steps = int(custom_objects.load(file).optimizer.iterations.numpy())
print(f"gpu.sh: {file.name}: {steps} optimizer steps in {epochs} epochs ({steps / max(epochs, 1):g} an epoch), "
      f"steps_per_execution {metrics.get('steps_per_execution')}")
PY
fi

# 4. the recipes beyond the report at results/'s scale, float32 and deterministic like results/ (on the
#    CPU) but on JAX: four runs at a time share the GPU, each allowed a fifth of its memory
if step study && has jax; then
  python3 -c "import sys; from keras_cifar.data import sources; sources.load(sys.argv[1])" "$DATA" \
    || failed "reading the data"  # the decoded cache, once, before four processes want it
  study=(--data "$DATA" --out "$OUT/study" "${STUDY[@]}" --set data.pipeline=numpy --set train.deterministic=true
         --parallel "${STUDY_PARALLEL:-4}")  # four runs share the GPU
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.2
  cli "$(within 150)" run tricks fast "${study[@]}" --seeds 0,1,2 || failed "the study, seeds 0-2"
  cli "$(within 90)" run tricks "${study[@]}" --seeds auto || failed "the study, tricks --seeds auto"
  cli "$(within 75)" run fast "${study[@]}" --seeds auto || failed "the study, fast --seeds auto"
  unset XLA_PYTHON_CLIENT_MEM_FRACTION
fi

# 5. the speed tricks at full scale: bf16 against fp32 (hlb-CIFAR10), alternating flip (airbench)
if step speed && has jax; then
  bench "$(within 25)" tricks-bench.json jax:bf16,jax:fp32 || failed "the speed tricks' bench"
  bench "$(within 5)" tricks-bench-flip.json jax:bf16 --set data.flip=alternating || failed "the alternating flip's bench"
  bench_table tricks-bench tricks-bench-flip
  [ -f "$OUT/tricks.md" ] && cat "$OUT/tricks.md"
fi
exit $status
