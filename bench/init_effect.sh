#!/usr/bin/env bash
# The effect of --init (issue 25) on the demo's setting (examples/fashion-mnist/Makefile): LaViD with the
# demo's SmolLM2 targets, small_cnn, 100 images per class, 5 epochs, lambda 5, seeds 0-2, once with
# --init timm (makd's default: extra head rows start at zero) and once with --init reference (PyTorch's
# default Linear init, as LaViD's code). STUDENT=resnet18 adds timm's zero-init of residual BN scales.
# Usage: bench/init_effect.sh [WORK]   (needs llama-cpp-python for the demo's targets)
set -euo pipefail
work=${1:-work-init}; makd=${MAKD:-makd}; student=${STUDENT:-small_cnn}
here=$(cd "$(dirname "$0")/.." && pwd)
make -s -C "$here/examples/fashion-mnist" MAKD="$makd" WORK="$(realpath -m "$work")" "$(realpath -m "$work")/targets.h5"
for init in timm reference; do
  for seed in 0 1 2; do
    out="$work/runs/$student-$init/seed$seed"
    [ -f "$out/best.pt" ] || $makd train --data fashion-mnist --student "$student" --epochs 5 --per-class 100 --seed $seed \
        --method lavid --aux-weight 5 --targets "$work/targets.h5" --init $init -o "$out" --quiet
  done
done
$makd eval "$work/runs/$student-timm" "$work/runs/$student-reference" --format markdown
