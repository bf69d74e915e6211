#!/bin/sh
# Training throughput of the demo's configuration (fixtures/demo/config.json, on this
# machine's CPU), side by side in one run:
#   1. inputs held in memory against inputs streamed from shards on disk
#      (`"train": {"data": "memory" | "stream"}`): the same run bit for bit, so the same
#      test accuracy; train seconds and peak RSS of each, ratio of throughputs;
#   2. one process against two data-parallel processes (`--world-size 2`, c10d Gloo):
#      train seconds of each, ratio.
# Each measurement is the median of ROUNDS runs, the two sides alternating.
#
#   cargo build --release -p fusion-cli && sh benchmarks/scale.sh [ROUNDS]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
FUSION=$ROOT/target/release/fusion
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for data in memory stream; do
    python3 - "$ROOT" "$WORK" "$data" <<'PY'
import json, sys
root, work, data = sys.argv[1:]
config = json.load(open(f"{root}/fixtures/demo/config.json"))
config["manifest"] = f"{root}/fixtures/demo/manifest.jsonl"
config["cache"] = f"{work}/cache"
config["compare"] = []
config["train"]["data"] = data
json.dump(config, open(f"{work}/{data}.json", "w"))
PY
done
# run NAME CONFIG [ARGS...]: one training, its JSON result in $WORK/NAME.N.json
run() {
    name=$1 config=$2
    shift 2
    n=$(ls "$WORK" | grep -c "^$name\." || true)
    rm -rf "$WORK/run"
    "$FUSION" --json --device cpu train --config "$WORK/$config.json" --run "$WORK/run" "$@" \
        > "$WORK/$name.$n.json" 2> "$WORK/$name.log"
}
run warm memory  # fills the feature cache
for _ in $(seq "$ROUNDS"); do
    OMP_NUM_THREADS=2 run memory memory
    OMP_NUM_THREADS=2 run stream stream
done
for _ in $(seq "$ROUNDS"); do
    OMP_NUM_THREADS=2 run one memory
    # The launcher gives each of the two ranks one of the two cores.
    run two memory --world-size 2
done
python3 - "$WORK" <<'PY'
import glob, json, statistics, sys
work = sys.argv[1]
def runs(name):
    return [json.load(open(p)) for p in sorted(glob.glob(f"{work}/{name}.*.json"))]
def median(name, key):
    return statistics.median(r[key] for r in runs(name))
result = {}
for name in ["memory", "stream", "one", "two"]:
    rs = runs(name)
    result[name] = {
        "train_seconds": median(name, "train_seconds"),
        "epochs": len(rs[0]["epochs"]),
        "peak_rss_mb": median(name, "peak_rss_mb"),
        "test_accuracy": sorted({r["eval"]["metrics"]["accuracy"] for r in rs}),
    }
result["stream_vs_memory_throughput"] = result["memory"]["train_seconds"] / result["stream"]["train_seconds"]
result["two_vs_one_process_throughput"] = result["one"]["train_seconds"] / result["two"]["train_seconds"]
print(json.dumps(result, indent=1))
PY
