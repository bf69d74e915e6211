"""Builds a labelled text + image manifest from the Debian package `endless-sky-data`
(0.9.8-1.2: the game Endless Sky's data; text GPL-3+, images CC BY-SA 4.0/3.0, details in
the package's copyright file).

Each example is one outfit or ship of the game: its human-written description (text), its
thumbnail or sprite (image), and its category (label: Engines, Power, Turrets, Medium
Warship...; 18 classes). Splits are seeded and stratified (60/20/20 per class).

    apt-get download endless-sky-data
    python3 benchmarks/make_endless_sky.py endless-sky-data_0.9.8-1.2_all.deb OUT_DIR

writes OUT_DIR/manifest.jsonl (image paths relative to it) and unpacks the package there.
Standard library only (and `dpkg-deb`).
"""

import collections
import glob
import json
import os
import random
import re
import subprocess
import sys

BLOCK = re.compile(r'^(outfit|ship) [`"]?(.+?)[`"]?\n((?:[\t ].*\n|\s*\n)*)', re.M)
CATEGORY = re.compile(r'^\t\t?category "(.+?)"', re.M)
DESCRIPTION = re.compile(r'^\tdescription [`"](.*?)[`"]\s*$', re.M)
PICTURE = re.compile(r'^\t(?:thumbnail|sprite) "(.+?)"', re.M)


def first(pattern, text):
    found = pattern.findall(text)
    return found[0] if found else None


def picture(root, block):
    key = first(PICTURE, block)
    if key is None:
        return None
    # Animated sprites are numbered frames: the first one stands for the item.
    for suffix in (".png", "=0.png", ".jpg"):
        path = os.path.join(root, "images", key + suffix)
        if os.path.exists(path):
            return path
    return None


def examples(root):
    blocks = {}
    for path in sorted(glob.glob(os.path.join(root, "data", "*.txt"))):
        with open(path, encoding="utf-8") as f:
            for kind, name, block in BLOCK.findall(f.read() + "\n"):
                blocks.setdefault((kind, name), block)  # the first definition wins
    for (kind, name), block in blocks.items():
        label = first(CATEGORY, block)
        text = " ".join(d.strip() for d in DESCRIPTION.findall(block))
        image = picture(root, block)
        if label and text and image:
            yield f"{kind}:{name}", label, text, image


def main(deb, out):
    os.makedirs(out, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", deb, out], check=True)
    root = os.path.join(out, "usr/share/games/endless-sky")
    rows = sorted(examples(root))
    by_label = collections.defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    rng = random.Random(7)
    lines = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n = len(group)
        test, val = max(1, round(n * 0.2)), max(1, round(n * 0.2))
        for i, (ident, _, text, image) in enumerate(group):
            split = "test" if i < test else "val" if i < test + val else "train"
            lines.append({
                "id": ident,
                "label": label,
                "split": split,
                "text": text,
                "image": os.path.relpath(image, out),
            })
    with open(os.path.join(out, "manifest.jsonl"), "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    counts = collections.Counter(line["split"] for line in lines)
    print(f"{len(lines)} examples, {len(by_label)} classes, splits {dict(counts)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
