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
