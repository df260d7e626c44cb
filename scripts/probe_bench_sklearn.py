#!/usr/bin/env python3
"""scikit-learn peer of the probe benchmark: fit the same layers one by one.

Reads DIR/features.npy ([N, L, D]), DIR/labels.npy, DIR/train.npy, DIR/test.npy
and fits LogisticRegression(penalty='l2', C=1.0) (lbfgs) per layer with the
given max_iter and tol, printing per-layer accuracy, AUC, iterations, whether
it converged, and wall time as JSON. The BLAS kernel in use is reported via
threadpoolctl.

Usage: python scripts/probe_bench_sklearn.py DIR MAX_ITER [TOL] [--layers a,b,c] [--standardize]
       [--solver NAME]   (default lbfgs; newton-cholesky with a tiny TOL gives the exact optimum)
"""
import json
import sys
import time
import warnings

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info


def main():
    args = [a for a in sys.argv[1:]]
    standardize = "--standardize" in args
    args = [a for a in args if a != "--standardize"]
    layers_sel = None
    solver = "lbfgs"
    if "--solver" in args:
        k = args.index("--solver")
        solver = args[k + 1]
        del args[k : k + 2]
    if "--layers" in args:
        k = args.index("--layers")
        layers_sel = [int(v) for v in args[k + 1].split(",")]
        del args[k : k + 2]
    d, max_iter = args[0], int(args[1])
    tol = float(args[2]) if len(args) > 2 else 1e-4
    feats = np.load(f"{d}/features.npy", mmap_mode="r")
    y = np.load(f"{d}/labels.npy").astype(np.int64)
    train, test = np.load(f"{d}/train.npy"), np.load(f"{d}/test.npy")
    layers = layers_sel if layers_sel is not None else list(range(feats.shape[1]))
    rows = []
    total = 0.0
    for layer in layers:
        x = np.ascontiguousarray(feats[:, layer, :])
        t0 = time.perf_counter()
        xtr, xte = x[train], x[test]
        if standardize:
            sc = StandardScaler().fit(xtr)
            xtr, xte = sc.transform(xtr), sc.transform(xte)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=1.0, max_iter=max_iter, tol=tol, solver=solver).fit(xtr, y[train])
        acc = accuracy_score(y[test], clf.predict(xte))
        auc = roc_auc_score(y[test], clf.predict_proba(xte)[:, 1])
        dt = time.perf_counter() - t0
        total += dt
        rows.append({"layer": layer, "accuracy": acc, "auc": auc, "n_iter": int(clf.n_iter_[0]),
                     "converged": bool(clf.n_iter_[0] < max_iter), "seconds": dt})
    blas = [{k: i.get(k) for k in ("internal_api", "num_threads", "architecture")} for i in threadpool_info()]
    print(json.dumps({"tool": f"sklearn {sklearn.__version__}", "solver": solver, "max_iter": max_iter, "tol": tol,
                      "shape": list(feats.shape), "standardize": standardize, "fit_seconds": total,
                      "blas": blas, "layers": rows}))


if __name__ == "__main__":
    main()
