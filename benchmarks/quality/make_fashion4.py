"""fashion4: 1,200 records, 10 Fashion-MNIST classes, four modalities.

    python benchmarks/quality/make_fashion4.py [--out runs/quality/fashion4] [--seed 0]

Per record of class c:
  image  a Fashion-MNIST training item of class c (28x28 grey PNG), degraded (contrast,
         shift, noise, sometimes an occluding block);
  audio  espeak-ng saying the class name in a carrier phrase (8 voices, random speed and
         pitch), padded with silence and mixed with white noise at 0-12 dB SNR;
         16 kHz mono 16-bit WAV; the voice is the record's `group`;
  text   a templated listing description; 20 % generic (no class word), 10 % naming a
         confusable class instead;
  video  1.5 s, 8 fps, 64x64 H.264 mp4: ANOTHER item of class c zooming and moving over a
         Big Buck Bunny background, with noise.
Each modality is missing (empty cell) for 12 % of records independently (never all four),
and 8 files are deliberately truncated (2 PNG, 3 WAV, 3 MP4; listed in info.json).
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

SYN = {
    0: ["t-shirt", "tee", "top", "crew-neck tee"],
    1: ["trousers", "pants", "jeans", "slacks"],
    2: ["pullover", "sweater", "jumper", "knit sweater"],
    3: ["dress", "summer dress", "gown", "frock"],
    4: ["coat", "jacket", "parka", "overcoat"],
    5: ["sandals", "flip-flops", "slides", "strappy sandals"],
    6: ["shirt", "blouse", "button-down shirt", "flannel shirt"],
    7: ["sneakers", "trainers", "running shoes", "canvas sneakers"],
    8: ["bag", "handbag", "tote", "shoulder bag"],
    9: ["ankle boots", "boots", "booties", "chelsea boots"],
}
# a confusable class named instead of the true one in 10 % of descriptions
CONFUSE = {0: 6, 1: 3, 2: 4, 3: 4, 4: 2, 5: 7, 6: 0, 7: 9, 8: 4, 9: 7}
COLOURS = ["black", "white", "grey", "navy", "red", "beige", "olive", "brown", "pink", "blue"]
MATERIALS = ["cotton", "wool", "leather", "denim", "linen", "polyester", "suede", "canvas"]
TEMPLATES = [
    "A {colour} {item}.",
    "{Colour} {item}, {material}, size {size}.",
    "Second-hand {item} in {colour}, good condition.",
    "Listing: {material} {item}, {colour}.",
    "Lightweight {colour} {item} for everyday wear.",
    "Selling my {item}; {material}, hardly worn.",
]
GENERIC = [
    "An item in {colour}, {material}, size {size}.",
    "Great condition, barely used, {colour}.",
    "Lot {num}: see photo.",
    "Clearing out my wardrobe, {colour} {material} piece.",
    "Gift from a friend, never used. Size {size}.",
]
PHRASES = ["{n}", "a {n}", "this is a {n}", "{n}, please", "I am selling a {n}"]
SIZES = ["XS", "S", "M", "L", "XL", "38", "40", "42"]


def describe(rng, c):
    fill = dict(colour=rng.choice(COLOURS), material=rng.choice(MATERIALS),
                size=rng.choice(SIZES), num=int(rng.integers(1, 999)))
    fill["Colour"] = fill["colour"].capitalize()
    u = rng.random()
    if u < 0.20:
        return rng.choice(GENERIC).format(**fill)
    cls = CONFUSE[c] if u < 0.30 else c
    fill["item"] = rng.choice(SYN[cls])
    return rng.choice(TEMPLATES).format(**fill)


def video_frames(rng, item, backgrounds, t=12, size=64):
    bg = backgrounds[rng.integers(len(backgrounds))].astype(np.float32) / 255.0
    bg = 0.1 + 0.4 * bg
    s0, s1 = rng.uniform(28, 36), rng.uniform(36, 48)
    p0 = 0.5 + rng.uniform(-0.3, 0.3, size=2)
    p1 = 0.5 + rng.uniform(-0.3, 0.3, size=2)
    bright = rng.uniform(0.6, 1.0)
    frames = []
    for k in range(t):
        a = k / (t - 1)
        s = int(round(s0 + (s1 - s0) * a))
        im = np.asarray(Image.fromarray(item).resize((s, s), Image.BILINEAR),
                        dtype=np.float32) / 255.0
        y0, x0 = ((p0 + (p1 - p0) * a) * (size - s)).astype(int)
        f = bg.copy()
        alpha = im
        f[y0:y0 + s, x0:x0 + s] = f[y0:y0 + s, x0:x0 + s] * (1 - alpha) + alpha * bright
        f += rng.normal(0, 0.08, size=f.shape)
        frames.append(np.clip(np.round(f * 255), 0, 255))
    return np.stack(frames).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/quality/fashion4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-per-class", type=int, default=120)
    args = ap.parse_args()
    ss = np.random.SeedSequence(args.seed).spawn(8)
    r_lab, r_img, r_aud, r_txt, r_vid, r_mis, r_brk, r_split = [np.random.default_rng(s) for s in ss]

    out = args.out
    C.fresh_dir(out)
    for d in ("image", "audio", "video"):
        os.makedirs(os.path.join(out, d))

    y = C.balanced_labels(r_lab, 10, args.n_per_class)
    n = len(y)
    split = C.stratified_split(r_split, y, n_val=n // 12, n_test=n // 6)
    fx, fy = C.load_fashion("train")
    img_idx = C.pick_per_class(r_img, fy, y)
    # the video shows another item of the class: a second pick, excluding the image's
    pool = np.ones(len(fy), bool)
    pool[img_idx] = False
    vid_idx = np.empty(n, int)
    for c in range(10):
        want = np.flatnonzero(y == c)
        vid_idx[want] = r_vid.choice(np.flatnonzero(pool & (fy == c)), size=len(want), replace=False)

    mods = ["image", "audio", "text", "video"]
    miss = C.missing_mask(r_mis, n, mods, 0.12)
    backgrounds = C.bbb_backgrounds(seed=args.seed)

    rows = []
    voices = []
    with C.tmp() as td:
        for i in range(n):
            c = int(y[i])
            rid = f"f{i:04d}"
            # draw every modality's randomness even when the cell ends up empty, so that the
            # missing mask does not shift the other records' content
            img = C.degrade_image(r_img, fx[img_idx[i]], noise=0.08, contrast=(0.5, 1.0),
                                  occlude=0.15, shift=3)
            voice = str(r_aud.choice(C.VOICES))
            speed, pitch = r_aud.uniform(120, 210), r_aud.uniform(20, 80)
            phrase = str(r_aud.choice(PHRASES)).format(n=C.FASHION_NAMES[c])
            snr = r_aud.uniform(0, 12)
            aud_seed = int(r_aud.integers(2**31))
            text = describe(r_txt, c)
            vseed = int(r_vid.integers(2**31))
            voices.append(voice)

            cells = {}
            if not miss[i, 0]:
                cells["image"] = f"image/{rid}.png"
                C.save_png(os.path.join(out, cells["image"]), img)
            if not miss[i, 1]:
                x = C.espeak(phrase, voice, speed, pitch, td)
                x = C.mix_noise(np.random.default_rng(aud_seed), x, snr)
                cells["audio"] = f"audio/{rid}.wav"
                C.save_wav(os.path.join(out, cells["audio"]), x)
            if not miss[i, 2]:
                cells["text"] = text
            if not miss[i, 3]:
                fr = video_frames(np.random.default_rng(vseed), fx[vid_idx[i]], backgrounds)
                cells["video"] = f"video/{rid}.mp4"
                C.encode_mp4(os.path.join(out, cells["video"]), fr, fps=8)
            rows.append([rid, split[i], C.FASHION_NAMES[c], cells.get("image", ""),
                         cells.get("audio", ""), cells.get("text", ""), cells.get("video", ""),
                         voice])
            if (i + 1) % 200 == 0:
                print(f"  {i + 1}/{n}", flush=True)

    broken = []
    for col, k, keep in (("image", 2, 60), ("audio", 3, 30), ("video", 3, 120)):
        j = mods.index(col)
        cand = [i for i in range(n) if not miss[i, j]]
        for i in sorted(r_brk.choice(cand, size=k, replace=False)):
            path = rows[i][3 + j]
            C.break_file(os.path.join(out, path), keep)
            broken.append({"id": rows[i][0], "column": col, "path": path, "kept_bytes": keep,
                           "split": rows[i][1]})

    C.write_table(out, ["id", "split", "label", "image", "audio", "text", "video", "group"], rows)
    C.write_info(out, {
        "set": "fashion4", "seed": args.seed, "records": n,
        "split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "missing": {m: int(miss[:, j].sum()) for j, m in enumerate(mods)},
        "broken": broken,
        "sources": ["Debian dataset-fashion-mnist (train part)", "espeak-ng",
                    "Big Buck Bunny 0-30 s (/work/shared/data/video) backgrounds"],
        "groups": sorted(set(voices)),
    })
    print(f"fashion4: {n} records -> {out}/table.csv; missing "
          f"{dict(zip(mods, miss.sum(0).tolist()))}; {len(broken)} broken files")


if __name__ == "__main__":
    main()
