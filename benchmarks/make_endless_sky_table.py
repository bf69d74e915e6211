"""Builds a multi-modal table (CSV) from the Debian package `endless-sky-data` for the
zero-config benchmark: the examples and splits of `make_endless_sky.py` (one outfit or ship
each: description, picture, category) plus the game's own numbers and two categories.

Columns (names as a table from elsewhere would have them, none a record field's):
`item` (an id), `picture` (image path), `description` (text), `kind` (outfit or ship),
`faction` (the data file's prefix: human, coalition, hai, korath, ...), the 12 numeric
attributes most items have (cost, mass, outfit space, ...; an item without one has an
empty cell), `split`, and `category` (the label, 18 classes).

    apt-get download endless-sky-data
    python3 benchmarks/make_endless_sky_table.py endless-sky-data_0.9.8-1.2_all.deb OUT_DIR

writes OUT_DIR/table.csv. Standard library only (and `dpkg-deb`).
"""

import collections
import csv
import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_endless_sky  # noqa: E402

ATTRIBUTE = re.compile(r'^\t\t?"?([a-z][a-z ]*?)"? (-?\d*\.?\d+)\s*$', re.M)
KEPT_ATTRIBUTES = 12


def blocks(root):
    """(kind, name) -> (block text, faction) for the first definition of each item."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "data", "*.txt"))):
        words = os.path.basename(path)[:-4].split()
        faction = words[0] if len(words) > 1 else "human"
        with open(path, encoding="utf-8") as f:
            for kind, name, block in make_endless_sky.BLOCK.findall(f.read() + "\n"):
                found.setdefault((kind, name), (block, faction))
    return found


def main(deb, out):
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "manifest.jsonl")):
        make_endless_sky.main(deb, out)
    root = os.path.join(out, "usr/share/games/endless-sky")
    items = blocks(root)
    with open(os.path.join(out, "manifest.jsonl"), encoding="utf-8") as f:
        examples = [json.loads(line) for line in f]
    numbers = {}
    counts = collections.Counter()
    for example in examples:
        kind, name = example["id"].split(":", 1)
        block, _ = items[(kind, name)]
        values = {}
        for key, value in ATTRIBUTE.findall(block):
            values.setdefault(key, value)  # the item's own, before any weapon's
        numbers[example["id"]] = values
        counts.update(values.keys())
    attributes = [key for key, _ in counts.most_common(KEPT_ATTRIBUTES)]
    header = ["item", "picture", "description", "kind", "faction", *attributes, "split", "category"]
    with open(os.path.join(out, "table.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for example in examples:
            kind, name = example["id"].split(":", 1)
            _, faction = items[(kind, name)]
            values = numbers[example["id"]]
            writer.writerow([
                example["id"], example["image"], example["text"], kind, faction,
                *(values.get(key, "") for key in attributes),
                example["split"], example["label"],
            ])
    print(f"{len(examples)} rows; numeric columns: {', '.join(attributes)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
