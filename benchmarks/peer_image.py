"""Peer of `bench_image`: PIL decode + torchvision Resize(256) (bilinear, antialiased) +
CenterCrop(224) + ToTensor + Normalize (ImageNet), over every image in a folder; in one
process, and split over a pool of N processes (the usual DataLoader way to use N cores).

    python benchmarks/peer_image.py DIR [--threads 2] [--repeat 3]
"""
import argparse
import multiprocessing
import time
from pathlib import Path

import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

TRANSFORM = T.Compose(
    [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
)


def load(path):
    with Image.open(path) as image:
        return TRANSFORM(image.convert("RGB")).shape


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted(Path(args.dir).iterdir())
    runs = [("1 process", lambda: [load(f) for f in files])]
    pool = multiprocessing.Pool(args.threads)
    runs.append((f"{args.threads} processes", lambda: pool.map(load, files, chunksize=8)))
    for name, run in runs:
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        print(f"torchvision {torchvision.__version__} + PIL: {len(files)} images, {name}: {len(files) / best:.0f} images/s")
    pool.close()


if __name__ == "__main__":
    main()
