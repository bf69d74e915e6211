"""Writes the run configurations of the trust benchmarks and summarises their results.

    python benchmarks/trust/configs.py spurious SET_DIR OUT_DIR   # configs of the DRO table
    python benchmarks/trust/configs.py imbalanced SET_DIR OUT_DIR # configs of the class-weight table
    python benchmarks/trust/configs.py summary RUNS_DIR...        # test metrics of trained runs

Every configuration is the zero-config `fast` preset's for pictures and speech (a LeNet on
the 28-px grey picture, an MLP on log-mel band statistics, late fusion as a product of
experts, AdamW 1e-3, batch 32, up to 30 epochs, early stopping with patience 5), with only
what the row names changed: the objective, what early stopping watches, class weights.
"""

import copy
import json
import os
import sys

BASE = {
    "modalities": [
        {"name": "image", "features": {"kind": "image", "size": 28, "grey": True, "normalize": "none"},
         "encoder": {"kind": "lenet"}},
        {"name": "audio",
         "features": {"kind": "log_mel_stats", "sample_rate": 16000, "n_mels": 64, "frames": 6000,
                      "n_fft": 400, "hop_length": 160},
         "encoder": {"kind": "mlp", "hidden": [128]}},
    ],
    "hidden_dim": 64,
    "dropout": 0.1,
    "fusion": {"family": "late", "combiner": "product_of_experts"},
    "train": {
        "epochs": 30, "batch_size": 32,
        "optimizer": {"kind": "adam_w", "lr": 0.001, "weight_decay": 0.01},
        "early_stopping": {"metric": "loss", "patience": 5},
        "modality_dropout": 0.1, "seed": 0,
    },
}

# Group DRO's step size and adjustment, chosen on the development draw (--seed 1) only.
DRO = {"step_size": 1.0, "adjustment": 0.0}

SPURIOUS_ROWS = {
    "erm": {},
    "erm_worst_group_stop": {"stop": "worst_group_accuracy"},
    "reweight_groups": {"objective": "reweight_groups", "stop": "worst_group_accuracy"},
    "group_dro": {"objective": "group_dro", "stop": "worst_group_accuracy", "group_dro": DRO},
}

IMBALANCED_ROWS = {
    "unweighted": {},
    "class_weights_balanced": {"class_weights": "balanced"},
    "class_balanced_sampling": {"sampling": "class_balanced"},
}


def config(manifest, seed, row):
    c = copy.deepcopy(BASE)
    c["manifest"] = os.path.abspath(manifest)
    c["train"]["seed"] = seed
    if "objective" in row:
        c["train"]["objective"] = row["objective"]
    if "group_dro" in row:
        c["train"]["group_dro"] = row["group_dro"]
    if "stop" in row:
        c["train"]["early_stopping"]["metric"] = row["stop"]
    if "sampling" in row:
        c["train"]["sampling"] = row["sampling"]
    if "class_weights" in row:
        c["class_weights"] = row["class_weights"]
    return c


def write_configs(rows, set_dir, out, seeds=(0, 1, 2)):
    os.makedirs(out, exist_ok=True)
    for name, row in rows.items():
        for seed in seeds:
            path = os.path.join(out, f"{name}.seed{seed}.json")
            with open(path, "w") as f:
                json.dump(config(os.path.join(set_dir, "table.csv"), seed, row), f, indent=1)
            print(path)


def summary(runs):
    table = {}
    for run in runs:
        with open(os.path.join(run, "eval.json")) as f:
            e = json.load(f)
        name, seed = os.path.basename(run.rstrip("/")).rsplit(".seed", 1)
        groups = (e.get("groups") or {}).get("groups", {})
        worst = min((g["accuracy"] for g in groups.values()), default=float("nan"))
        rare = rare_f1(e)
        table.setdefault(name, []).append((e["metrics"]["accuracy"], worst, e["metrics"]["macro_f1"], rare, seed))
    print("| row | test accuracy | worst-group accuracy | macro-F1 | F1 of class 0 | seeds |")
    print("|---|---|---|---|---|---|")
    for name, values in table.items():
        def mean_sd(k):
            xs = [v[k] for v in values]
            m = sum(xs) / len(xs)
            sd = (sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1)) ** 0.5
            return f"{m:.3f} ± {sd:.3f}"
        print(f"| {name} | {mean_sd(0)} | {mean_sd(1)} | {mean_sd(2)} | {mean_sd(3)} | {len(values)} |")


def rare_f1(e):
    """F1 of class `0` from the confusion matrix (rows: truth, columns: predicted)."""
    classes = e.get("classes") or []
    confusion = e["metrics"].get("confusion")
    if "0" not in classes or not confusion:
        return float("nan")
    k = classes.index("0")
    tp = confusion[k][k]
    fn = sum(confusion[k]) - tp
    fp = sum(row[k] for row in confusion) - tp
    return 2 * tp / max(1, 2 * tp + fp + fn)


def main():
    kind = sys.argv[1]
    if kind == "spurious":
        write_configs(SPURIOUS_ROWS, sys.argv[2], sys.argv[3])
    elif kind == "imbalanced":
        write_configs(IMBALANCED_ROWS, sys.argv[2], sys.argv[3])
    elif kind == "summary":
        summary(sys.argv[2:])
    else:
        sys.exit(f"unknown {kind}")


if __name__ == "__main__":
    main()
