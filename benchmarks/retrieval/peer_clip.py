"""A lean PyTorch CLIP loop beside `fusion train` on the same contrastive task, towers,
inputs, loss, batch, optimiser and epochs; recall@K both ways on the test split and
training samples per second, over several seeds.

    python benchmarks/retrieval/peer_clip.py --fusion target/release/fusion \
        --config benchmarks/retrieval/scratch.json --seeds 3 --threads 2
    python benchmarks/retrieval/peer_clip.py --config benchmarks/retrieval/lit.json

Both sides train on exactly the same tensors: the script first runs `fusion extract
--export` (pictures [N, 1, 28, 28] in [0, 1], hashed words [N, 2048]). The peer mirrors the
workspace model: each input standardised inside the model with the training set's
per-value mean and one common deviation; towers LeNet (two 5x5 convolutions, 120 and 84
units, 128 out) and an MLP (2048 -> 256, ReLU); a linear projection of each to 64 values,
L2-normalised; CLIP's learned logit scale (1/0.07 at start, at most 100); the symmetric
InfoNCE loss over the batch; AdamW (lr 1e-3, weight decay 0.1 on every parameter),
shuffled batches of 128, 10 epochs, the validation loss computed after each epoch, the
last epoch's weights tested. Recall counts duplicates as the workspace does: a key whose
record has the same text or the same picture as the query's own record is a hit too.

With `lit.json` (a locked image tower: frozen EfficientNet-Lite0 over 224-pixel
ImageNet-normalised pictures) the export holds the frozen tower's outputs (1280 values per
picture, computed once by the workspace; its EfficientNet matches PyTorch's to the
fixture's tolerance, crates/fusion-image/tests/efficientnet_parity.rs), and both sides train
the text tower and the two projections on them.

With `fine.json` (a fine-tuned image tower: EfficientNet-Lite0 from the same pretrained
weights over 64-pixel ImageNet-normalised pictures, its own learning rate) the export holds
the pictures [N, 3, 64, 64]; the peer's tower is the plain-PyTorch network of
fixtures/image/make_efficientnet_reference.py with the workspace's batch norm (eps 1e-3;
by default the pretrained running statistics while training too, as the workspace keeps
them; with `"batch_statistics": true` each batch's statistics while training and running
ones moved at momentum 0.01), pooled to 1280 values, its parameters in an AdamW group of
their own learning rate.
Needs torch 2.11.0, safetensors, numpy and pillow (the fixture script it imports reads pictures).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

# EfficientNet-Lite0 as the parity fixture writes it, with this peer's batch norm.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../fixtures/image"))
from make_efficientnet_reference import features  # noqa: E402


class LeNet(nn.Module):
    def __init__(self, out, tch_init=False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.out = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, out)
        if tch_init:
            # tch's convolution defaults: Kaiming-uniform with ReLU's gain, zero bias.
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.adaptive_avg_pool2d(F.max_pool2d(F.relu(self.conv2(x)), 2), 5)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class EfficientNetLite0(nn.Module):
    """Pooled 1280 features of the pretrained network, fine-tuned (no classifier)."""

    def __init__(self, weights, batch_statistics=False):
        super().__init__()
        self.batch_statistics = batch_statistics
        tensors = {k: v.float() for k, v in load_file(weights).items() if not k.startswith("_fc.")}
        self.weights = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v) for k, v in tensors.items()
                                         if not k.endswith(STATISTICS)})
        for k, v in tensors.items():
            if k.endswith(STATISTICS[:2]):
                self.register_buffer(k.replace(".", "__"), v.clone())

    def norm(self, x, w, key):
        return F.batch_norm(x, w[f"{key}.running_mean"], w[f"{key}.running_var"], w[f"{key}.weight"], w[f"{key}.bias"],
                            self.training and self.batch_statistics, 0.01, 1e-3)

    def forward(self, x):
        w = {k.replace("__", "."): v for k, v in [*self.weights.items(), *self.named_buffers()]}
        return features(w, x, self.norm)


class Clip(nn.Module):
    def __init__(self, stats, text_dim, embed, tch_init=False, locked_image=None, tuned_image=None):
        super().__init__()
        # A locked image tower's outputs come in precomputed: nothing of it trains.
        if tuned_image:
            self.image, image_dim = EfficientNetLite0(*tuned_image), 1280
        elif locked_image:
            self.image, image_dim = nn.Identity(), locked_image
        else:
            self.image, image_dim = LeNet(128, tch_init), 128
        self.text = nn.Sequential(nn.Linear(text_dim, 256), nn.ReLU())
        self.project_image, self.project_text = nn.Linear(image_dim, embed), nn.Linear(256, embed)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for name, (mean, scale) in stats.items():
            self.register_buffer(f"{name}_mean", mean)
            self.register_buffer(f"{name}_scale", scale)

    def scale(self):
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def forward(self, image, text):
        if "image_mean" in self._buffers:
            image = (image - self.image_mean) / self.image_scale
        text = (text - self.text_mean) / self.text_scale
        a = F.normalize(self.project_image(self.image(image)), dim=-1)
        b = F.normalize(self.project_text(self.text(text)), dim=-1)
        return a, b


def clip_loss(a, b, scale):
    logits = scale * a @ b.t()
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def standardisation(x):
    mean = x.mean(0)
    common = (x - mean).square().mean().sqrt().clamp(min=1e-6)
    return mean, common.reshape([1] * (x.dim() - 1))


def same_rows(x):
    """For each row, the rows equal to it (itself included)."""
    groups = {}
    for i, row in enumerate(x.reshape(len(x), -1)):
        groups.setdefault(row.numpy().tobytes(), []).append(i)
    out = [None] * len(x)
    for members in groups.values():
        for i in members:
            out[i] = set(members)
    return out


def recalls(queries, keys, relevant, ks=(1, 5, 10)):
    sim = queries @ keys.t()
    ranks = []
    for q in range(len(sim)):
        hits = list(relevant[q])
        best = sim[q, hits].max()
        mask = torch.ones(len(keys), dtype=torch.bool)
        mask[hits] = False
        ranks.append(int(((sim[q] >= best) & mask).sum()) + 1)
    return {k: sum(r <= k for r in ranks) / len(ranks) for k in ks}


def peer(tensors, seed, epochs, batch, lr, weight_decay, tch_init=False, locked_image=None, tuned_image=None):
    torch.manual_seed(seed)
    train = {m: tensors[f"train.{m}"].float() for m in ("image", "text")}
    # A pretrained tower's inputs are not standardised (as in the workspace).
    pretrained = locked_image or tuned_image
    stats = {m: standardisation(train[m]) for m in train if not (pretrained and m == "image")}
    model = Clip(stats, train["text"].shape[1], 64, tch_init, locked_image, tuned_image and tuned_image[::2])
    if tuned_image:
        tower = set(id(p) for p in model.image.parameters())
        groups = [{"params": list(model.image.parameters()), "lr": tuned_image[1]},
                  {"params": [p for p in model.parameters() if id(p) not in tower]}]
    else:
        groups = model.parameters()
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    val = {m: tensors[f"val.{m}"].float() for m in ("image", "text")}
    n = len(train["image"])
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, batch):
            rows = order[i:i + batch]
            a, b = model(train["image"][rows], train["text"][rows])
            loss = clip_loss(a, b, model.scale())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            a, b = model(val["image"], val["text"])
            clip_loss(a, b, model.scale()).item()
    seconds = time.perf_counter() - started
    test = {m: tensors[f"test.{m}"].float() for m in ("image", "text")}
    with torch.no_grad():
        a, b = model(test["image"], test["text"])
    same = [x | y for x, y in zip(same_rows(test["image"]), same_rows(test["text"]))]
    return {"image->text": recalls(a, b, same), "text->image": recalls(b, a, same),
            "samples_per_s": n * epochs / seconds}


def fusion_run(binary, config, seed, workdir):
    with open(config) as f:
        text = json.load(f)
    text["manifest"] = os.path.abspath(os.path.join(os.path.dirname(config), text["manifest"]))
    text["train"]["seed"] = seed
    path = os.path.join(workdir, f"config-{seed}.json")
    with open(path, "w") as f:
        json.dump(text, f)
    run = os.path.join(workdir, f"run-{seed}")
    subprocess.run([binary, "--quiet", "train", "--config", path, "--run", run, "--device", "cpu"], check=True)
    evaluated = json.loads(subprocess.run([binary, "--json", "eval", "--run", run, "--split", "test"],
                                          check=True, capture_output=True, text=True).stdout)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        seconds = sum(json.loads(line)["seconds"] for line in f)
    n = sum(1 for line in open(text["manifest"]) if '"train"' in line)
    out = {"samples_per_s": n * text["train"]["epochs"] / seconds}
    for pair in evaluated["task"]["pairs"]:
        out[f"{pair['query']}->{pair['key']}"] = {k: r for k, r in pair["metrics"]["recall_at"]}
    return out


def summary(rows, key, k):
    values = [r[key][k] for r in rows]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fusion", default="target/release/fusion")
    ap.add_argument("--config", default="benchmarks/retrieval/scratch.json")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=os.path.expanduser("~/.cache/fusion/models/efficientnet-lite0/model.safetensors"),
                    help="EfficientNet-Lite0's safetensors (`cargo xtask models`), for a fine-tuned image tower")
    ap.add_argument("--tch-init", action="store_true",
                    help="also train the peer with tch's convolution initialisation (a third row)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        config = json.load(f)
    train = config["train"]
    image_encoder = next(m for m in config["modalities"] if m["name"] == "image")["encoder"]
    with tempfile.TemporaryDirectory() as workdir:
        export = os.path.join(workdir, "inputs.safetensors")
        subprocess.run([args.fusion, "--quiet", "extract", "--config", args.config, "--export", export], check=True)
        tensors = load_file(export)
        results = {"fusion": [], "pytorch": []}
        if args.tch_init:
            results["pytorch, tch's conv init"] = []
        settings = (train["epochs"], train["batch_size"], train["optimizer"]["lr"], train["optimizer"]["weight_decay"])
        # Flat image inputs are a frozen tower's outputs.
        locked = tensors["train.image"].shape[1] if tensors["train.image"].dim() == 2 else None
        # Colour pictures go through a pretrained tower that trains at its own rate.
        tuned = None
        if tensors["train.image"].dim() == 4 and tensors["train.image"].shape[1] == 3:
            tuned = (args.weights, image_encoder.get("lr", train["optimizer"]["lr"]),
                     image_encoder.get("batch_statistics", False))
        for seed in range(args.seeds):
            results["fusion"].append(fusion_run(args.fusion, args.config, seed, workdir))
            results["pytorch"].append(peer(tensors, seed, *settings, locked_image=locked, tuned_image=tuned))
            if args.tch_init:
                results["pytorch, tch's conv init"].append(peer(tensors, seed, *settings, tch_init=True))
    print(f"| | image→text R@1 | R@5 | R@10 | text→image R@1 | R@5 | R@10 | training samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    for side, rows in results.items():
        cells = [summary(rows, d, k) for d in ("image->text", "text->image") for k in (1, 5, 10)]
        speed = statistics.mean(r["samples_per_s"] for r in rows)
        print(f"| {side} | " + " | ".join(cells) + f" | {speed:,.0f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
