#!/usr/bin/env bash
# Build the quality sets under runs/quality/ and run their scikit-learn baselines.
#   benchmarks/quality/build.sh                 # all three
#   benchmarks/quality/build.sh xor_pair        # one
# Needs (Debian): apt-get install -y dataset-fashion-mnist espeak-ng ffmpeg
# and the shared data mirror (../shared/data beside the checkout, or FUSION_DATA_MIRROR) with mnist, fsdd and video. The Python venv is made on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${QUALITY_VENV:-$HOME/.cache/quality-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r benchmarks/quality/requirements.txt
fi
for t in espeak-ng ffmpeg; do
  command -v "$t" >/dev/null || { echo "needs $t: apt-get install -y $t" >&2; exit 1; }
done
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
  { echo "needs apt-get install -y dataset-fashion-mnist" >&2; exit 1; }
for s in "${@:-fashion4 digits_av xor_pair}"; do
  for set in $s; do
    nice -n 10 "$VENV/bin/python" benchmarks/quality/make_$set.py --out runs/quality/$set
    nice -n 10 "$VENV/bin/python" benchmarks/quality/baselines.py runs/quality/$set
  done
done
