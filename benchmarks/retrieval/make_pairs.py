"""fashion_pairs: Fashion-MNIST pictures paired with descriptions of what they show.

    python benchmarks/retrieval/make_pairs.py [--out runs/retrieval/fashion_pairs] [--seed 0]

Each description names the item (one of four synonyms of its class) and two attributes
read from the picture itself, each a tercile within the item's class: how light the
item is (mean brightness of its pixels: dark / mid-grey / light) and how much of the
picture it fills (slim / regular / wide), in one of four wordings ("a light wide
sweater", "jumper, light and wide", ...). So a description singles out a kind of
picture, not one picture: about 1 in 36 of a class's pictures fit it, and retrieval
counts every record with the same description as a hit.

Written under --out:
  pairs.jsonl   seven seen classes (t-shirt, trousers, pullover, dress, coat, shirt,
                sneakers): 3,010 records, 2,100 train / 308 val / 602 test;
  unseen.jsonl  three held-out classes (sandals, bag, ankle boots), none of whose records
                or class words the contrastive runs train on: 600 records, 300 train /
                60 val / 240 test (train and val only for the supervised classifier
                zero-shot is compared with);
  images/       28x28 grey PNGs (Fashion-MNIST training part, each used once);
  info.json     seed, counts, the attribute thresholds.
Records: {"id", "split", "label" (class name), "image", "text"}.
Source: Debian `dataset-fashion-mnist` (no download). Seeded, reproducible.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "quality"))
import common as C  # noqa: E402
from make_fashion4 import SYN  # noqa: E402  (four names of each class's item)

NAMES = {0: "t-shirt", 1: "trousers", 2: "pullover", 3: "dress", 4: "coat", 5: "sandals",
         6: "shirt", 7: "sneakers", 8: "bag", 9: "ankle boots"}
SEEN = [0, 1, 2, 3, 4, 6, 7]
UNSEEN = [5, 8, 9]
LIGHT = ["dark", "mid-grey", "light"]
WIDTH = ["slim", "regular", "wide"]
WORDINGS = ["a {light} {width} {item}", "{item}, {light} and {width}", "{width} {item} in {light}",
            "{light} {item}, {width} fit"]


def attributes(pictures):
    """Per picture: mean brightness of its lit pixels, and the share of pixels lit."""
    lit = pictures > 30
    brightness = np.where(lit, pictures, 0).sum(axis=(1, 2)) / np.maximum(lit.sum(axis=(1, 2)), 1)
    return brightness, lit.mean(axis=(1, 2))


def terciles(values):
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    return np.digitize(values, [low, high]), [float(low), float(high)]


def build(rng, x, y, classes, per_class, counts, out, prefix):
    """Records of `classes`, `per_class` each, split `counts` = (train, val, test) per class."""
    records, thresholds = [], {}
    for c in classes:
        pool = rng.choice(np.flatnonzero(y == c), size=per_class, replace=False)
        brightness, area = attributes(x[pool].astype(np.float32))
        light, light_cut = terciles(brightness)
        width, width_cut = terciles(area)
        thresholds[NAMES[c]] = {"brightness": light_cut, "area": width_cut}
        order = rng.permutation(per_class)
        splits = np.array(["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2])[order]
        for k, index in enumerate(pool):
            rid = f"{prefix}{c}-{k}"
            path = f"images/{rid}.png"
            C.save_png(os.path.join(out, path), x[index])
            text = rng.choice(WORDINGS).format(light=LIGHT[light[k]], width=WIDTH[width[k]],
                                               item=rng.choice(SYN[c]))
            records.append({"id": rid, "split": str(splits[k]), "label": NAMES[c], "image": path,
                            "text": text})
    order = rng.permutation(len(records))
    return [records[i] for i in order], thresholds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/retrieval/fashion_pairs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    C.fresh_dir(args.out)
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    rng = np.random.default_rng(args.seed)
    x, y = C.load_fashion("train")
    seen, seen_cuts = build(rng, x, y, SEEN, 430, (300, 44, 86), args.out, "s")
    unseen, unseen_cuts = build(rng, x, y, UNSEEN, 200, (100, 20, 80), args.out, "u")
    for name, records in [("pairs.jsonl", seen), ("unseen.jsonl", unseen)]:
        with open(os.path.join(args.out, name), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    count = lambda rs, s: sum(r["split"] == s for r in rs)  # noqa: E731
    C.write_info(args.out, {
        "seed": args.seed,
        "seen": {s: count(seen, s) for s in ["train", "val", "test"]},
        "unseen": {s: count(unseen, s) for s in ["train", "val", "test"]},
        "descriptions": len({r["text"] for r in seen}),
        "thresholds": {**seen_cuts, **unseen_cuts},
    })


if __name__ == "__main__":
    main()
