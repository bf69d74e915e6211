"""PyAV peer of `bench_video`: decode every frame and convert it to a 224x224 RGB numpy
array (PyAV's reformat, swscale underneath), decoder threads on AUTO; best of 3.

    python benchmarks/peer_video.py FILE
"""
import sys
import time

import av
import numpy as np


def decode_all(path):
    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(width=224, height=224, format="rgb24"))
    return np.stack(frames)


def main():
    path = sys.argv[1]
    best, count = float("inf"), 0
    for _ in range(3):
        started = time.perf_counter()
        count = len(decode_all(path))
        best = min(best, time.perf_counter() - started)
    print(f"PyAV {av.__version__} + numpy: {count} frames decoded + scaled to 224x224 RGB in {best:.3f} s: {count / best:.0f} frames/s")


if __name__ == "__main__":
    main()
