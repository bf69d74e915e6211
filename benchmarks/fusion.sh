#!/usr/bin/env bash
# Every fusion method on the synthetic complementary task (fusion-core), then the PyTorch
# peer on the same data, threads, architectures and optimiser, in one run.
#
#   PYTHON=/path/to/venv/bin/python benchmarks/fusion.sh [THREADS]
#
# PYTHON needs torch==2.11.0 and safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
python=${PYTHON:-python3}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
export OMP_NUM_THREADS=$threads
cargo build --quiet --release -p fusion-core --example compare_methods
target/release/examples/compare_methods --threads "$threads" --save-data "$data"
echo
"$python" benchmarks/peer_fusion.py "$data" --threads "$threads"
