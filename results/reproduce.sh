#!/usr/bin/env bash
# Reproduces results/: the seven report experiments, and the two beyond it (tricks, fast), at a reduced scale that a 2-core CPU finishes
# in a few hours (ResNet-18 width 16, 10,000 class-balanced training images, 10 epochs, seeds 0, 1 and 2,
# full 5,000-image validation and test halves), on the CIFAR-10 JPEG copy, TensorFlow backend; then
# `--seeds auto` per experiment: a seed more at a time, up to 5, where an undecided pair could be decided,
# under a plan of 3 looks (3 to 5 seeds, each judged at 5/3 %) that it records in results/runs/<recipe>/.
# Safe to rerun: finished runs are skipped, an interrupted one resumes, equal configs are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KERAS_CIFAR_DATA:?set KERAS_CIFAR_DATA to a local CIFAR-10 copy, e.g. the JPEG copy cifar10-jpeg.tar.gz}
SCALE=(--data "$DATA" --out results/runs --set model.width=16 --subset 10000 --epochs 10)
# Two runs at a time, one core each: 13 % faster than one run on both cores on the 2-core CPU (docs/cluster.md).
PARALLEL=(--parallel "${KERAS_CIFAR_PARALLEL:-2}")
export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}
for seed in 0 1 2; do  # every experiment at seed 0 first, so a partial sweep already covers them all
  keras-cifar run $(keras-cifar recipes --names) "${SCALE[@]}" "${PARALLEL[@]}" --seeds "$seed"  # the report's experiments
done
for seed in 0 1 2; do  # beyond the report: the fast trainers' tricks (their baseline is the report's, reused)
  keras-cifar run tricks fast "${SCALE[@]}" "${PARALLEL[@]}" --seeds "$seed"
done
for recipe in $(keras-cifar recipes --names) tricks fast; do  # one recipe at a time, so seeds are added only where they help
  keras-cifar run "$recipe" "${SCALE[@]}" "${PARALLEL[@]}" --seeds auto
done
