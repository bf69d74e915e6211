#!/usr/bin/env bash
# Issue 28 (a) and (b): temperature scaling and conformal sets on the demo and on AV-MNIST
# (hard protocol, 2,000 / 500 / 2,000, MultiBench's LeNets under early concat and a late
# product of experts), side by side in one run: accuracy, NLL and ECE on test before and
# after the temperature fitted on val, and the conformal sets' coverage and size.
#   cargo build --release -p fusion-cli && benchmarks/trust/calibration.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
fusion=target/release/fusion
out=runs/trust/calibration
mkdir -p "$out"
# The demo's configuration on its built-in data.
[ -f "$out/demo/eval.json" ] || $fusion --quiet train --config fixtures/demo/config.json --run "$out/demo" --device cpu >/dev/null
# AV-MNIST: the bench builds the data and trains both configurations (6 epochs, seed 0),
# under the clean protocol (val and test drawn alike: exchangeable) and the hard one (test
# speakers unseen in train and val, noisier test audio: not exchangeable).
runs=("$out/demo")
for protocol in clean hard; do
  cargo xtask bench avmnist --protocol $protocol --seeds 1 --epochs 6 --train 2000 --val 500 --test 2000 \
    --configs concat,late_product --fusion "$fusion" --no-benchmarks-md --out "$out/avmnist-$protocol.json" >/dev/null
  runs+=(target/bench/avmnist/$protocol-2000-500-2000/runs/concat-e6-0 target/bench/avmnist/$protocol-2000-500-2000/runs/late_product-e6-0)
done
echo "| run | T | test accuracy before → after | NLL before → after | ECE before → after | coverage / set size at 0.8 | at 0.9 | at 0.95 |"
echo "|---|---|---|---|---|---|---|---|"
for run in "${runs[@]}"; do
  $fusion --quiet calibrate --run "$run" --device cpu >/dev/null
  $fusion --quiet eval --run "$run" --json --device cpu |
    python3 benchmarks/trust/calibration_row.py "$(basename "$(dirname "$(dirname "$run")")")/$(basename "$run")"
done
