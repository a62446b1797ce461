#!/usr/bin/env bash
# The test command: the tests marked `backend` under TensorFlow, JAX and PyTorch, and the others under
# TensorFlow: six pytest passes in two lanes of about equal time (TensorFlow's backend tests, the other
# TensorFlow tests but the cluster ones, then the cluster tests of SLURM and Kubernetes tasks; beside
# them the other cluster tests, then JAX's backend tests, then PyTorch's), each pass with its own
# temporary folder and log. Most of their time is single-threaded (imports, compilation, subprocesses
# starting), so every process computes on one thread: OpenMP's threads spin while they wait, and
# two-thread processes sharing two cores slowed some tests tenfold. Each pass's log, with its 15 slowest
# tests, is printed when all have ended; the exit code is the first failing pass's. Arguments go to every
# pass (e.g. -x, -k NAME).
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
logs=$(mktemp -d)
passes=("tensorflow backend" "tensorflow not backend and not cluster" "tensorflow scheduler"
        "tensorflow cluster and not scheduler" "jax backend" "torch backend")
pass() {
  read -r backend marker <<< "${passes[$1]}"
  KERAS_BACKEND=$backend python -m pytest -m "$marker" --durations=15 --basetemp="$logs/tmp$1" "${@:2}" \
    > "$logs/$1.log" 2>&1
  echo $? > "$logs/$1.code"
}
(pass 0 "$@"; pass 1 "$@"; pass 2 "$@") &
(pass 3 "$@"; pass 4 "$@"; pass 5 "$@") &
wait
status=0
for i in "${!passes[@]}"; do
  code=$(cat "$logs/$i.code")
  read -r backend marker <<< "${passes[$i]}"
  echo "=== KERAS_BACKEND=$backend, tests marked: $marker; exit code $code"
  cat "$logs/$i.log"
  [ "$status" != 0 ] || status=$code
done
rm -rf "$logs"
exit "$status"
