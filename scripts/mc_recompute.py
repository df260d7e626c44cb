#!/usr/bin/env python3
"""Recompute a multiple-choice cell's MC1/MC2/MC3 from its exported scores.

Reads `mc_scores.safetensors` (sums [lens, layer, candidate], n_tokens, item,
is_true, is_best; metadata `lenses`) and `metrics.json`, recomputes per lens,
layer and length normalisation:
  MC1 = [score(best) > max(false)], MC2 = Σ exp(true) / (Σ exp(true) + Σ exp(false))
  (scores halved until a side's mass is not 0, as the original code does),
  MC3 = share of true answers above max(false), each averaged over items,
and compares with `mc_layers` of metrics.json. Prints one JSON object; exits 1
when any value differs by more than --tolerance (default 1e-12).

Usage: mc_recompute.py MC_SCORES METRICS [--tolerance 1e-12]
"""

import argparse
import json
import sys

import numpy as np
from safetensors import safe_open


def mass(scores):
    scores = np.asarray(scores, dtype=np.float64)
    total = np.exp(scores).sum()
    while total == 0 and np.any(scores != 0):
        scores = scores / 2.0
        total = np.exp(scores).sum()
    return total


def item_scores(s, true, best):
    t, f = s[true], s[~true]
    max_false = f.max()
    mc1 = 1.0 if s[best] > max_false else 0.0
    pt, pf = mass(t), mass(f)
    mc2 = pt / (pt + pf)
    mc2 = 0.0 if np.isnan(mc2) else mc2
    mc3 = float((t > max_false).sum()) / len(t)
    return mc1, mc2, mc3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scores")
    ap.add_argument("metrics")
    ap.add_argument("--tolerance", type=float, default=1e-12)
    args = ap.parse_args()
    with safe_open(args.scores, "np") as f:
        lenses = f.metadata()["lenses"].split(",")
        sums = f.get_tensor("sums").astype(np.float64)
        n_tokens = f.get_tensor("n_tokens")
        item = f.get_tensor("item")
        is_true = f.get_tensor("is_true").astype(bool)
        is_best = f.get_tensor("is_best").astype(bool)
    m = json.load(open(args.metrics))
    reported = {(r["lens"], r["length_normalised"], r["layer"]): r for r in m["mc_layers"]}
    items = np.unique(item)
    worst, checked = 0.0, 0
    for li, lens in enumerate(lenses):
        for norm in (False, True):
            for layer in range(sums.shape[1]):
                s = sums[li, layer] / (n_tokens if norm else 1)
                acc = np.zeros(3)
                for i in items:
                    sel = item == i
                    best = int(np.flatnonzero(is_best[sel])[0])
                    acc += item_scores(s[sel], is_true[sel], best)
                ours = acc / len(items)
                r = reported[(lens, norm, layer)]
                for k, name in enumerate(("mc1", "mc2", "mc3")):
                    worst = max(worst, abs(ours[k] - r[name]))
                checked += 1
    out = {"lenses": lenses, "items": int(len(items)), "layers": int(sums.shape[1]),
           "rows_checked": checked, "max_difference": worst}
    print(json.dumps(out))
    sys.exit(0 if worst <= args.tolerance and checked == len(reported) else 1)


if __name__ == "__main__":
    main()
