"""scikit-learn baselines for a quality set (a folder with table.csv and its media).

    python benchmarks/quality/baselines.py runs/quality/fashion4 [--threads 1]

On the table's own train/val/test split:
  (a) per modality, logistic regression on simple features, C chosen on val from a small
      grid, fitted on train only (records lacking the modality, or whose file does not
      decode, are left out of that model):
        image  grey pixels resized to 28x28, scaled to [0, 1];
        audio  log-mel at 16 kHz (25 ms window, 10 ms hop, 64 mels): per-band mean and
               std over time, and mean |delta| and std of the deltas (256 numbers), standardised;
        text   TF-IDF of words (1-2 grams) and characters (2-5 grams, within words);
        video  frames decoded by ffmpeg to 16x16 grey: mean frame and per-pixel std over
               frames (512 numbers), standardised;
        table  the other columns: numbers standardised (missing -> 0 plus an indicator),
               categories one-hot;
      test accuracy over every test record (a record lacking the modality gets the
      training split's most frequent class) and over the records that have it;
  (b) late fusion: the sum of the per-modality models' log-probabilities over the
      modalities each record has;
  (c) HistGradientBoostingClassifier on hand features of all modalities concatenated
      (image pooled to 14x14, the 256 audio statistics, text TF-IDF reduced to 30 SVD
      components plus presence of the 150 most frequent training words, video pooled to 8x8 mean and std, the table's numbers and
      categories as native categorical features; missing -> NaN), early stopping off, one
      of a few settings chosen on val;
  (d) pairwise tensor fusion (the Tensor Fusion Network's outer product, without the
      network): per modality 8/16/32 PCA (TF-IDF: SVD) components fitted on train, a
      constant 1 appended, the outer product of every pair of modalities, logistic
      regression; dimension and C chosen on val. Unlike (b) it can learn interactions
      between modalities (xor_pair needs them); unlike (c) it does not depend on greedy
      splits finding a signal that no single feature has.
Prints a table and writes SET_DIR/baselines.json (accuracy, macro-F1, seconds).
"""

import argparse
import csv
import json
import os
import sys
import time

_p = argparse.ArgumentParser()
_p.add_argument("set_dir")
_p.add_argument("--threads", type=int, default=1)
_p.add_argument("--skip-gbm", action="store_true", help="leave (c) out (quick checks)")
ARGS = _p.parse_args()
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)

import subprocess  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.io import wavfile  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402
from sklearn.decomposition import PCA, TruncatedSVD  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.pipeline import make_pipeline, make_union  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

SR = 16000
N_MELS = 64
TENSOR_DIMS = [8, 16, 32]
C_GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
GBM_GRID = [
    dict(learning_rate=0.1, max_iter=150, max_leaf_nodes=15, l2_regularization=1.0),
    dict(learning_rate=0.05, max_iter=300, max_leaf_nodes=31, l2_regularization=1.0),
    dict(learning_rate=0.1, max_iter=300, max_leaf_nodes=7, l2_regularization=0.0),
]
MEDIA = ("image", "audio", "video")
SKIP = {"id", "split", "label", "group"}


# ---------------------------------------------------------------- features

def image_feat(path):
    im = Image.open(path)
    im.load()
    im = im.convert("L")
    if im.size != (28, 28):
        im = im.resize((28, 28), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32) / 255.0


def mel_filterbank(sr=SR, n_fft=512, n_mels=N_MELS, fmin=0.0, fmax=None):
    fmax = fmax or sr / 2
    hz2mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    mel2hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)), np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[m] = np.maximum(0, np.minimum(up, down))
    return fb


FB = mel_filterbank()
WIN = np.hanning(400).astype(np.float32)


def audio_feat(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr, x = wavfile.read(path)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = x.astype(np.float32) / 2**31
    elif x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128) / 128.0
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise ValueError("empty audio")
    if sr != SR:
        g = np.gcd(int(sr), SR)
        x = resample_poly(x, SR // g, int(sr) // g).astype(np.float32)
    hop, win = 160, 400
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n_frames = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * WIN, n=512, axis=1)) ** 2
    logmel = np.log(spec @ FB.T + 1e-6)  # [T, 64]
    d = np.diff(logmel, axis=0) if n_frames > 1 else np.zeros_like(logmel)
    return np.concatenate([logmel.mean(0), logmel.std(0), np.abs(d).mean(0), d.std(0)])


def video_frames(path, size=16):
    r = subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", path, "-vf",
                        f"scale={size}:{size}:flags=area,format=gray", "-f", "rawvideo", "-"],
                       capture_output=True)
    if r.returncode != 0 or len(r.stdout) < size * size:
        raise ValueError("video does not decode")
    return np.frombuffer(r.stdout, np.uint8)[: len(r.stdout) // (size * size) * size * size] \
        .reshape(-1, size, size).astype(np.float32) / 255.0


def pool(a, f):
    h, w = a.shape[-2:]
    return a.reshape(*a.shape[:-2], h // f, f, w // f, f).mean(axis=(-3, -1))


def load(set_dir):
    with open(os.path.join(set_dir, "table.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    cols = list(rows[0].keys())
    mods = [c for c in MEDIA if c in cols]
    has_text = "text" in cols
    table_cols = [c for c in cols if c not in SKIP and c not in MEDIA and c != "text"]
    numeric, categorical = [], []
    for c in table_cols:
        vals = [r[c] for r in rows if r[c] != ""]
        try:
            [float(v) for v in vals]
            numeric.append(c)
        except ValueError:
            categorical.append(c)
    return rows, mods, has_text, numeric, categorical


def extract(set_dir, rows, mods):
    """Per media modality: (features [n, d] with NaN rows where missing/broken, present)."""
    out, broken = {}, []
    fn = {"image": lambda p: image_feat(p).ravel(), "audio": audio_feat}
    for m in mods:
        feats, present = [], []
        for r in rows:
            v = None
            if r[m]:
                try:
                    if m == "video":
                        fr = video_frames(os.path.join(set_dir, r[m]))
                        v = np.concatenate([fr.mean(0).ravel(), fr.std(0).ravel()])
                    else:
                        v = fn[m](os.path.join(set_dir, r[m]))
                except Exception as e:  # a broken file is a missing modality
                    broken.append((r["id"], m, type(e).__name__))
            feats.append(v)
            present.append(v is not None)
        d = next(len(v) for v in feats if v is not None)
        x = np.full((len(rows), d), np.nan, np.float32)
        for i, v in enumerate(feats):
            if v is not None:
                x[i] = v
        out[m] = (x, np.array(present))
    return out, broken


# ---------------------------------------------------------------- models

def fit_lr(make, xtr, ytr, xva, yva):
    best = None
    for c in C_GRID:
        model = make(c).fit(xtr, ytr)
        acc = accuracy_score(yva, model.predict(xva)) if len(yva) else 0.0
        if best is None or acc > best[0]:
            best = (acc, c, model)
    return best


def main():
    set_dir = ARGS.set_dir
    t0 = time.time()
    rows, mods, has_text, numeric, categorical = load(set_dir)
    n = len(rows)
    split = np.array([r["split"] for r in rows])
    classes = sorted(set(r["label"] for r in rows))
    y = np.array([classes.index(r["label"]) for r in rows])
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    prior = np.bincount(y[tr], minlength=len(classes)) / tr.sum()
    majority = int(np.argmax(prior))

    media, broken = extract(set_dir, rows, mods)
    t_feat = time.time() - t0
    print(f"{os.path.basename(os.path.normpath(set_dir))}: {n} records "
          f"({tr.sum()}/{va.sum()}/{te.sum()}), {len(classes)} classes, features {t_feat:.1f} s; "
          f"undecodable files: {len(broken)} {broken}")

    # per-modality inputs: name -> (x_all, present, make_model)
    def dense_lr(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))

    def raw_lr(c):
        return LogisticRegression(C=c, max_iter=3000)

    inputs = {}
    for m in mods:
        x, present = media[m]
        inputs[m] = (np.nan_to_num(x), present, raw_lr if m == "image" else dense_lr)
    if has_text:
        texts = np.array([r["text"] for r in rows], dtype=object)
        present = texts != ""
        vec = make_union(
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))
        vec.fit(texts[tr & present])
        inputs["text"] = (vec.transform(texts), present, raw_lr)
    if numeric or categorical:
        num = np.array([[float(r[c]) if r[c] != "" else np.nan for c in numeric] for r in rows],
                       dtype=np.float64).reshape(n, len(numeric))
        cat = np.array([[r[c] for c in categorical] for r in rows], dtype=object).reshape(
            n, len(categorical))
        present = ~np.isnan(num).all(1) if numeric else np.ones(n, bool)
        if categorical:
            present |= (cat != "").any(1)
        mu = np.nanmean(num[tr], 0)
        sd = np.nanstd(num[tr], 0) + 1e-9
        parts = [np.nan_to_num((num - mu) / sd), np.isnan(num).astype(float)]
        if categorical:
            parts.append(OneHotEncoder(handle_unknown="ignore", sparse_output=False)
                         .fit(cat[tr]).transform(cat))
        inputs["table"] = (np.hstack(parts), present, raw_lr)

    results = {"set": os.path.basename(os.path.normpath(set_dir)), "records": n,
               "split": {"train": int(tr.sum()), "val": int(va.sum()), "test": int(te.sum())},
               "classes": len(classes), "chance": 1.0 / len(classes),
               "undecodable_files": [list(b) for b in broken], "feature_s": round(t_feat, 2),
               "per_modality": {}}
    logp = np.zeros((n, len(classes)))
    for name, (x, present, make) in inputs.items():
        t1 = time.time()
        a, b = tr & present, va & present
        val_acc, c, model = fit_lr(make, x[a], y[a], x[b], y[b])
        pred = np.full(n, majority)
        idx = np.flatnonzero(present)
        proba = model.predict_proba(x[idx])
        lp = np.full((len(idx), len(classes)), np.log(1e-12))
        lp[:, model.classes_] = np.log(np.clip(proba, 1e-12, 1))
        pred[idx] = model.classes_[proba.argmax(1)]
        logp[idx] += lp
        tp = te & present
        results["per_modality"][name] = {
            "C": c, "val_acc": round(val_acc, 4),
            "test_acc": round(accuracy_score(y[te], pred[te]), 4),
            "test_macro_f1": round(f1_score(y[te], pred[te], average="macro"), 4),
            "test_acc_present": round(accuracy_score(y[tp], pred[tp]), 4),
            "test_present": int(tp.sum()), "train_present": int(a.sum()),
            "s": round(time.time() - t1, 2)}

    # (b) late fusion: sum of log-probabilities over the modalities a record has
    t1 = time.time()
    anyp = np.zeros(n, bool)
    for _, present, _ in inputs.values():
        anyp |= present
    pred = np.where(anyp, logp.argmax(1), majority)
    results["late_fusion"] = {
        "test_acc": round(accuracy_score(y[te], pred[te]), 4),
        "test_macro_f1": round(f1_score(y[te], pred[te], average="macro"), 4),
        "val_acc": round(accuracy_score(y[va], pred[va]), 4),
        "s": round(sum(v["s"] for v in results["per_modality"].values())
                   + time.time() - t1, 2)}

    # (d) pairwise tensor fusion: low-dimensional features per modality (PCA / SVD fitted
    # on train, standardised, a constant 1 appended; a missing modality is all zeros but
    # the constant), the outer products of every pair of modalities, logistic regression;
    # the dimension and C chosen on val
    t1 = time.time()
    best = None
    for k in TENSOR_DIMS:
        zs = []
        for name, (x, present, _) in inputs.items():
            fit = tr & present
            if name == "text":
                z = TruncatedSVD(k, random_state=0).fit(x[fit]).transform(x)
            else:
                xs = StandardScaler().fit(x[fit]).transform(x) if name != "image" else x
                z = xs if xs.shape[1] <= k else PCA(k, random_state=0).fit(xs[fit]).transform(xs)
            z = (z - z[fit].mean(0)) / (z[fit].std(0) + 1e-9)
            z[~present] = 0.0
            zs.append(np.hstack([z, np.ones((n, 1))]))
        pairs = [(i, j) for i in range(len(zs)) for j in range(i + 1, len(zs))]
        xt2 = np.hstack([np.einsum("ni,nj->nij", zs[i], zs[j]).reshape(n, -1) for i, j in pairs])
        xt2 = StandardScaler().fit(xt2[tr]).transform(xt2)
        val_acc, c, model = fit_lr(lambda c: LogisticRegression(C=c, max_iter=3000),
                                   xt2[tr], y[tr], xt2[va], y[va])
        print(f"  tensor fusion dim {k}: val {val_acc:.3f} (C {c})", flush=True)
        if best is None or val_acc > best[0]:
            best = (val_acc, c, k, xt2.shape[1], model.predict(xt2))
    val_acc, c, k, nf, pred = best
    results["tensor_fusion"] = {
        "C": c, "dim": k, "features": int(nf), "val_acc": round(val_acc, 4),
        "test_acc": round(accuracy_score(y[te], pred[te]), 4),
        "test_macro_f1": round(f1_score(y[te], pred[te], average="macro"), 4),
        "s": round(time.time() - t1, 2)}

    # (c) gradient boosting on concatenated hand features (missing -> NaN)
    t1 = time.time()
    blocks, cat_mask = [], []
    for m in mods:
        x, present = media[m]
        if m == "image":
            f = pool(x.reshape(n, 28, 28), 2).reshape(n, -1)
        elif m == "video":
            f = np.hstack([pool(x[:, :256].reshape(n, 16, 16), 2).reshape(n, -1),
                           pool(x[:, 256:].reshape(n, 16, 16), 2).reshape(n, -1)])
        else:
            f = x
        blocks.append(f)
        cat_mask += [False] * f.shape[1]
    if has_text:
        xt, present, _ = inputs["text"]
        svd = TruncatedSVD(30, random_state=0).fit(xt[tr & present])
        words = CountVectorizer(binary=True, max_features=150).fit(texts[tr & present])
        f = np.hstack([svd.transform(xt), words.transform(texts).toarray()])
        f[~present] = np.nan
        blocks.append(f)
        cat_mask += [False] * f.shape[1]
    if numeric:
        blocks.append(num)
        cat_mask += [False] * num.shape[1]
    for j, c in enumerate(categorical):
        vocab = sorted(set(cat[tr, j]) - {""})
        codes = np.array([vocab.index(v) if v in vocab else np.nan for v in cat[:, j]], float)
        blocks.append(codes[:, None])
        cat_mask.append(True)
    xg = np.hstack(blocks).astype(np.float64)
    best = None
    for params in ([] if ARGS.skip_gbm else GBM_GRID):
        t2 = time.time()
        gbm = HistGradientBoostingClassifier(early_stopping=False, random_state=0,
                                             categorical_features=np.array(cat_mask), **params)
        gbm.fit(xg[tr], y[tr])
        acc = accuracy_score(y[va], gbm.predict(xg[va]))
        print(f"  gbm {params}: val {acc:.3f} ({time.time() - t2:.1f} s)", flush=True)
        if best is None or acc > best[0]:
            best = (acc, params, gbm)
    if best is not None:
        pred = best[2].predict(xg)
        results["gbm"] = {"params": best[1], "features": int(xg.shape[1]),
                          "val_acc": round(best[0], 4),
                          "test_acc": round(accuracy_score(y[te], pred[te]), 4),
                          "test_macro_f1": round(f1_score(y[te], pred[te], average="macro"), 4),
                          "s": round(time.time() - t1, 2)}
    results["total_s"] = round(time.time() - t0, 2)

    print(f"{'model':<22}{'C':>6}{'val':>7}{'test acc':>10}{'macro-F1':>10}"
          f"{'acc (present)':>15}{'s':>8}")
    for name, r in results["per_modality"].items():
        print(f"{'LR ' + name:<22}{r['C']:>6}{r['val_acc']:>7.3f}{r['test_acc']:>10.3f}"
              f"{r['test_macro_f1']:>10.3f}{r['test_acc_present']:>9.3f} ({r['test_present']:>3})"
              f"{r['s']:>8.1f}")
    r = results["late_fusion"]
    print(f"{'late fusion (sum log p)':<28}{r['val_acc']:>7.3f}{r['test_acc']:>10.3f}"
          f"{r['test_macro_f1']:>10.3f}{'':>15}{r['s']:>8.1f}")
    for key, title in (("tensor_fusion", "tensor fusion LR"), ("gbm", "GBM concat")):
        if key in results:
            r = results[key]
            print(f"{title:<28}{r['val_acc']:>7.3f}{r['test_acc']:>10.3f}"
                  f"{r['test_macro_f1']:>10.3f}{'':>15}{r['s']:>8.1f}")
    with open(os.path.join(set_dir, "baselines.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.join(set_dir, 'baselines.json')} ({results['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
