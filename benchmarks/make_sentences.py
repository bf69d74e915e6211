"""Writes the benchmark sentences: N lines of 3 to 60 words drawn with a fixed seed from
a mixed vocabulary (English, accents, numbers, punctuation), one sentence per line.

    python benchmarks/make_sentences.py OUT.txt [N]
"""
import random
import sys

WORDS = (
    "the a of and to in is was for on that with as by at from multimodal fusion model image audio "
    "video text learns signal noise each modality together early late hybrid attention weights "
    "café naïve Zürich 2024 3.14 42% e-mail state-of-the-art (robust) [missing] dataset's speaker "
    "spectrogram frame token embedding classifier accuracy calibration Shapley values!"
).split()


def main():
    out, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rng = random.Random(0)
    with open(out, "w", encoding="utf-8") as f:
        for _ in range(count):
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + "\n")


if __name__ == "__main__":
    main()
