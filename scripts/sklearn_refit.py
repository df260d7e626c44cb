#!/usr/bin/env python3
"""Refit a probe cell with scikit-learn on exactly our folds and compare.

Reads a cell's `features.safetensors` (features, labels, test_fold) and its
`metrics.json`, fits scikit-learn's LogisticRegression (C from the metrics'
probe settings, run to its optimum: newton-cholesky, tol 1e-10) on every
layer and fold, and compares per-layer mean accuracy and ROC-AUC with ours.
The recipe a user needs is the two lines marked RECIPE.

With `--sklearn-split TEST_SIZE RANDOM_STATE` it also checks that the
recorded split is scikit-learn's own `train_test_split` of the rows.

Usage:
  sklearn_refit.py FEATURES METRICS [--sklearn-split 0.4 42]
    [--max-accuracy-gap 0.001] [--max-auc-gap 0.001]
Prints one JSON object (per-layer gaps) and exits 1 when a gap is exceeded.
"""

import argparse
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("features")
    ap.add_argument("metrics")
    ap.add_argument("--sklearn-split", nargs=2, metavar=("TEST_SIZE", "RANDOM_STATE"))
    ap.add_argument("--max-accuracy-gap", type=float, default=0.001)
    ap.add_argument("--max-auc-gap", type=float, default=0.001)
    args = ap.parse_args()

    f = load_file(args.features)
    m = json.load(open(args.metrics))
    # float64: scikit-learn fits in the input's precision, and f32 inputs make
    # newton-cholesky stall near the optimum (our solver works in f64 too).
    X, y, test_fold = f["features"].astype(np.float64), f["labels"], f["test_fold"]
    n, n_layers, _ = X.shape
    c = m["probe"]["c"]
    n_folds = int(test_fold.max()) + 1
    out = {"n": int(n), "layers": n_layers, "folds": n_folds, "c": c}

    if args.sklearn_split:
        size, state = float(args.sklearn_split[0]), int(args.sklearn_split[1])
        _, test = train_test_split(np.arange(n), test_size=size, random_state=state)
        out["split_identical"] = bool(
            np.array_equal(np.sort(test), np.flatnonzero(test_fold == 0))
        )

    worst_acc, worst_auc, rows = 0.0, 0.0, []
    for layer in range(n_layers):
        accs, aucs = [], []
        for fold in range(n_folds):
            train, test = test_fold != fold, test_fold == fold
            # RECIPE: train on test_fold != f, test on test_fold == f.
            clf = LogisticRegression(C=c, solver="newton-cholesky", tol=1e-10, max_iter=1000)
            clf.fit(X[train, layer], y[train])
            accs.append(clf.score(X[test, layer], y[test]))
            aucs.append(roc_auc_score(y[test], clf.predict_proba(X[test, layer])[:, 1]))
        ours = m["layers"][layer]
        gap_acc = abs(np.mean(accs) - ours["accuracy_mean"])
        gap_auc = abs(np.mean(aucs) - ours["auc_mean"])
        worst_acc, worst_auc = max(worst_acc, gap_acc), max(worst_auc, gap_auc)
        rows.append({"layer": layer, "accuracy_sklearn": np.mean(accs),
                     "accuracy_ours": ours["accuracy_mean"], "auc_sklearn": np.mean(aucs),
                     "auc_ours": ours["auc_mean"]})
    out.update({"max_accuracy_gap": worst_acc, "max_auc_gap": worst_auc, "per_layer": rows})
    print(json.dumps(out))
    ok = worst_acc <= args.max_accuracy_gap and worst_auc <= args.max_auc_gap
    ok = ok and out.get("split_identical", True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
