"""Peer of `bench_text`: sentence-transformers (all-MiniLM-L6-v2) and HuggingFace
`tokenizers` on the same sentences, thread count and batch size.

    python benchmarks/peer_text.py --sentences FILE --model DIR [--batch 32] [--threads 2] [--repeat 3]
"""
import argparse
import time

import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer


def best_rate(count, repeat, run):
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.sentences, encoding="utf-8") as f:
        sentences = f.read().splitlines()
    n = len(sentences)

    # Tokenization alone: the same tokenizer.json, batch-longest padding, truncation at 256.
    tokenizer = Tokenizer.from_file(f"{args.model}/tokenizer.json")
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    chunks = [sentences[i : i + args.batch] for i in range(0, n, args.batch)]
    tokenize = best_rate(n, args.repeat, lambda: [tokenizer.encode_batch(c) for c in chunks])

    model = SentenceTransformer(args.model, device="cpu")
    model.encode(sentences[: args.batch], batch_size=args.batch)
    embed = best_rate(n, args.repeat, lambda: model.encode(sentences, batch_size=args.batch))
    print(
        f"python: {n} sentences, batch {args.batch}, {torch.get_num_threads()} threads: "
        f"tokenize {tokenize:.0f} sentences/s, embed {embed:.1f} sentences/s"
    )


if __name__ == "__main__":
    main()
