"""Peers of `search_bench` (crates/fusion-core/examples/search_bench.rs) on the same task:
N random unit vectors of 64 values, top 10 by cosine; exact search as a PyTorch matrix
product and top-k (one thread for single queries, every core for a batch of 1,000), and
an hnswlib HNSW graph with the same settings as fusion-ann's (M 16... its defaults kept:
ef_construction 64, ef 128), queried one at a time. Prints rows of the same table.

    python benchmarks/retrieval/peer_search.py 10000 100000 [--exact-only N]

Needs torch and hnswlib.
"""

import sys
import time

import hnswlib
import torch

DIM, K = 64, 10


def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main():
    args = sys.argv[1:]
    exact_only = float("inf")
    if "--exact-only" in args:
        at = args.index("--exact-only")
        exact_only = int(args[at + 1])
        del args[at:at + 2]
    threads = torch.get_num_threads()
    for n in map(int, args):
        torch.manual_seed(n)
        before = resident_mb()
        vectors = torch.nn.functional.normalize(torch.randn(n, DIM), dim=-1)
        queries = torch.nn.functional.normalize(torch.randn(1000, DIM), dim=-1)
        memory = resident_mb() - before
        torch.set_num_threads(1)
        started = time.perf_counter()
        for q in range(200):
            (queries[q:q + 1] @ vectors.t()).topk(K)
        single = 200 / (time.perf_counter() - started)
        torch.set_num_threads(threads)
        started = time.perf_counter()
        exact = (queries @ vectors.t()).topk(K).indices
        batch = 1000 / (time.perf_counter() - started)
        print(f"| {n} | PyTorch exact | – | {memory:.0f} | {single:.0f} | {batch:.0f} | 1 |", flush=True)
        if n >= exact_only:
            continue
        before = resident_mb()
        started = time.perf_counter()
        graph = hnswlib.Index(space="cosine", dim=DIM)
        graph.init_index(max_elements=n, ef_construction=64, M=16, random_seed=1)
        graph.add_items(vectors.numpy(), num_threads=threads)
        graph.set_ef(128)
        built = time.perf_counter() - started
        memory = resident_mb() - before
        graph.set_num_threads(1)
        started = time.perf_counter()
        for q in range(1000):
            graph.knn_query(queries[q:q + 1].numpy(), k=K)
        single = 1000 / (time.perf_counter() - started)
        graph.set_num_threads(threads)
        started = time.perf_counter()
        found, _ = graph.knn_query(queries.numpy(), k=K)
        batch = 1000 / (time.perf_counter() - started)
        hits = sum(len(set(found[q].tolist()) & set(exact[q].tolist())) for q in range(200))
        print(f"| {n} | hnswlib (ef 64 / 128, M 16) | {built:.1f} | {memory:.0f} | {single:.0f} | {batch:.0f} | {hits / 2000:.3f} |", flush=True)


if __name__ == "__main__":
    main()
