#!/usr/bin/env bash
# Sentence embedding and tokenization throughput: fusion-text vs sentence-transformers and
# HuggingFace tokenizers, same sentences, threads and batch, one after the other in one run.
#
#   PYTHON=/path/to/venv/bin/python benchmarks/text.sh [THREADS] [BATCH]
#
# PYTHON needs torch==2.11.0, sentence-transformers and tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
batch=${2:-32}
python=${PYTHON:-python3}
model=${FUSION_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fusion/models}/all-MiniLM-L6-v2
sentences=$(mktemp --suffix=.txt)
trap 'rm -f "$sentences"' EXIT
"$python" benchmarks/make_sentences.py "$sentences" 2000
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
cargo build --quiet --release -p fusion-text --features torch --example bench_text
"$python" benchmarks/peer_text.py --sentences "$sentences" --model "$model" --batch "$batch" --threads "$threads"
target/release/examples/bench_text --sentences "$sentences" --model "$model" --batch "$batch" --threads "$threads"
