#!/usr/bin/env bash
# Decode + resize(256) + crop(224) + normalise images/s: fusion-image (1 and N threads) vs
# torchvision/PIL (1 and N processes) on the same files, one after the other in one run.
# The images: 300 frames of Big Buck Bunny (640×360) cut with ffmpeg, as JPEG and PNG.
#
#   PYTHON=/path/to/venv/bin/python benchmarks/image.sh VIDEO [THREADS]
#
# VIDEO: ../shared/data/video/bbb_360p_h264.mp4. PYTHON needs torchvision and pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
video=$1
threads=${2:-2}
python=${PYTHON:-python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
ffmpeg -loglevel error -i "$video" -vf fps=10 -frames:v 150 -q:v 3 "$dir/frame_%03d.jpg"
ffmpeg -loglevel error -ss 15 -i "$video" -vf fps=10 -frames:v 150 "$dir/frame_%03d.png"
cargo build --quiet --release -p fusion-image --example bench_image
"$python" benchmarks/peer_image.py "$dir" --threads "$threads"
target/release/examples/bench_image "$dir" --threads 1
target/release/examples/bench_image "$dir" --threads "$threads"
