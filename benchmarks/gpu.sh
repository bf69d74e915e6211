#!/bin/sh
# Every GPU check in one call, on a machine with a GPU, PyTorch 2.11.0 in `python3` and no
# Rust: build the bundle where Rust is (`cargo xtask gpu-bundle`), carry it and the
# repository there, then from the repository root:
#
#   sh benchmarks/gpu.sh [--dry-run] [BUNDLE]        (BUNDLE: default target/gpu-bundle)
#
# Steps, each PASS or FAIL with its log in $OUT (default: a new temporary folder):
#   1. info      `fusion info --device cuda`: CUDA is available and its devices are listed
#   2. tests     the device-aware tests on CUDA: fusion-core's (every fusion method:
#                gradients reach every parameter, absent modalities and padding change
#                nothing) and the encoders' (CNNs, GRU, transformer, LeNets trained end to
#                end, reloaded, predicted from raw files, exported to TorchScript)
#   3. parity    the CPU-trained demo model evaluated on CUDA and on the CPU: test loss
#                within 1e-4 and the same accuracy (cuBLAS reduces in another order, so
#                not bit-identical); and the demo's configuration without dropout trained on
#                CPU and on CUDA with one seed, which learn alike: test accuracy within 0.05
#                and loss within 0.1 (not closer: the weights are drawn from the device's
#                generator, so the two runs start from different weights)
#   4. speed     the AV-MNIST LeNet + concat model on the demo data: `fusion train` against
#                the same model in an eager PyTorch loop on the same GPU (samples/s),
#                peak GPU memory of the PyTorch side
#   5. stream    step 3's device run with its training inputs streamed from disk (pinned
#                host memory, non-blocking copies): the same test accuracy and loss
#   6. parallel  step 3's device run as two data-parallel ranks (c10d Gloo, both on the
#                first GPU): test accuracy and loss within step 3's tolerances
#   7. bf16, fp16  step 3's device run with its forward pass autocast to bfloat16, and to
#                float16 with a loss scale: test accuracy within 0.05 and loss within 0.1
#                of the float32 run, with each one's peak GPU memory and time
# `--dry-run` runs the same steps on the CPU with one epoch (what `cargo xtask test` does,
# with the debug bundle of `cargo xtask gpu-bundle --debug --cpu`); step 4 needs a
# `python3` with torch (else it is skipped). Results: $OUT/gpu-results.jsonl, one line per
# step. Exit status 1 when a step failed.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DRY=0
BUNDLE=$ROOT/target/gpu-bundle
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -*) echo "gpu.sh: unknown option $arg" >&2; exit 2 ;;
        *) BUNDLE=$(cd "$arg" && pwd) ;;
    esac
done
FUSION=$BUNDLE/fusion
[ -x "$FUSION" ] || { echo "gpu.sh: no $FUSION (run: cargo xtask gpu-bundle)" >&2; exit 2; }
if [ "$DRY" = 1 ]; then DEVICE=cpu; EPOCHS=1; else DEVICE=cuda; EPOCHS=5; fi
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
RESULTS=$OUT/gpu-results.jsonl
: > "$RESULTS"
PYTHON=${PYTHON:-python3}
# The bundle finds libtorch in the PyTorch wheel (it has no rpath to the build machine's).
if TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    HAVE_TORCH=1
else
    HAVE_TORCH=0
fi
FAILED=0

# record STEP STATUS DETAIL_JSON
record() {
    printf '{"step": "%s", "status": "%s", "device": "%s", "detail": %s}\n' "$1" "$2" "$DEVICE" "$3" >> "$RESULTS"
    echo "$1: $2"
    [ "$2" != FAIL ] || FAILED=1
}

# json FILE EXPRESSION: a value from a JSON file (python3 is on both machines).
json() {
    python3 -c 'import json, sys; v = json.load(open(sys.argv[1])); print(json.dumps(eval(sys.argv[2], {"v": v})))' "$1" "$2"
}

echo "== 1. fusion info on $DEVICE"
if "$FUSION" --json info --device "$DEVICE" > "$OUT/info.json" 2> "$OUT/info.log"; then
    if [ "$DRY" = 1 ] || [ "$(json "$OUT/info.json" 'v["cuda_available"]')" = true ]; then
        record info PASS "$(cat "$OUT/info.json")"
    else
        record info FAIL "$(cat "$OUT/info.json")"
    fi
else
    record info FAIL "\"$(tail -1 "$OUT/info.log")\""
fi

echo "== 2. device-aware tests on $DEVICE"
for tests in methods encoders; do
    if FUSION_TEST_DEVICE=$DEVICE FUSION_FIXTURES=$ROOT/fixtures "$BUNDLE/tests/$tests" --test-threads 1 \
        > "$OUT/$tests.log" 2>&1; then
        record "$tests" PASS "\"$(grep 'test result' "$OUT/$tests.log" | tail -1)\""
    else
        record "$tests" FAIL "\"see $OUT/$tests.log\""
    fi
done

echo "== 3. the demo trained on cpu and on $DEVICE, same seed"
python3 - "$ROOT" "$OUT" "$EPOCHS" <<'PY'
import json, sys
root, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = json.load(open(f"{root}/fixtures/demo/config.json"))
config["manifest"] = f"{root}/fixtures/demo/manifest.jsonl"
config["cache"] = f"{out}/cache"
config["compare"] = []
# The bundle is built without video (no FFmpeg on a GPU machine).
config["modalities"] = [m for m in config["modalities"] if m["name"] != "video"]
config["train"]["epochs"] = epochs
config["dropout"] = 0.0
config["train"]["modality_dropout"] = 0.0
json.dump(config, open(f"{out}/demo.json", "w"))
for precision in ["bf16", "fp16"]:
    json.dump({**config, "train": {**config["train"], "precision": precision}},
              open(f"{out}/config-{precision}.json", "w"))
config["train"]["data"] = "stream"
json.dump(config, open(f"{out}/config-stream.json", "w"))
PY
parity=PASS
for side in cpu device; do
    device=cpu
    [ "$side" = cpu ] || device=$DEVICE
    if ! "$FUSION" --json train --config "$OUT/demo.json" --run "$OUT/demo-$side" --device "$device" \
        > "$OUT/demo-$side.json" 2> "$OUT/demo-$side.log"; then
        parity=FAIL
    fi
done
for side in cpu device; do
    device=cpu
    [ "$side" = cpu ] || device=$DEVICE
    if ! "$FUSION" --json eval --run "$OUT/demo-cpu" --device "$device" \
        > "$OUT/eval-$side.json" 2> "$OUT/eval-$side.log"; then
        parity=FAIL
    fi
done
if [ "$parity" = PASS ]; then
    detail=$(python3 - "$OUT" "$DEVICE" <<'PY'
import json, sys
out, device = sys.argv[1:]
load = lambda name: json.load(open(f"{out}/{name}.json"))
cpu, dev = load("demo-cpu"), load("demo-device")
acc = [r["eval"]["metrics"]["accuracy"] for r in (cpu, dev)]
loss = [r["eval"]["loss"] for r in (cpu, dev)]
trained_alike = abs(acc[0] - acc[1]) <= 0.05 and abs(loss[0] - loss[1]) <= 0.1
on_cpu, on_device = load("eval-cpu"), load("eval-device")
eval_loss = [on_cpu["loss"], on_device["loss"]]
eval_acc = [on_cpu["metrics"]["accuracy"], on_device["metrics"]["accuracy"]]
same_model = abs(eval_loss[0] - eval_loss[1]) <= 1e-4 and eval_acc[0] == eval_acc[1]
# On a GPU the caching allocator's peak is reported (absent on the CPU).
gpu_memory = (dev.get("peak_gpu_mb") is not None) == (device == "cuda")
seconds = [r["train_seconds"] for r in (cpu, dev)]
print(json.dumps({"ok": trained_alike and same_model and gpu_memory,
                  "same_model_evaluated": {"loss": eval_loss, "accuracy": eval_acc},
                  "trained": {"accuracy": acc, "loss": loss, "train_seconds": seconds},
                  "peak_rss_mb": [r.get("peak_rss_mb") for r in (cpu, dev)],
                  "peak_gpu_mb": dev.get("peak_gpu_mb")}))
PY
)
    case $detail in *'"ok": true'*) record parity PASS "$detail" ;; *) record parity FAIL "$detail" ;; esac
else
    record parity FAIL "\"see $OUT/demo-*.log\""
fi

echo "== 4. fusion train against an eager PyTorch loop on $DEVICE"
if [ "$HAVE_TORCH" = 1 ]; then
    python3 - "$ROOT" "$OUT" <<'PY'
import json, sys
root, out = sys.argv[1:]
config = json.load(open(f"{root}/configs/avmnist/concat.json"))
config["manifest"] = f"{root}/fixtures/demo/manifest.jsonl"
config["cache"] = f"{out}/cache-avmnist"
json.dump(config, open(f"{out}/avmnist.json", "w"))
PY
    if "$PYTHON" -W ignore "$ROOT/benchmarks/peer_avmnist.py" --fusion "$FUSION" --config "$OUT/avmnist.json" \
        --seeds 1 --epochs "$EPOCHS" --loops eager,fusion --device "$DEVICE" --threads 2 \
        > "$OUT/speed.log" 2>&1; then
        record speed PASS "$(sed -n '/^{$/,$p' "$OUT/speed.log" | tr -d '\n')"
    else
        record speed FAIL "\"see $OUT/speed.log\""
    fi
else
    record speed SKIP "\"no python3 with torch\""
fi

echo "== 5. step 3's $DEVICE run streamed from disk"
# compare NAME FILE TOLERANCE: test accuracy and loss of FILE against step 3's device run
compare() {
    python3 - "$OUT/demo-device.json" "$2" "$3" ${4:-} <<'PY'
import json, sys
base, other = (json.load(open(p)) for p in sys.argv[1:3])
tolerance = float(sys.argv[3])
acc = [r["eval"]["metrics"]["accuracy"] for r in (base, other)]
loss = [r["eval"]["loss"] for r in (base, other)]
ok = abs(acc[0] - acc[1]) <= tolerance and abs(loss[0] - loss[1]) <= max(tolerance, 1e-6)
# The streamed run must have streamed.
ok = ok and (other.get("streamed_from") is not None) == (tolerance == 0)
# Another precision learns alike, not the same: the loss may differ by up to 0.1.
if sys.argv[4:] == ["precision"]:
    ok = abs(acc[0] - acc[1]) <= tolerance and abs(loss[0] - loss[1]) <= 0.1 and not other.get("streamed_from")
print(json.dumps({"ok": ok, "accuracy": acc, "loss": loss,
                  "train_seconds": [r["train_seconds"] for r in (base, other)],
                  "peak_gpu_mb": [r.get("peak_gpu_mb") for r in (base, other)],
                  "streamed_from": other.get("streamed_from")}))
PY
}
for check in stream parallel; do
    if [ "$check" = stream ]; then
        set -- --config "$OUT/config-stream.json"
        tolerance=0
    else
        set -- --config "$OUT/demo.json" --world-size 2
        tolerance=0.05
    fi
    if "$FUSION" --json --device "$DEVICE" train "$@" --run "$OUT/demo-$check" \
        > "$OUT/demo-$check.json" 2> "$OUT/demo-$check.log" && [ -s "$OUT/demo-device.json" ]; then
        detail=$(compare "$check" "$OUT/demo-$check.json" "$tolerance")
        case $detail in *'"ok": true'*) record "$check" PASS "$detail" ;; *) record "$check" FAIL "$detail" ;; esac
    else
        record "$check" FAIL "\"see $OUT/demo-$check.log\""
    fi
    [ "$check" = stream ] && echo "== 6. step 3's $DEVICE run on two data-parallel ranks"
done

echo "== 7. step 3's $DEVICE run in bfloat16 and float16"
for precision in bf16 fp16; do
    if "$FUSION" --json --device "$DEVICE" train --config "$OUT/config-$precision.json" --run "$OUT/demo-$precision" \
        > "$OUT/demo-$precision.json" 2> "$OUT/demo-$precision.log" && [ -s "$OUT/demo-device.json" ]; then
        detail=$(compare "$precision" "$OUT/demo-$precision.json" 0.05 precision)
        case $detail in *'"ok": true'*) record "$precision" PASS "$detail" ;; *) record "$precision" FAIL "$detail" ;; esac
    else
        record "$precision" FAIL "\"see $OUT/demo-$precision.log\""
    fi
done

echo "results: $RESULTS"
cat "$RESULTS"
exit $FAILED
