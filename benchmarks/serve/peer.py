"""The Python peer of `fusion serve` in benchmarks/serve: FastAPI + uvicorn serving the same
run exported as TorchScript (`fusion export`), with the same request format and the same
preprocessing steps (PIL: grey or RGB, resize, [0, 1], ImageNet statistics for a pretrained encoder; WAV → 8 kHz → log-mel through torch.stft),
one record per forward pass, as such servers are usually written.

    uvicorn --app-dir benchmarks/serve peer:app --port 18090 --workers 2
with FUSION_PEER_MODEL=RUN/model.pt in the environment.
"""

import base64
import io
import json
import math
import os

import numpy as np
import scipy.io.wavfile
import scipy.signal
import torch
from fastapi import FastAPI, HTTPException
from PIL import Image

torch.set_num_threads(1)
MODEL_PATH = os.environ["FUSION_PEER_MODEL"]
MODEL = torch.jit.load(MODEL_PATH).eval()
SIGNATURE = json.load(open(MODEL_PATH + ".json"))
CLASSES = SIGNATURE["classes"]
SAMPLE_RATE, N_FFT, HOP, N_MELS, FRAMES = 8000, 256, 128, 40, 40
# The picture as the export reads it: flat grey pixels [B, S·S], or an RGB image
# [B, 3, S, S] normalised with ImageNet's statistics (a frozen pretrained encoder).
IMAGE_SHAPE = next(i["shape"] for i in SIGNATURE["inputs"] if i["name"] == "image.features")
RGB = len(IMAGE_SHAPE) == 4
SIZE = IMAGE_SHAPE[-1] if RGB else int(math.isqrt(IMAGE_SHAPE[-1]))
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def mel_filters(n_mels, n_fft, rate):
    """Triangular filters on the HTK mel scale, [n_fft // 2 + 1, n_mels]."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)
    points = [hz(m) for m in np.linspace(mel(0.0), mel(rate / 2), n_mels + 2)]
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    bank = np.zeros((n_fft // 2 + 1, n_mels), dtype=np.float32)
    for m in range(n_mels):
        lo, mid, hi = points[m], points[m + 1], points[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        bank[:, m] = np.maximum(0, np.minimum(up, down))
    return torch.from_numpy(bank)


FILTERS = mel_filters(N_MELS, N_FFT, SAMPLE_RATE)
WINDOW = torch.hann_window(N_FFT)


def image_features(data):
    image = Image.open(io.BytesIO(data)).convert("RGB" if RGB else "L").resize((SIZE, SIZE), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if RGB:
        return torch.from_numpy(((pixels - MEAN) / STD).transpose(2, 0, 1).copy())
    return torch.from_numpy(pixels).reshape(-1)


def audio_features(data):
    rate, samples = scipy.io.wavfile.read(io.BytesIO(data))
    samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if np.issubdtype(samples.dtype, np.floating) and np.abs(samples).max() > 1.5:
        samples = samples / 32768.0
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        samples = scipy.signal.resample_poly(samples, SAMPLE_RATE // g, rate // g).astype(np.float32)
    spectrum = torch.stft(torch.from_numpy(samples), N_FFT, HOP, window=WINDOW, return_complex=True).abs() ** 2
    mel = torch.log(spectrum.T @ FILTERS + 1e-6)  # [T, n_mels]
    out = torch.zeros(FRAMES, N_MELS)
    out[: min(FRAMES, mel.shape[0])] = mel[:FRAMES]
    return out


app = FastAPI()


@app.post("/v1/predict")
def predict(body: dict):
    out = []
    for record in body.get("records", []):
        try:
            image = image_features(base64.b64decode(record["image"]["base64"]))
            audio = audio_features(base64.b64decode(record["audio"]["base64"]))
        except Exception as e:  # noqa: BLE001 - the record's file is the problem
            raise HTTPException(status_code=422, detail=str(e))
        with torch.no_grad():
            scores = MODEL(
                image.unsqueeze(0) if RGB else image.reshape(1, -1), torch.ones(1, dtype=torch.bool),
                audio.reshape(1, -1), torch.ones(1, dtype=torch.bool),
            )
            probabilities = torch.softmax(scores, dim=-1)[0].tolist()
        k = int(np.argmax(probabilities))
        out.append({
            "id": record.get("id", ""),
            "prediction": CLASSES[k],
            "confidence": probabilities[k],
            "probabilities": dict(zip(CLASSES, probabilities)),
        })
    return {"predictions": out}
