#!/usr/bin/env python3
"""Write the probe parity fixture: features, a split, and scikit-learn's results.

The features imitate pooled LLM activations: a per-layer offset, a few
"massive" dimensions two orders of magnitude larger than the rest, low-rank
correlated structure, anisotropic noise, and a class signal whose strength
grows with depth (layer 0 carries none, the last layers are nearly separable).
scikit-learn's LogisticRegression(penalty='l2', C=1.0) is fitted per layer on
the same split, raw and standardised, run to convergence (lbfgs, tight tol,
large max_iter); its default max_iter=100 result is recorded beside it.

Usage: python scripts/probe_fixture.py [OUT_DIR]
(default: common/tests/fixtures/probe). Needs numpy and scikit-learn.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

N, L, D = 360, 6, 128
SEED = 20240406


def features(rng):
    y = (rng.random(N) < 0.47).astype(np.int64)
    x = np.empty((N, L, D), dtype=np.float64)
    rank = 8
    for layer in range(L):
        basis = rng.normal(size=(rank, D)) * np.linspace(3.0, 0.3, rank)[:, None]
        latent = rng.normal(size=(N, rank))
        noise = rng.normal(size=(N, D)) * rng.uniform(0.2, 2.0, size=D)
        offset = rng.normal(size=D) * 2.0
        direction = rng.normal(size=D)
        direction /= np.linalg.norm(direction)
        strength = [0.0, 0.2, 0.4, 0.7, 1.2, 1.0][layer]
        signal = np.outer((2 * y - 1) * strength, direction) * 2.0
        x[:, layer, :] = offset + latent @ basis + noise + signal
        # Massive activations: a few dims far larger than the rest.
        x[:, layer, :3] = 80.0 * (1 + layer) + rng.normal(size=(N, 3)) * 5.0
    # A constant column and an all-zero column, as dead units would give.
    x[:, :, 5] = 1.5
    x[:, :, 6] = 0.0
    return x.astype(np.float32), y


def fit(xtr, ytr, standardize, max_iter, tol):
    scaler = StandardScaler().fit(xtr) if standardize else None
    xt = scaler.transform(xtr) if scaler else xtr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0, max_iter=max_iter, tol=tol).fit(xt, ytr)
    return scaler, clf


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "common/tests/fixtures/probe")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    x, y = features(rng)
    idx = np.arange(N)
    train, test = train_test_split(idx, test_size=0.4, stratify=y, random_state=0)
    train, test = np.sort(train), np.sort(test)
    layers = []
    for layer in range(L):
        xl = x[:, layer, :].astype(np.float64)
        entry = {"layer": layer}
        for standardize in (False, True):
            key = "standardized" if standardize else "raw"
            scaler, clf = fit(xl[train], y[train], standardize, 100000, 1e-10)
            xte = scaler.transform(xl[test]) if scaler else xl[test]
            pred = clf.predict(xte)
            proba = clf.predict_proba(xte)[:, 1]
            coef = clf.coef_[0] / (scaler.scale_ if scaler else 1.0)
            intercept = clf.intercept_[0] - (float(np.dot(scaler.mean_, coef)) if scaler else 0.0)
            _, default = fit(xl[train], y[train], standardize, 100, 1e-4)
            entry[key] = {
                "accuracy": accuracy_score(y[test], pred),
                "f1": f1_score(y[test], pred, pos_label=1),
                "auc": roc_auc_score(y[test], proba),
                "n_iter": int(clf.n_iter_[0]),
                "coef_raw": coef.tolist(),
                "intercept_raw": float(intercept),
                "default_max_iter_accuracy": accuracy_score(
                    y[test], default.predict(scaler.transform(xl[test]) if scaler else xl[test])
                ),
                "default_max_iter_n_iter": int(default.n_iter_[0]),
            }
        layers.append(entry)
    np.save(out / "features.npy", x)
    meta = {
        "generator": "scripts/probe_fixture.py",
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "shape": [N, L, D],
        "labels": y.tolist(),
        "train": train.tolist(),
        "test": test.tolist(),
        "layers": layers,
    }
    (out / "sklearn.json").write_text(json.dumps(meta, indent=1) + "\n")
    for e in layers:
        print(e["layer"], {k: (round(e[k]["accuracy"], 4), round(e[k]["auc"], 4), e[k]["n_iter"]) for k in ("raw", "standardized")})


if __name__ == "__main__":
    main()
