"""Unimodal baselines of the zero-config benchmark, on the table `make_endless_sky_table.py`
writes and its split: gradient-boosted trees on the table's numbers and categories
(scikit-learn's HistGradientBoostingClassifier, native missing values and categories), and
TF-IDF words + bigrams with logistic regression on the descriptions. Trained on `train`,
scored on `test`; no tuning (the defaults are the strong baselines people run first).

    pip install scikit-learn numpy
    python3 benchmarks/zero_config_peers.py runs/endless-sky/table.csv

Prints one JSON line per baseline: test accuracy, macro-F1, fit seconds.
"""

import csv
import json
import sys
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

NOT_FEATURES = {"item", "picture", "description", "split", "category"}
CATEGORICAL = {"kind", "faction"}


def main(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c not in NOT_FEATURES]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    labels_train = [r["category"] for r in train]
    labels_test = [r["category"] for r in test]

    codes = {c: sorted({r[c] for r in train if r[c]}) for c in CATEGORICAL}

    def matrix(part):
        out = np.full((len(part), len(columns)), np.nan)
        for i, r in enumerate(part):
            for j, c in enumerate(columns):
                cell = r[c]
                if not cell:
                    continue
                if c in CATEGORICAL:
                    if cell in codes[c]:
                        out[i, j] = codes[c].index(cell)
                else:
                    out[i, j] = float(cell)
        return out

    def report(name, predicted, seconds):
        print(json.dumps({
            "baseline": name,
            "test_accuracy": round(accuracy_score(labels_test, predicted), 4),
            "test_macro_f1": round(f1_score(labels_test, predicted, average="macro"), 4),
            "fit_seconds": round(seconds, 2),
            "train": len(train),
            "test": len(test),
        }))

    started = time.perf_counter()
    trees = HistGradientBoostingClassifier(
        categorical_features=[c in CATEGORICAL for c in columns], random_state=0)
    trees.fit(matrix(train), labels_train)
    report("table: gradient-boosted trees", trees.predict(matrix(test)), time.perf_counter() - started)

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    words = vectorizer.fit_transform(r["description"] for r in train)
    text = LogisticRegression(max_iter=2000, C=10.0).fit(words, labels_train)
    predicted = text.predict(vectorizer.transform(r["description"] for r in test))
    report("text: TF-IDF + logistic regression", predicted, time.perf_counter() - started)


if __name__ == "__main__":
    main(sys.argv[1])
