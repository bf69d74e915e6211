"""Runs a TorchScript module exported by fusion-core with Python's torch.jit.load and
checks its output against the Rust model's. Called by tests/training.rs:
python torchscript_parity.py MODULE.pt INPUTS.json"""
import json
import sys

import torch

module = torch.jit.load(sys.argv[1])
with open(sys.argv[2]) as f:
    data = json.load(f)


def tensor(entry):
    return torch.tensor(entry["values"], dtype=torch.float32).reshape(entry["shape"])


inputs = [
    tensor(entry).bool() if dtype == "bool" else tensor(entry)
    for entry, dtype in zip(data["inputs"], data["dtypes"])
]
with torch.no_grad():
    out = module(*inputs)
difference = (out - tensor(data["expected"])).abs().max().item()
print(f"max abs difference {difference:.3g}")
sys.exit(0 if difference < 1e-5 else 1)
