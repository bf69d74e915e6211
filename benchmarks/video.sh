#!/usr/bin/env bash
# Video decode + scale to 224x224 RGB, all frames: fusion-video vs the ffmpeg CLI (the
# limit) and PyAV + numpy; then 16 uniform frames vs all frames. One run, same file,
# decoder threads left to FFmpeg's automatic choice in all three (2 cores here).
#
#   PYTHON=/path/to/venv/bin/python benchmarks/video.sh FILE...
#
# FILE: ../shared/data/video/bbb_360p_h264.mp4 and big_buck_bunny_0_30.webm.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
cargo build --quiet --release -p fusion-video --example bench_video
for file in "$@"; do
  echo "== $file"
  best=
  for _ in 1 2 3; do
    start=$(date +%s.%N)
    ffmpeg -loglevel error -i "$file" -vf scale=224:224,format=rgb24 -f null -
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
  done
  frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$file")
  echo "ffmpeg CLI: $frames frames decoded + scaled to 224x224 RGB in $best s: $(echo "$frames / $best" | bc) frames/s"
  "$python" benchmarks/peer_video.py "$file"
  target/release/examples/bench_video "$file"
done
