"""MultiBench's own AV-MNIST LeNet + concat model and training loop (pliang279/MultiBench,
`unimodals/common_models.py` LeNet and MLP, `fusions/common_fusions.py` Concat,
`training_structures/Supervised_Learning.py` MMDL and train), timed side by side with the
same model trained by `fusion train`, on the same inputs, with the same thread count.

    python benchmarks/peer_avmnist.py --fusion target/release/fusion \
        --config RUN_CONFIG.json --seeds 3 --epochs 10 --threads 2

RUN_CONFIG is `configs/avmnist/concat.json` with `manifest` (and `cache`) pointing at a
built AV-MNIST (e.g. the one `cargo xtask bench avmnist` built under the data folder). The script first runs
`fusion extract --export` so that both sides train on exactly the same tensors (images
[N, 1, 28, 28] in [0, 1]; 112×112 log-mel pictures in [0, 1], MultiBench's normalisation).

Kept from MultiBench: LeNet(1, 6, 3) and LeNet(1, 6, 5) (bias-free convolutions, batch norm,
Kaiming-uniform init), Concat, MLP(240, 100, 10) head, SGD lr 0.1 with weight decay 1e-4,
batch 40 (shuffled), gradient-norm clipping at 8, validation each epoch and the best
model by validation accuracy saved with `torch.save`, tested at the end. MMDL's forward is
MultiBench's current one (the fusion module runs once per step). Two loops are timed:
`multibench` is its loop as written (DataLoader with `--workers` worker processes over a
list of per-sample arrays, the running loss summed as a tensor that keeps every step's
graph alive until the epoch ends), `eager` is a lean PyTorch loop on the same model
(tensors indexed in place, `loss.item()`, no workers). Not kept: `all_in_one_train`'s
memory and time tracking, and tqdm.

Differences of the workspace model, said here so that accuracy is compared knowingly: it
standardises each input value with the training set's mean and standard deviation (inside
the model), appends the two presence bits to the fused features (242 inputs to the head),
has learned placeholders for an absent modality, and initialises its head with PyTorch's
`nn.Linear` scheme from its own generator.

Needs torch 2.11.0 (safetensors and numpy are used when installed). `--device cuda` runs the
eager loop and `fusion train` on the GPU (the MultiBench loop stays on the CPU: its
DataLoader hands out CPU tensors, as MultiBench does unless told otherwise).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import random
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


def load_tensors(path):
    """A safetensors file as a dict of tensors: with the safetensors package when it is
    installed, else from the format itself (8-byte header length, JSON header, raw data)."""
    try:
        from safetensors.torch import load_file

        return load_file(path)
    except ImportError:
        pass
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
              "U8": torch.uint8, "BOOL": torch.bool}
    with open(path, "rb") as f:
        data = f.read()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = bytearray(data[base + start : base + end])
        tensors[name] = torch.frombuffer(raw, dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return tensors


# --- MultiBench, unimodals/common_models.py -------------------------------------------
class GlobalPooling2D(nn.Module):
    def forward(self, x):
        x = x.view(x.size(0), x.size(1), -1)
        x = torch.mean(x, 2)
        x = x.view(x.size(0), -1)
        return x


class LeNet(nn.Module):
    def __init__(self, in_channels, args_channels, additional_layers):
        super().__init__()
        self.convs = [nn.Conv2d(in_channels, args_channels, kernel_size=5, padding=2, bias=False)]
        self.bns = [nn.BatchNorm2d(args_channels)]
        self.gps = [GlobalPooling2D()]
        for i in range(additional_layers):
            self.convs.append(
                nn.Conv2d((2**i) * args_channels, (2 ** (i + 1)) * args_channels, kernel_size=3, padding=1, bias=False)
            )
            self.bns.append(nn.BatchNorm2d(args_channels * (2 ** (i + 1))))
            self.gps.append(GlobalPooling2D())
        self.convs = nn.ModuleList(self.convs)
        self.bns = nn.ModuleList(self.bns)
        self.gps = nn.ModuleList(self.gps)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight)

    def forward(self, x):
        tempouts = []
        out = x
        for i in range(len(self.convs)):
            out = F.relu(self.bns[i](self.convs[i](out)))
            out = F.max_pool2d(out, 2)
            gp = self.gps[i](out)
            tempouts.append(gp)
        return out.squeeze()


class MLP(nn.Module):
    def __init__(self, indim, hiddim, outdim):
        super().__init__()
        self.fc = nn.Linear(indim, hiddim)
        self.fc2 = nn.Linear(hiddim, outdim)

    def forward(self, x):
        return self.fc2(F.relu(self.fc(x)))


# --- MultiBench, fusions/common_fusions.py ---------------------------------------------
class Concat(nn.Module):
    def forward(self, modalities):
        return torch.cat([torch.flatten(m, start_dim=1) for m in modalities], dim=1)


# --- MultiBench, training_structures/Supervised_Learning.py ----------------------------
class MMDL(nn.Module):
    def __init__(self, encoders, fusion, head):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.fuse = fusion
        self.head = head

    def forward(self, inputs):
        outs = [self.encoders[i](inputs[i]) for i in range(len(inputs))]
        self.reps = outs
        out = self.fuse(outs)
        self.fuseout = out
        return self.head(out)


def multibench_train(model, train_loader, valid_loader, epochs, save, lr=0.1, weight_decay=1e-4, clip_val=8):
    """MultiBench's `train` for classification (its `_trainprocess`), timing each epoch."""
    objective = nn.CrossEntropyLoss()
    op = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    bestacc = 0
    epoch_seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        totalloss = 0.0
        totals = 0
        model.train()
        for j in train_loader:
            op.zero_grad()
            model.train()
            out = model([i.float() for i in j[:-1]])
            loss = objective(out, j[-1].long())
            totalloss += loss * len(j[-1])
            totals += len(j[-1])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_val)
            op.step()
        print("Epoch " + str(epoch) + " train loss: " + str(totalloss / totals), file=sys.stderr)
        model.eval()
        with torch.no_grad():
            pred, true = [], []
            for j in valid_loader:
                out = model([i.float() for i in j[:-1]])
                pred.append(torch.argmax(out, 1))
                true.append(j[-1])
            acc = float((torch.cat(pred) == torch.cat(true)).float().mean())
            if acc > bestacc:
                bestacc = acc
                torch.save(model, save)
        epoch_seconds.append(time.perf_counter() - started)
    return epoch_seconds


def eager_train(model, train, valid, epochs, save, seed, lr=0.1, weight_decay=1e-4, clip_val=8, batch=40):
    """The same optimisation as a lean eager loop: tensors indexed in place, no workers."""
    images, audio, labels = train
    op = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    bestacc = 0
    epoch_seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            index = order[start : start + batch].to(labels.device)
            op.zero_grad()
            loss = F.cross_entropy(model([images[index], audio[index]]), labels[index])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_val)
            op.step()
            total += loss.item()
        acc = accuracy(model, valid)
        if acc > bestacc:
            bestacc = acc
            torch.save(model.state_dict(), save)
        epoch_seconds.append(time.perf_counter() - started)
    return epoch_seconds


def accuracy(model, split, batch=500):
    images, audio, labels = split
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            out = model([images[start : start + batch], audio[start : start + batch]])
            correct += int((out.argmax(1) == labels[start : start + batch]).sum())
    return correct / len(labels)


def build_model():
    channels = 6
    encoders = [LeNet(1, channels, 3), LeNet(1, channels, 5)]
    return MMDL(encoders, Concat(), MLP(channels * 40, 100, 10))


def split(tensors, name):
    return (
        tensors[f"{name}.image"].float(),
        tensors[f"{name}.audio"].float().unsqueeze(1),
        tensors[f"{name}.labels"].long(),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fusion", required=True, help="the fusion binary")
    parser.add_argument("--config", required=True, help="run configuration of the LeNet concat model")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8, help="MultiBench's DataLoader workers (its default: 8)")
    parser.add_argument("--loops", default="multibench,eager,fusion")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: the eager loop's and fusion's device")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))
    loops = args.loops.split(",")
    work = tempfile.mkdtemp(prefix="peer-avmnist-")
    exported = os.path.join(work, "features.safetensors")
    subprocess.run(
        [args.fusion, "extract", "--config", args.config, "--export", exported, "--quiet"], check=True, env=env
    )
    tensors = load_tensors(exported)
    train, valid, test = (split(tensors, s) for s in ("train", "val", "test"))
    on_device = lambda s: tuple(t.to(device) for t in s)
    n_train = len(train[2])
    rows = []
    for seed in range(args.seeds):
        for loop in loops:
            save = os.path.join(work, f"best-{loop}-{seed}.pt")
            if loop == "fusion":
                config = json.load(open(args.config))
                config["train"]["seed"] = seed
                config["train"]["epochs"] = args.epochs
                path = os.path.join(work, f"config{seed}.json")
                json.dump(config, open(path, "w"))
                run = os.path.join(work, f"run{seed}")
                out = subprocess.run(
                    [args.fusion, "train", "--config", path, "--run", run, "--device", args.device, "--json"],
                    check=True,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(out.stdout)
                seconds = [e["seconds"] for e in result["epochs"]]
                test_acc = result["eval"]["metrics"]["accuracy"]
            else:
                torch.manual_seed(seed)
                random.seed(seed)
                model = build_model()
                if loop == "multibench":
                    as_list = lambda s: [[s[0][i], s[1][i], s[2][i]] for i in range(len(s[2]))]
                    loader = lambda s, shuffle: DataLoader(
                        as_list(s), shuffle=shuffle, num_workers=args.workers, batch_size=40
                    )
                    seconds = multibench_train(model, loader(train, True), loader(valid, False), args.epochs, save)
                    best = torch.load(save, weights_only=False)
                    test_acc = accuracy(best, test)
                else:
                    model = model.to(device)
                    seconds = eager_train(model, on_device(train), on_device(valid), args.epochs, save, seed)
                    best = build_model().to(device)
                    best.load_state_dict(torch.load(save))
                    test_acc = accuracy(best, on_device(test))
            row = {
                "loop": loop,
                "seed": seed,
                "epochs": len(seconds),
                "epoch_s": sum(seconds) / len(seconds),
                "samples_per_s": n_train * len(seconds) / sum(seconds),
                "test_accuracy": test_acc,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for loop in loops:
        mine = [r for r in rows if r["loop"] == loop]
        summary[loop] = {
            "samples_per_s": statistics.mean(r["samples_per_s"] for r in mine),
            "test_accuracy_mean": statistics.mean(r["test_accuracy"] for r in mine),
            "test_accuracy_std": statistics.pstdev([r["test_accuracy"] for r in mine]),
        }
    if "fusion" in summary:
        for loop in loops:
            if loop != "fusion":
                summary[f"fusion_vs_{loop}_throughput"] = summary["fusion"]["samples_per_s"] / summary[loop]["samples_per_s"]
    result = {"device": args.device, "threads": args.threads, "train_samples": n_train, "summary": summary}
    if device.type == "cuda":
        # The PyTorch side's peak; `fusion train` reports its host RSS only.
        result["torch_peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
