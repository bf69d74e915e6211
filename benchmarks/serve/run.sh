#!/bin/sh
# fusion serve against itself without batching and against a Python peer (FastAPI + uvicorn
# serving the same run exported as TorchScript), side by side on this machine:
# requests/s and p50/p95/p99 latency at concurrency 1, 4, 16 and 64, one record (the demo's
# image + audio) per request, through `cargo xtask load` (kept-alive connections).
#
#   sh benchmarks/serve/run.sh [PYTHON [MODEL]]
#     PYTHON: a venv's python with torch 2.11, fastapi, uvicorn, pillow, scipy (default: python3)
#     MODEL:  mlp (default: the demo's image + audio MLPs, config.json) or frozen (a frozen
#             pretrained EfficientNet-Lite0 on 224-pixel RGB pictures, config_frozen.json;
#             needs `cargo xtask models`)
# Needs `cargo build --release -p fusion-cli -p xtask`. Writes runs/serve-bench/MODEL/results.jsonl.
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${1:-python3}
MODEL=${2:-mlp}
case $MODEL in
    mlp) CONFIG=benchmarks/serve/config.json ;;
    frozen) CONFIG=benchmarks/serve/config_frozen.json ;;
    *) echo "MODEL is mlp or frozen" >&2; exit 2 ;;
esac
FUSION=target/release/fusion
LOAD=target/release/xtask
OUT=runs/serve-bench/$MODEL
REQUESTS=${REQUESTS:-400}
mkdir -p "$OUT"
if [ ! -f "$OUT/run/model.pt" ]; then
    $FUSION --quiet train --config "$CONFIG" --run "$OUT/run" --device cpu
    $FUSION --quiet export --run "$OUT/run" --device cpu
fi
"$PYTHON" - "$OUT/body.json" <<'PY'
import base64, json, sys
demo = "fixtures/demo/"
record = next(r for r in map(json.loads, open(demo + "manifest.jsonl")) if r["split"] == "test" and "image" in r and "audio" in r)
encode = lambda p: {"base64": base64.b64encode(open(demo + p, "rb").read()).decode()}
json.dump({"records": [{"id": "r", "image": encode(record["image"]), "audio": encode(record["audio"])}]}, open(sys.argv[1], "w"))
PY
: > "$OUT/results.jsonl"

wait_ready() {
    for _ in $(seq 1 100); do
        if curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary @"$OUT/body.json" "http://$1/v1/predict"; then return 0; fi
        sleep 0.2
    done
    echo "no answer from $1" >&2
    return 1
}

measure() { # NAME ADDR
    for c in 1 4 16 64; do
        n=$REQUESTS
        [ "$c" -ge 16 ] && n=$((REQUESTS * 2))
        $LOAD load --addr "$2" --body "$OUT/body.json" --concurrency "$c" --requests "$n" --warmup 20 |
            sed "s/^{/{\"server\":\"$1\",/" | tee -a "$OUT/results.jsonl"
    done
}

$FUSION --quiet serve --run "$OUT/run" --addr 127.0.0.1:18081 --max-batch 32 --max-delay-ms 2 --device cpu 2>/dev/null &
PID=$!
wait_ready 127.0.0.1:18081 && measure "fusion serve (batching)" 127.0.0.1:18081
kill -TERM $PID; wait $PID || true

$FUSION --quiet serve --run "$OUT/run" --addr 127.0.0.1:18082 --max-batch 1 --device cpu 2>/dev/null &
PID=$!
wait_ready 127.0.0.1:18082 && measure "fusion serve (max_batch 1)" 127.0.0.1:18082
kill -TERM $PID; wait $PID || true

FUSION_PEER_MODEL="$OUT/run/model.pt" "$PYTHON" -m uvicorn --app-dir benchmarks/serve peer:app \
    --host 127.0.0.1 --port 18090 --workers 2 --log-level warning &
PID=$!
wait_ready 127.0.0.1:18090 && measure "Python peer (FastAPI + uvicorn, 2 workers)" 127.0.0.1:18090
kill -TERM $PID; wait $PID || true

"$PYTHON" - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server | concurrency | requests/s | p50 ms | p95 ms | p99 ms | statuses |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['server']} | {r['concurrency']} | {r['requests_per_second']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['statuses']} |")
PY
