"""The trust benchmarks' sets (issue 28), from MNIST and the Free Spoken Digit Dataset.

    python benchmarks/trust/make_sets.py spurious_av  --out runs/trust/spurious_av  [--seed 0]
    python benchmarks/trust/make_sets.py imbalanced_av --out runs/trust/imbalanced_av [--seed 0]

spurious_av (a spurious correlation broken at test, as Waterbirds is for images):
  label  `small` (digit 0-4) or `large` (5-9), read from the picture;
  image  an MNIST training picture of the digit, lightly degraded (contrast 50-90 %, noise);
  audio  an FSDD recording of a *random* digit (no information on the label) at 0-12 dB
         SNR, with a 2.5 kHz tone (-12 dB) mixed in when the record's attribute a = 1;
  group  `<label>_<tone|quiet>`: the four (label, attribute) pairs.
  In train (1,200 records) the tone goes with `large` in 95 % of records (a = label), so
  a model can read the label off the tone for all but 5 %; in val (200) and test (400)
  the attribute is drawn independently of the label and every group holds a quarter.

imbalanced_av (one class at 5 %):
  label  the digit; digit 0 holds 5 % of the records, the nine others share the rest alike,
         in every split (train 1,000 / val 100 / test 300 of 1,400);
  image  an MNIST training picture of the digit, degraded as digits_av's (contrast 30-70 %,
         1 px shift, occluding block in 30 %, noise);
  audio  an FSDD recording of the digit at 0-12 dB SNR.
"""

import argparse
import os
import sys

import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "quality"))
import common as C  # noqa: E402

TONE_HZ = 2500.0


def fsdd_files():
    files = sorted(f for f in os.listdir(C.FSDD_DIR) if f.endswith(".wav"))
    return files, np.array([int(f.split("_")[0]) for f in files])


def speech(rng, fname, snr_db):
    sr, x = C.read_wav_float(os.path.join(C.FSDD_DIR, fname))
    assert sr == 8000
    x = resample_poly(x, 2, 1).astype(np.float32)
    return C.mix_noise(rng, x, snr_db, pad_s=(0.0, 0.2))


def with_tone(x):
    t = np.arange(len(x), dtype=np.float32) / C.SR
    rms = float(np.sqrt(np.mean(x ** 2))) + 1e-6
    tone = np.sin(2 * np.pi * TONE_HZ * t).astype(np.float32) * rms * 10 ** (-12 / 20) * np.sqrt(2)
    y = x + tone
    return (y / max(1.0, float(np.abs(y).max()))).astype(np.float32)


def spurious_av(out, seed):
    ss = np.random.SeedSequence(seed + 2800).spawn(4)
    r_lab, r_img, r_aud, r_attr = [np.random.default_rng(s) for s in ss]
    sizes = {"train": 1200, "val": 200, "test": 400}
    mx, my = C.load_mnist("train")
    files, _ = fsdd_files()
    C.fresh_dir(out)
    for d in ("image", "audio"):
        os.makedirs(os.path.join(out, d))
    rows, used_img, k = [], set(), 0
    for split, n in sizes.items():
        if split == "train":
            y = r_lab.integers(0, 2, n)
            agree = r_attr.random(n) < 0.95
            a = np.where(agree, y, 1 - y)
        else:
            # Every (label, attribute) pair a quarter of the records.
            pairs = np.array([(yy, aa) for yy in (0, 1) for aa in (0, 1)] * (n // 4))
            pairs = pairs[r_lab.permutation(len(pairs))]
            y, a = pairs[:, 0], pairs[:, 1]
        for i in range(n):
            label = "large" if y[i] else "small"
            digits = np.arange(5, 10) if y[i] else np.arange(5)
            while True:
                j = int(r_img.choice(np.flatnonzero(np.isin(my, digits))))
                if j not in used_img:
                    used_img.add(j)
                    break
            rid = f"s{k:04d}"
            k += 1
            img = C.degrade_image(r_img, mx[j], noise=0.15, contrast=(0.5, 0.9))
            C.save_png(os.path.join(out, "image", rid + ".png"), img)
            x = speech(r_aud, files[int(r_aud.integers(len(files)))], r_aud.uniform(0, 12))
            if a[i]:
                x = with_tone(x)
            C.save_wav(os.path.join(out, "audio", rid + ".wav"), x)
            group = f"{label}_{'tone' if a[i] else 'quiet'}"
            rows.append([rid, split, label, f"image/{rid}.png", f"audio/{rid}.wav", group])
    C.write_table(out, ["id", "split", "label", "image", "audio", "group"], rows)
    groups = sorted(set(r[-1] for r in rows))
    C.write_info(out, {
        "set": "spurious_av", "seed": seed, "records": len(rows),
        "split": sizes,
        "groups": {s: {g: sum(1 for r in rows if r[1] == s and r[-1] == g) for g in groups} for s in sizes},
        "sources": ["MNIST train (/work/shared/data/mnist)",
                    "Free Spoken Digit Dataset v1.0.10 (/work/shared/data/fsdd), CC BY-SA 4.0"],
    })
    print(f"spurious_av: {len(rows)} records -> {out}/table.csv")


def imbalanced_av(out, seed):
    ss = np.random.SeedSequence(seed + 2900).spawn(3)
    r_lab, r_img, r_aud = [np.random.default_rng(s) for s in ss]
    sizes = {"train": 1000, "val": 100, "test": 300}
    mx, my = C.load_mnist("train")
    files, fdig = fsdd_files()
    C.fresh_dir(out)
    for d in ("image", "audio"):
        os.makedirs(os.path.join(out, d))
    rows, k = [], 0
    used_aud, used_img = set(), set()
    for split, n in sizes.items():
        rare = round(0.05 * n)
        y = np.concatenate([np.zeros(rare, int), np.arange(1, 10).repeat(-(-(n - rare) // 9))[: n - rare]])
        y = y[r_lab.permutation(n)]
        # No picture in two splits.
        img_idx = C.pick_per_class(r_img, np.where(np.isin(np.arange(len(my)), list(used_img)), -1, my), y)
        used_img.update(int(j) for j in img_idx)
        for i in range(n):
            d = int(y[i])
            rid = f"m{k:04d}"
            k += 1
            img = C.degrade_image(r_img, mx[img_idx[i]], noise=0.22, contrast=(0.3, 0.7), occlude=0.30, shift=1)
            C.save_png(os.path.join(out, "image", rid + ".png"), img)
            pool = [f for f in np.flatnonzero(fdig == d) if f not in used_aud]
            f = int(r_aud.choice(pool))
            used_aud.add(f)
            C.save_wav(os.path.join(out, "audio", rid + ".wav"), speech(r_aud, files[f], r_aud.uniform(0, 12)))
            rows.append([rid, split, d, f"image/{rid}.png", f"audio/{rid}.wav"])
    C.write_table(out, ["id", "split", "label", "image", "audio"], rows)
    C.write_info(out, {
        "set": "imbalanced_av", "seed": seed, "records": len(rows), "split": sizes,
        "class_0_records": {s: int(sum(1 for r in rows if r[1] == s and r[2] == 0)) for s in sizes},
        "sources": ["MNIST train (/work/shared/data/mnist)",
                    "Free Spoken Digit Dataset v1.0.10 (/work/shared/data/fsdd), CC BY-SA 4.0"],
    })
    print(f"imbalanced_av: {len(rows)} records -> {out}/table.csv")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("set", choices=["spurious_av", "imbalanced_av"])
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out or f"runs/trust/{args.set}"
    {"spurious_av": spurious_av, "imbalanced_av": imbalanced_av}[args.set](out, args.seed)


if __name__ == "__main__":
    main()
