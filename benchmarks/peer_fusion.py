"""PyTorch peer of `cargo run --release -p fusion-core --example compare_methods`:
the same data (written by the example with --save-data DIR), the same architectures
(MLP encoders 8->16, classifier hidden 16, presence bits appended in early fusion, branch
losses weighted 0.5 in late fusion), the same optimiser, epochs and batch size, in eager
PyTorch. Prints the same table columns.

    python benchmarks/peer_fusion.py DIR [--epochs 15] [--threads 2]

Needs torch and safetensors (pip install torch==2.11.0 safetensors).
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

CLASSES, DIM, HIDDEN = 4, 8, 16


def encoder():
    return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU())


def classifier(inputs):
    return nn.Sequential(nn.Linear(inputs, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


class Unimodal(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.head = encoder(), classifier(HIDDEN + 1)

    def forward(self, a, b):
        ones = torch.ones(a.shape[0], 1)
        return F.log_softmax(self.head(torch.cat([self.enc(a), ones], 1)), -1), []


class EarlyConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc_a, self.enc_b, self.head = encoder(), encoder(), classifier(2 * HIDDEN + 2)

    def forward(self, a, b):
        presence = torch.ones(a.shape[0], 2)
        return F.log_softmax(self.head(torch.cat([self.enc_a(a), self.enc_b(b), presence], 1)), -1), []


class EarlyLowRank(nn.Module):
    """Low-rank tensor fusion (Liu et al. 2018), as MultiBench's LowRankTensorFusion."""

    def __init__(self, rank=4):
        super().__init__()
        self.enc_a, self.enc_b = encoder(), encoder()
        std = (1.0 / (HIDDEN + 1)) ** 0.5
        self.factors = nn.ParameterList([nn.Parameter(torch.randn(rank, HIDDEN + 1, HIDDEN) * std) for _ in range(2)])
        self.rank_weights = nn.Parameter(torch.randn(rank) * (1.0 / rank) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(HIDDEN))
        self.head = classifier(HIDDEN + 2)

    def forward(self, a, b):
        ones = torch.ones(a.shape[0], 1)
        product = None
        for x, w in zip([self.enc_a(a), self.enc_b(b)], self.factors):
            term = torch.einsum("bd,rdh->rbh", torch.cat([x, ones], 1), w)
            product = term if product is None else product * term
        fused = torch.einsum("r,rbh->bh", self.rank_weights, product) + self.bias
        return F.log_softmax(self.head(torch.cat([fused, torch.ones(a.shape[0], 2)], 1)), -1), []


class LateMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc_a, self.enc_b = encoder(), encoder()
        self.head_a, self.head_b = classifier(HIDDEN), classifier(HIDDEN)

    def forward(self, a, b):
        logits = [self.head_a(self.enc_a(a)), self.head_b(self.enc_b(b))]
        probs = torch.stack([F.softmax(l, -1) for l in logits], 1).mean(1)
        return probs.clamp_min(1e-12).log(), logits


def loss_of(model, a, b, labels):
    log_probs, branches = model(a, b)
    loss = F.nll_loss(log_probs, labels)
    if branches:
        loss = loss + 0.5 * torch.stack([F.cross_entropy(l, labels) for l in branches]).mean()
    return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = (load_file(f"{args.data}/{n}.safetensors") for n in ("train", "test"))
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| method | test accuracy | parameters | train step (ms) | inference (ms) | training (s) |")
    print("|---|---|---|---|---|---|")
    for name, make in [
        ("modality a alone", Unimodal),
        ("early: concat", EarlyConcat),
        ("early: low-rank (4)", EarlyLowRank),
        ("late: mean", LateMean),
    ]:
        torch.manual_seed(7)
        model = make()
        # The unimodal baseline sees only modality a (its b input is ignored).
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
        n = train["labels"].shape[0]
        generator = torch.Generator().manual_seed(7)
        started = time.perf_counter()
        for _ in range(args.epochs):
            model.train()
            for idx in torch.randperm(n, generator=generator).split(64):
                optimizer.zero_grad()
                loss_of(model, train["a"][idx], train["b"][idx], train["labels"][idx]).backward()
                optimizer.step()
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            predicted = model(test["a"], test["b"])[0].argmax(-1)
        accuracy = (predicted == test["labels"]).float().mean().item()
        # Same measure as fusion_core::complexity: forward + backward on one batch of 64.
        a, b, labels = test["a"][:64], test["b"][:64], test["labels"][:64]
        started = time.perf_counter()
        for _ in range(50):
            loss_of(model, a, b, labels).backward()
        step = (time.perf_counter() - started) / 50
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(50):
                model(a, b)
        inference = (time.perf_counter() - started) / 50
        parameters = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {accuracy:.3f} | {parameters} | {step * 1e3:.3f} | {inference * 1e3:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
