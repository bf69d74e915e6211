"""digits_av: 1,200 records of spoken and written digits (AV-MNIST style), label = digit.

    python benchmarks/quality/make_digits_av.py [--out runs/quality/digits_av] [--seed 0]

Per record of digit d:
  image  an MNIST training image of d (28x28 grey PNG), degraded: contrast cut to 30-70 %,
         shifted up to 1 px, an occluding block in 30 % of images, Gaussian noise;
  audio  a Free Spoken Digit Dataset recording of d (no recording used twice), resampled
         8 -> 16 kHz, mixed with white noise at 0..12 dB SNR; 16 kHz mono 16-bit WAV;
  n1, n2 two numeric columns of pure noise;
  group  the FSDD speaker.
No missing cells, no broken files.
"""

import argparse
import os
import sys

import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/quality/digits_av")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-per-class", type=int, default=120)
    args = ap.parse_args()
    ss = np.random.SeedSequence(args.seed + 1000).spawn(5)
    r_lab, r_img, r_aud, r_num, r_split = [np.random.default_rng(s) for s in ss]

    out = args.out
    C.fresh_dir(out)
    for d in ("image", "audio"):
        os.makedirs(os.path.join(out, d))

    y = C.balanced_labels(r_lab, 10, args.n_per_class)
    n = len(y)
    split = C.stratified_split(r_split, y, n_val=n // 12, n_test=n // 6)
    mx, my = C.load_mnist("train")
    img_idx = C.pick_per_class(r_img, my, y)
    files = sorted(f for f in os.listdir(C.FSDD_DIR) if f.endswith(".wav"))
    fdig = np.array([int(f.split("_")[0]) for f in files])
    aud_idx = C.pick_per_class(r_aud, fdig, y)

    rows = []
    for i in range(n):
        d = int(y[i])
        rid = f"d{i:04d}"
        img = C.degrade_image(r_img, mx[img_idx[i]], noise=0.22, contrast=(0.3, 0.7),
                              occlude=0.30, shift=1)
        C.save_png(os.path.join(out, "image", rid + ".png"), img)
        fname = files[aud_idx[i]]
        sr, x = C.read_wav_float(os.path.join(C.FSDD_DIR, fname))
        assert sr == 8000
        x = resample_poly(x, 2, 1).astype(np.float32)
        x = C.mix_noise(r_aud, x, r_aud.uniform(0, 12), pad_s=(0.0, 0.2))
        C.save_wav(os.path.join(out, "audio", rid + ".wav"), x)
        speaker = fname.split("_")[1]
        n1 = r_num.normal(0, 1)
        n2 = r_num.uniform(0, 100)
        rows.append([rid, split[i], d, f"image/{rid}.png", f"audio/{rid}.wav",
                     f"{n1:.4f}", f"{n2:.2f}", speaker])

    C.write_table(out, ["id", "split", "label", "image", "audio", "n1", "n2", "group"], rows)
    C.write_info(out, {
        "set": "digits_av", "seed": args.seed, "records": n,
        "split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "missing": {}, "broken": [],
        "sources": ["MNIST train (/work/shared/data/mnist)",
                    "Free Spoken Digit Dataset v1.0.10 (/work/shared/data/fsdd), CC BY-SA 4.0"],
        "groups": sorted(set(r[-1] for r in rows)),
    })
    print(f"digits_av: {n} records -> {out}/table.csv")


if __name__ == "__main__":
    main()
