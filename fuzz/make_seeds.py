"""Writes the seed corpora of the fuzz targets (fuzz/corpus/NAME/). Run from the repository
root with the peer venv (numpy, pillow, safetensors): python fuzz/make_seeds.py"""
import io, json, shutil, struct, wave, zlib
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save

root = Path(__file__).resolve().parent
fixtures = root.parent / "fixtures"
corpus = root / "corpus"


def put(target, name, data):
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def wav(rate, channels, width, frames):
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        signal = (np.sin(np.arange(frames * channels) / 3.0) * (2 ** (8 * width - 2))).astype(f"<i{width}" if width > 1 else "u1")
        w.writeframes(signal.tobytes())
    return out.getvalue()


put("wav_log_mel", "mono_8k.wav", wav(8000, 1, 2, 1000))
put("wav_log_mel", "stereo_8bit.wav", wav(8000, 2, 1, 400))
put("wav_log_mel", "mono_16k.wav", wav(16000, 1, 2, 600))

put("image", "digit.png", (fixtures / "image/mnist_digit_28x28.png").read_bytes())
rgb = Image.fromarray((np.arange(8 * 8 * 3) % 251).astype(np.uint8).reshape(8, 8, 3))
for fmt in ["JPEG", "GIF", "BMP", "TIFF", "WEBP", "PNG"]:
    out = io.BytesIO()
    rgb.save(out, format=fmt)
    put("image", f"tiny.{fmt.lower()}", out.getvalue())

for name in ["testsrc_vp9_silent.webm", "testsrc_h264_aac.mp4"]:
    put("video", name, (fixtures / "video" / name).read_bytes())

put("tokens", "words.txt", b"the seven spoken digits, one two three")
put("tokens", "unicode.txt", "caf\u00e9 \u65e5\u672c \U0001F600".encode())

put("manifest_jsonl", "records.jsonl", b'{"id": "a", "label": "7", "split": "train", "image": "a.png"}\n'
    b'{"id": 2, "label": 3, "text": "three", "audio": "b.wav", "group": "g"}\n{ not json\n')
put("manifest_csv", "records.csv", b"id,label,split,image,audio,text\na,7,train,a.png,,\n"
    b'b,3,,,b.wav,"three, with a comma"\n')


def crc(entries, kinds):
    value = 0
    for name in sorted(entries):
        array = entries[name]
        value = zlib.crc32(name.encode(), value)
        value = zlib.crc32(kinds(array).encode(), value)
        value = zlib.crc32(array.tobytes(), value)
    return value


shard = {"0f3a": np.array([0.0, 0.5, 1.0], dtype=np.float32), "91bc": np.array([0.25, 0.75, 0.0], dtype=np.float32)}
sum_ = crc(shard, lambda a: "[" + ", ".join(str(d) for d in a.shape) + "]")
put("feature_shard", "shard.safetensors", save(shard, metadata={"crc32": f"{sum_:08x}"}))

put("run_config", "concat.json", (root.parent / "configs/avmnist/concat.json").read_bytes())
put("run_config", "late.json", json.dumps({
    "manifest": "m.jsonl", "modalities": [
        {"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "mlp", "hidden": [8]}},
        {"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 8, "frames": 4}}],
    "fusion": {"family": "late", "combiner": "mean"},
    "train": {"epochs": 1, "batch_size": 4, "schedule": {"kind": "cosine", "warmup_epochs": 1}}}).encode())

weights = {"layer.weight": np.array([[1.0, -2.0]], dtype=np.float32), "step": np.array(3, dtype=np.int64)}
kind = {np.dtype(np.float32): "Float", np.dtype(np.int64): "Int64"}
sum_ = crc(weights, lambda a: kind[a.dtype] + "[" + ", ".join(str(d) for d in a.shape) + "]")
weights["__checksum__.crc32"] = np.array(sum_, dtype=np.int64)
put("checkpoint", "weights.safetensors", save(weights))
print("seeds written to", corpus)

# Zero-config tables: first byte 0 for CSV, 1 for JSON Lines; a `label` column.
rows = ["id,label,size,colour,note"]
for i in range(24):
    rows.append(f"r{i},{'yes' if i % 3 else 'no'},{i * 1.5},{['red', 'blue'][i % 2]},a short note number {i}")
put("table_inference", "table.csv", b"\x00" + ("\n".join(rows) + "\n").encode())
lines = [json.dumps({"id": f"r{i}", "label": i % 2, "x": i / 7, "kind": "ab"[i % 2]}) for i in range(20)]
put("table_inference", "table.jsonl", b"\x01" + ("\n".join(lines) + "\n").encode())

put("ensemble_file", "ensemble.json", json.dumps({
    "members": [{"run": "/runs/a", "weight": 0.75, "loss": 0.41}, {"run": "/runs/b", "weight": 0.25, "loss": 0.52}],
    "classes": ["cat", "dog"], "selected_on": "val", "records": 10, "rounds": 4, "losses": [0.41, 0.39],
}, indent=2).encode())

# Run folders' JSON: first byte 0 run.json, 1 classes.json, 2 model.json, 3 train.json.
demo = json.loads((fixtures / "demo/config.json").read_text())
put("run_json", "run.json", b"\x00" + json.dumps(demo).encode())
put("run_json", "classes.json", b"\x01" + json.dumps(["cat", "dog", "bird"]).encode())
put("run_json", "model.json", b"\x02" + json.dumps({
    "modalities": [{"name": "x", "input_dim": 6, "encoder": {"kind": "mlp", "hidden": [8]}}],
    "num_classes": 3, "task": "classification", "hidden_dim": 16, "dropout": 0.1,
    "fusion": {"family": "early", "method": "concat"}}).encode())
put("run_json", "train.json", b"\x03" + json.dumps({"epochs": 1, "batch_size": 32, "optimizer": {"kind": "adam_w", "lr": 0.001, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-08}, "schedule": {"kind": "constant"}, "grad_clip": None, "early_stopping": {"metric": "loss", "patience": 5}, "seed": 0, "modality_dropout": 0.1, "branch_loss_weight": 1.0, "checkpoint_every_s": 30.0}).encode())

# Streamed datasets: the index of the three shards `shard_index` writes on its first call.
index = {"version": 2, "modalities": [{"dtype": "F32", "shape": [3], "padded": False},
         {"dtype": "I64", "shape": [4], "padded": True}], "labels": {"dtype": "I64", "shape": [], "padded": False},
         "shards": [{"file": f"0000{i}.safetensors", "rows": 2} for i in range(3)]}
put("shard_index", "index.json", (json.dumps(index, indent=2) + "\n").encode())
