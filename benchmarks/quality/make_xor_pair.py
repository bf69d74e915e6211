"""xor_pair: 1,200 records whose label needs two modalities together.

    python benchmarks/quality/make_xor_pair.py [--out runs/quality/xor_pair] [--seed 0]

Two hidden factors, independent and uniform over 0..9 (every (a, b) pair 12 times):
  a  a Fashion-MNIST class, shown by the picture and named by the text note;
  b  a digit, spoken in the audio and written (with 20 % of the cells replaced by a random
     shelf) in the table's `shelf` column.
label = "k{(a + b) mod 10}". Each of a and b alone says nothing about the label (every
label is equally likely given one factor), so any single modality is at chance; one
carrier of a (image or text) with one carrier of b (audio or shelf) determines it.
Columns:
  image  a Fashion-MNIST test-part item of class a (28x28 grey PNG), mildly degraded;
  audio  espeak-ng saying digit b in a short phrase (8 voices, random speed/pitch, white
         noise at 4-16 dB SNR); 16 kHz mono 16-bit WAV; the voice is the `group`;
  text   a note naming the item (15 % generic, naming no item);
  shelf  categorical s0..s9 (= b for 80 % of records, random otherwise);
  mass numeric noise; priority categorical noise (low/normal/high).
factors.csv (beside table.csv, not part of it) holds a and b for diagnostics.
Split stratified by the (a, b) pair: 9 train, 1 val, 2 test records per pair.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
from make_fashion4 import SYN, COLOURS  # noqa: E402

PHRASES = ["{d}", "number {d}", "shelf {d}", "it goes to {d}", "{d}, thanks"]
NOTES = [
    "Box contains a {colour} {item}.",
    "Packed: {item}, {colour}.",
    "One {item} inside, handle with care.",
    "Returned {item} ({colour}).",
    "Customer order: {colour} {item}.",
]
GENERIC = [
    "Handle with care.",
    "Packed on Monday, {colour} wrapping.",
    "Customer order, see attached slip.",
    "Fragile, keep dry.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/quality/xor_pair")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-pair", type=int, default=12)
    args = ap.parse_args()
    ss = np.random.SeedSequence(args.seed + 2000).spawn(6)
    r_lab, r_img, r_aud, r_txt, r_tab, r_split = [np.random.default_rng(s) for s in ss]

    out = args.out
    C.fresh_dir(out)
    for d in ("image", "audio"):
        os.makedirs(os.path.join(out, d))

    pair = np.repeat(np.arange(100), args.per_pair)
    r_lab.shuffle(pair)
    a, b = pair // 10, pair % 10
    y = (a + b) % 10
    n = len(y)
    k = args.per_pair
    split = C.stratified_split(r_split, pair, n_val=100 * (k // 12), n_test=200 * (k // 12))
    fx, fy = C.load_fashion("test")
    img_idx = C.pick_per_class(r_img, fy, a)

    rows = []
    with C.tmp() as td:
        for i in range(n):
            rid = f"x{i:04d}"
            img = C.degrade_image(r_img, fx[img_idx[i]], noise=0.06, contrast=(0.6, 1.0),
                                  shift=2)
            C.save_png(os.path.join(out, "image", rid + ".png"), img)
            voice = str(r_aud.choice(C.VOICES))
            speed, pitch = r_aud.uniform(130, 200), r_aud.uniform(25, 75)
            phrase = str(r_aud.choice(PHRASES)).format(d=C.DIGIT_WORDS[b[i]])
            x = C.espeak(phrase, voice, speed, pitch, td)
            x = C.mix_noise(r_aud, x, r_aud.uniform(4, 16))
            C.save_wav(os.path.join(out, "audio", rid + ".wav"), x)
            colour = str(r_txt.choice(COLOURS))
            if r_txt.random() < 0.15:
                note = str(r_txt.choice(GENERIC)).format(colour=colour)
            else:
                note = str(r_txt.choice(NOTES)).format(colour=colour,
                                                       item=r_txt.choice(SYN[int(a[i])]))
            shelf = int(b[i]) if r_tab.random() >= 0.2 else int(r_tab.integers(10))
            weight = r_tab.lognormal(0, 0.5)
            prio = str(r_tab.choice(["low", "normal", "high"]))
            rows.append([rid, split[i], f"k{y[i]}", f"image/{rid}.png", f"audio/{rid}.wav",
                         note, f"s{shelf}", f"{weight:.3f}", prio, voice])
            if (i + 1) % 300 == 0:
                print(f"  {i + 1}/{n}", flush=True)

    with open(os.path.join(out, "factors.csv"), "w") as f:  # hidden factors, diagnostics only
        f.write("id,a,b\n")
        for i in range(n):
            f.write(f"x{i:04d},{a[i]},{b[i]}\n")
    C.write_table(out, ["id", "split", "label", "image", "audio", "text", "shelf", "mass",
                        "priority", "group"], rows)
    C.write_info(out, {
        "set": "xor_pair", "seed": args.seed, "records": n,
        "split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "missing": {}, "broken": [],
        "rule": "label = k{(fashion class of image/text + digit of audio/shelf) mod 10}",
        "sources": ["Debian dataset-fashion-mnist (t10k part)", "espeak-ng"],
        "groups": sorted(set(r[-1] for r in rows)),
    })
    print(f"xor_pair: {n} records -> {out}/table.csv")


if __name__ == "__main__":
    main()
