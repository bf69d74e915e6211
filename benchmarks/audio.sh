#!/usr/bin/env bash
# Log-mel clips/s on the FSDD recordings: fusion-audio (1 and N threads) vs librosa
# (single-threaded by design) and torchaudio (N threads), one after the other in one run.
#
#   PYTHON=/path/to/venv/bin/python benchmarks/audio.sh [THREADS]
#
# PYTHON needs librosa, soundfile and torchaudio==2.11.0 (with torch==2.11.0).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
python=${PYTHON:-python3}
dir=${FUSION_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fusion/data}/fsdd/recordings
cargo build --quiet --release -p fusion-audio --example bench_audio
"$python" benchmarks/peer_audio.py "$dir" --threads "$threads"
target/release/examples/bench_audio "$dir" --threads 1
target/release/examples/bench_audio "$dir" --threads "$threads"
