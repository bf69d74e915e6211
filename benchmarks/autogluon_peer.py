"""AutoGluon's MultiModalPredictor as the zero-config peer, on the table
`make_endless_sky_table.py` writes and its split, offline.

Its default backbones come from the Hugging Face Hub, which the benchmark machine cannot
reach, so the text backbone is the local all-MiniLM-L6-v2 folder `cargo xtask models`
fetched (Hugging Face layout: config.json, model.safetensors, tokenizer files) and the
image column is left out: AutoGluon reads a local timm folder only as a pickled
`pytorch_model.bin` in timm's key names, which this project does not write. The numbers
and categories go through AutoGluon's own tabular MLPs; the fusion is its `fusion_mlp`.
Everything else is AutoGluon's default for `MultiModalPredictor.fit` (its zero-config).

    python3 -m venv ~/.cache/ag-venv && ~/.cache/ag-venv/bin/pip install autogluon.multimodal
    HF_HUB_OFFLINE=1 ~/.cache/ag-venv/bin/python benchmarks/autogluon_peer.py \\
        runs/endless-sky/table.csv ~/.cache/fusion/models/all-MiniLM-L6-v2 runs/ag-es

Prints one JSON line: test accuracy, macro-F1, fit and predict seconds.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd  # noqa: E402
from autogluon.multimodal import MultiModalPredictor  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

LABEL = "category"
NOT_FEATURES = ["item", "picture", "split"]


def main(table, text_model, out):
    frame = pd.read_csv(table, keep_default_na=True)
    frame[LABEL] = frame[LABEL].astype(str)
    for name in ["kind", "faction"]:
        frame[name] = frame[name].fillna("").astype(str)
    parts = {s: frame[frame["split"] == s].drop(columns=NOT_FEATURES) for s in ["train", "val", "test"]}
    predictor = MultiModalPredictor(label=LABEL, problem_type="multiclass", eval_metric="accuracy", path=out)
    started = time.time()
    predictor.fit(
        parts["train"],
        tuning_data=parts["val"],
        column_types={"description": "text", "kind": "categorical", "faction": "categorical"},
        hyperparameters={
            "model.names": ["hf_text", "numerical_mlp", "categorical_mlp", "fusion_mlp"],
            "model.hf_text.checkpoint_name": text_model,
            "env.num_gpus": 0,
            "env.num_workers": 0,
            "env.num_workers_inference": 0,
        },
        seed=0,
    )
    fit_seconds = time.time() - started
    started = time.time()
    predicted = predictor.predict(parts["test"].drop(columns=[LABEL]))
    predict_seconds = time.time() - started
    truth = parts["test"][LABEL]
    print(
        json.dumps(
            {
                "peer": "autogluon.multimodal MultiModalPredictor (text + table, no image)",
                "version": __import__("autogluon.multimodal").multimodal.__version__,
                "test_accuracy": round(accuracy_score(truth, predicted), 4),
                "test_macro_f1": round(f1_score(truth, predicted, average="macro"), 4),
                "fit_seconds": round(fit_seconds, 1),
                "predict_seconds": round(predict_seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
