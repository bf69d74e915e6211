#!/usr/bin/env bash
# Issue 28's training benchmarks: group-robust training on a spurious correlation and
# class weights on an imbalanced set, 3 seeds each, side by side in one run.
#   benchmarks/trust/run.sh [SEED_OF_THE_SETS]   # 0: the reported sets; 1: the development draws
# Needs the release binary (cargo build --release -p fusion-cli) and what
# benchmarks/quality/build.sh needs (the Python venv, the shared data mirror).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${QUALITY_VENV:-$HOME/.cache/quality-venv}
PY="$VENV/bin/python"
seed=${1:-0}
prefix=$([ "$seed" = 0 ] && echo "" || echo "dev_")
out=runs/trust/$prefix
for set in spurious_av imbalanced_av; do
  [ -f "$out$set/table.csv" ] || "$PY" benchmarks/trust/make_sets.py "$set" --seed "$seed" --out "$out$set"
done
train() { # configs folder, runs folder
  for config in "$1"/*.json; do
    run="$2/$(basename "$config" .json)"
    [ -f "$run/eval.json" ] && continue
    rm -rf "$run"
    nice -n 5 target/release/fusion --quiet train --config "$config" --run "$run" --device cpu >/dev/null
  done
}
"$PY" benchmarks/trust/configs.py spurious "${out}spurious_av" "${out}configs/spurious" >/dev/null
"$PY" benchmarks/trust/configs.py imbalanced "${out}imbalanced_av" "${out}configs/imbalanced" >/dev/null
train "${out}configs/spurious" "${out}runs/spurious"
train "${out}configs/imbalanced" "${out}runs/imbalanced"
echo "## spurious_av (seed $seed): test, 400 records, four groups of 100"
"$PY" benchmarks/trust/configs.py summary "${out}runs/spurious"/*
echo "## imbalanced_av (seed $seed): test, 300 records, class 0 at 5 %"
"$PY" benchmarks/trust/configs.py summary "${out}runs/imbalanced"/*
