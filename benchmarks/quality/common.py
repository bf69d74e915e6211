"""Shared helpers for the quality data sets: IDX readers, the seeded split, espeak-ng speech,
noise mixing, WAV/PNG writing, mp4 encoding with the ffmpeg CLI, broken-file injection.

Everything is seeded; the same command writes the same table and the same media bytes
(espeak-ng, ffmpeg/libx264 with one thread and PNG/WAV writers are deterministic)."""

import csv
import gzip
import json
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
from PIL import Image
from scipy.io import wavfile
from scipy.signal import resample_poly

FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
# The shared data mirror beside the checkout (FUSION_DATA_MIRROR overrides it), as
# `cargo xtask data` reads it.
DATA_DIR = os.environ.get(
    "FUSION_DATA_MIRROR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"),
)
MNIST_DIR = os.path.join(DATA_DIR, "mnist")
FSDD_DIR = os.path.join(DATA_DIR, "fsdd", "recordings")
BBB_MP4 = os.path.join(DATA_DIR, "video", "bbb_360p_h264.mp4")

FASHION_NAMES = ["T-shirt", "trouser", "pullover", "dress", "coat",
                 "sandal", "shirt", "sneaker", "bag", "ankle boot"]
DIGIT_WORDS = ["zero", "one", "two", "three", "four",
               "five", "six", "seven", "eight", "nine"]

# espeak-ng voices (gmw voices of the Debian package, with voice variants); the voice is
# the record's `group` where a set uses espeak-ng.
VOICES = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029",
          "en-us+f3", "en+m3", "en-gb-x-rp+f2"]

SR = 16000


def read_idx(path):
    """An IDX (MNIST-format) gzip file as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(part="train"):
    pre = "train" if part == "train" else "t10k"
    x = read_idx(os.path.join(FASHION_DIR, f"{pre}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(FASHION_DIR, f"{pre}-labels-idx1-ubyte.gz"))
    return x, y.astype(int)


def load_mnist(part="train"):
    pre = "train" if part == "train" else "t10k"
    x = read_idx(os.path.join(MNIST_DIR, f"{pre}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(MNIST_DIR, f"{pre}-labels-idx1-ubyte.gz"))
    return x, y.astype(int)


def balanced_labels(rng, n_classes=10, per_class=120):
    """per_class records of each class, in a seeded random order."""
    y = np.repeat(np.arange(n_classes), per_class)
    rng.shuffle(y)
    return y


def stratified_split(rng, y, n_val=100, n_test=200):
    """A seeded split stratified by y: n_val and n_test records spread evenly over classes."""
    classes = np.unique(y)
    split = np.array(["train"] * len(y), dtype=object)
    for c in classes:
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        nv, nt = n_val // len(classes), n_test // len(classes)
        split[idx[:nv]] = "val"
        split[idx[nv:nv + nt]] = "test"
    return split


def pick_per_class(rng, pool_labels, y):
    """For each record's class y[i], an index into the pool with that label, no repeats."""
    out = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        want = np.flatnonzero(y == c)
        have = np.flatnonzero(pool_labels == c)
        out[want] = rng.choice(have, size=len(want), replace=False)
    return out


def save_png(path, img_u8):
    Image.fromarray(np.asarray(img_u8, dtype=np.uint8), mode="L").save(path, optimize=False)


def degrade_image(rng, img, noise=0.0, contrast=(1.0, 1.0), occlude=0.0, shift=0):
    """uint8 28x28 -> uint8: random contrast, a random shift, an occluding block with
    probability `occlude`, Gaussian noise (std `noise` in [0,1] units)."""
    x = img.astype(np.float32) / 255.0
    if shift:
        dy, dx = rng.integers(-shift, shift + 1, size=2)
        x = np.roll(np.roll(x, dy, axis=0), dx, axis=1)
    c = rng.uniform(*contrast)
    bg = rng.uniform(0.0, 1.0 - c)
    x = bg + c * x
    if rng.random() < occlude:
        h, w = rng.integers(8, 15, size=2)
        y0, x0 = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
        x[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 1)
    x = x + rng.normal(0, noise, size=x.shape)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def espeak(text, voice, speed, pitch, tmpdir):
    """espeak-ng speech as float32 at 16 kHz (espeak-ng writes 22,050 Hz)."""
    path = os.path.join(tmpdir, "s.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)),
                    "-w", path, text], check=True, capture_output=True)
    sr, x = wavfile.read(path)
    x = x.astype(np.float32) / 32768.0
    assert sr == 22050, sr
    return resample_poly(x, 320, 441).astype(np.float32)


def mix_noise(rng, x, snr_db, pad_s=(0.05, 0.3)):
    """Pad with random silence both sides, then add white noise at snr_db (relative to the
    speech's power over its voiced part)."""
    pre = int(rng.uniform(*pad_s) * SR)
    post = int(rng.uniform(*pad_s) * SR)
    y = np.concatenate([np.zeros(pre, np.float32), x, np.zeros(post, np.float32)])
    p = np.mean(x[np.abs(x) > 1e-3] ** 2) if np.any(np.abs(x) > 1e-3) else 1e-4
    n = rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), size=y.shape)
    y = y + n.astype(np.float32)
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y


def save_wav(path, x, sr=SR):
    wavfile.write(path, sr, np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))


def read_wav_float(path):
    sr, x = wavfile.read(path)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    return sr, x.astype(np.float32)


def encode_mp4(path, frames, fps=8):
    """uint8 frames [T, H, W] (H, W even) -> H.264 mp4 (yuv420p), one thread, deterministic."""
    t, h, w = frames.shape
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "23", "-pix_fmt", "yuv420p", "-threads", "1", "-x264-params", "threads=1",
           "-bitexact", "-map_metadata", "-1", "-movflags", "+faststart", path]
    subprocess.run(cmd, input=np.ascontiguousarray(frames, dtype=np.uint8).tobytes(),
                   check=True, capture_output=True)


def bbb_backgrounds(n=48, size=64, seed=0):
    """n grey 64x64 crops of Big Buck Bunny frames (first 30 s), used as video backgrounds."""
    cmd = ["ffmpeg", "-loglevel", "error", "-i", BBB_MP4, "-t", "30", "-vf",
           f"fps={n / 30:.4f},scale=160:90,format=gray", "-f", "rawvideo", "-threads", "1", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    fr = np.frombuffer(raw, np.uint8).reshape(-1, 90, 160)
    rng = np.random.default_rng(seed)
    out = []
    for f in fr:
        y0, x0 = rng.integers(0, 90 - size), rng.integers(0, 160 - size)
        out.append(f[y0:y0 + size, x0:x0 + size])
    return np.stack(out)


def break_file(path, keep_bytes):
    """Truncate a file to its first keep_bytes bytes (a deliberately broken file)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep_bytes])


def missing_mask(rng, n, mods, p):
    """[n, len(mods)] bool: True where the modality is missing; independent with probability
    p, redrawn for records that would lose every modality."""
    m = rng.random((n, len(mods))) < p
    for i in range(n):
        while m[i].all():
            m[i] = rng.random(len(mods)) < p
    return m


def fresh_dir(out):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)


def write_table(out, header, rows):
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_info(out, info):
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
        f.write("\n")


def tmp():
    return tempfile.TemporaryDirectory(prefix="quality-")
