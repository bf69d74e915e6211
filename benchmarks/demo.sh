#!/bin/sh
# The demo's early-fusion job end to end against its Python peer (PIL + librosa + PyTorch,
# benchmarks/peer_demo.py): feature extraction from the raw files (cold cache) and
# training + test accuracy of the same model over five seeds.
#
#   cargo build --release -p fusion-cli && sh benchmarks/demo.sh [PYTHON]
#
# PYTHON must have torch 2.11.0, librosa and pillow. Both sides use 2 threads.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${1:-python3}
FUSION=$ROOT/target/release/fusion
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2
# The demo configuration without its video modality (the peer has image + audio), with
# early concat fusion and one seed per file.
for seed in 0 1 2 3 4; do
    "$PYTHON" - "$ROOT" "$WORK" "$seed" <<'PY'
import json, sys
root, work, seed = sys.argv[1:]
config = json.load(open(f"{root}/fixtures/demo/config.json"))
config["manifest"] = f"{root}/fixtures/demo/manifest.jsonl"
config["cache"] = f"{work}/cache"
config["modalities"] = [m for m in config["modalities"] if m["name"] != "video"]
config["compare"] = []
# The peer leaves out a record with any broken file: so does this side.
config["on_bad_file"] = "skip_record"
config["fusion"] = {"family": "early", "method": "concat"}
config["train"]["seed"] = int(seed)
json.dump(config, open(f"{work}/config{seed}.json", "w"))
PY
done
echo "== fusion extract, cold cache (the demo's images and recordings)"
start=$(date +%s.%N)
"$FUSION" extract --config "$WORK/config0.json" --quiet
end=$(date +%s.%N)
echo "fusion extract: $(echo "$end - $start" | bc) s"
echo "== fusion train (early concat), seeds 0-4"
for seed in 0 1 2 3 4; do
    "$FUSION" train --config "$WORK/config$seed.json" --run "$WORK/run$seed" --device cpu --json 2>/dev/null |
        "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"epochs": len(r["epochs"]), "train_s": round(r["train_seconds"], 3), "test_accuracy": round(r["eval"]["metrics"]["accuracy"], 4)}))'
done
echo "== Python peer, seeds 0-4"
for seed in 0 1 2 3 4; do
    "$PYTHON" -W ignore "$ROOT/benchmarks/peer_demo.py" "$ROOT/fixtures/demo/manifest.jsonl" --seed "$seed" 2>/dev/null
done
