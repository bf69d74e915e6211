"""Python peer of the demo's early-fusion run (`fusion extract` + `fusion train` with
`"fusion": {"family": "early", "method": "concat"}` on fixtures/demo): the same records,
the same features computed the usual Python way (PIL for pixels, librosa for the log-mel),
the same standardisation, model (MLP encoders 128-64 with ReLU and dropout 0.2, learned
placeholders for absent modalities, presence bits, classifier 64 -> 10), optimiser (AdamW
lr 1e-3, weight decay 0.01), batch size 32, modality dropout 0.2, early stopping on
validation accuracy (patience 10, at most 40 epochs), best weights tested.

    python benchmarks/peer_demo.py fixtures/demo/manifest.jsonl [--threads 2] [--seed 0]

Needs torch, librosa, pillow (pip install torch==2.11.0 librosa pillow).
"""
import argparse
import json
import os
import time

import librosa
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


def pixels(path):
    image = Image.open(path).convert("L").resize((28, 28), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32).reshape(-1) / 255.0


def log_mel(path):
    y, sr = librosa.load(path, sr=8000)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=256, hop_length=128, n_mels=40)
    db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
    fixed = np.full((40, 40), db.min(), dtype=np.float32)
    keep = min(40, db.shape[1])
    fixed[:, :keep] = db[:, :keep]
    return np.clip((fixed - db.max() + 80.0) / 80.0, 0.0, 1.0).reshape(-1)


def extract(manifest):
    base = os.path.dirname(manifest)
    records, skipped = [], []
    for line in open(manifest):
        r = json.loads(line)
        try:
            image = pixels(os.path.join(base, r["image"])) if "image" in r else None
            audio = log_mel(os.path.join(base, r["audio"])) if "audio" in r else None
        except Exception as e:  # a bad record is skipped, as the CLI does with on_bad_file: skip_record
            skipped.append((r["id"], str(e)[:60]))
            continue
        records.append((r, image, audio))
    return records, skipped


class Model(nn.Module):
    def __init__(self, dims, classes=10, hidden=64, dropout=0.2):
        super().__init__()
        self.encoders = nn.ModuleList(
            nn.ModuleList([nn.Linear(d, 128), nn.Linear(128, 64)]) for d in dims
        )
        self.placeholders = nn.ParameterList(nn.Parameter(torch.zeros(64)) for _ in dims)
        self.hidden = nn.Linear(64 * len(dims) + len(dims), hidden)
        self.out = nn.Linear(hidden, classes)
        self.dropout = dropout

    def forward(self, xs, present):
        parts = []
        for m, (x, layers) in enumerate(zip(xs, self.encoders)):
            for layer in layers:
                x = F.dropout(F.relu(layer(x)), self.dropout, self.training)
            keep = present[:, m : m + 1]
            parts.append(torch.where(keep, x, self.placeholders[m].expand_as(x)))
        h = torch.cat(parts + [present.float()], 1)
        return F.log_softmax(self.out(F.dropout(F.relu(self.hidden(h)), self.dropout, self.training)), -1)


def tensors(records, split, classes):
    rows = [x for x in records if x[0].get("split", "train") == split]
    feats, present = [], []
    for m, dim in enumerate([784, 1600]):
        feats.append(torch.tensor(np.stack([x[1 + m] if x[1 + m] is not None else np.zeros(dim, np.float32) for x in rows])))
        present.append(torch.tensor([x[1 + m] is not None for x in rows]))
    labels = torch.tensor([classes.index(x[0]["label"]) for x in rows])
    return feats, torch.stack(present, 1), labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    started = time.perf_counter()
    records, skipped = extract(args.manifest)
    extract_s = time.perf_counter() - started
    classes = sorted({r[0]["label"] for r in records if r[0].get("split", "train") == "train"}, key=float)
    train, val, test = (tensors(records, s, classes) for s in ("train", "val", "test"))
    # Standardise with training statistics: per-feature mean, one scale per modality.
    for m in range(2):
        rows = train[0][m][train[1][:, m]]
        mean = rows.mean(0)
        std = (rows - mean).pow(2).mean().sqrt().item() or 1.0
        for data in (train, val, test):
            data[0][m] = (data[0][m] - mean) / std * data[1][:, m : m + 1].float()

    model = Model([784, 1600])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    started = time.perf_counter()
    best, best_state, since = -1.0, None, 0
    n = train[2].shape[0]
    for epoch in range(40):
        model.train()
        for idx in torch.randperm(n).split(32):
            present = train[1][idx].clone()
            hide = torch.rand(present.shape) < 0.2
            hide &= ~(hide.all(1, keepdim=True))  # at least one modality stays
            present &= ~hide
            loss = F.nll_loss(model([f[idx] for f in train[0]], present), train[2][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(val[0], val[1]).argmax(1) == val[2]).float().mean().item()
        if acc > best:
            best, since = acc, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= 10:
                break
    train_s = time.perf_counter() - started
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        test_acc = (model(test[0], test[1]).argmax(1) == test[2]).float().mean().item()
    print(json.dumps({
        "records": len(records), "skipped": len(skipped), "extract_s": round(extract_s, 3),
        "epochs": epoch + 1, "train_s": round(train_s, 3), "test_accuracy": round(test_acc, 4),
    }))


if __name__ == "__main__":
    main()
