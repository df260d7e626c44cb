#!/usr/bin/env python3
"""Synthetic pooled-activation features for the probe benchmark.

Writes OUT/features.npy ([N, L, D] f32, the layout `cd-worker extract`
produces), OUT/labels.npy (u8) and OUT/train.npy / OUT/test.npy (a stratified
60/40 split). Each layer imitates a residual stream: a mean offset whose norm
grows with depth, three "massive" dimensions about 100x the typical scale,
low-rank correlated structure with a decaying spectrum, anisotropic noise, and
a class signal along a layer-specific direction whose strength rises over the
first half of the network and then slowly decays; 8 % of labels are flipped
so no layer is separable.

Usage: python scripts/probe_bench_data.py OUT N L D [SEED]
"""
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split


def main():
    out, n, layers, d = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.uint8)
    flip = rng.random(n) < 0.08
    sign = np.where(y == 1, 1.0, -1.0) * np.where(flip, -1.0, 1.0)
    feats = np.lib.format.open_memmap(out / "features.npy", mode="w+", dtype=np.float32, shape=(n, layers, d))
    rank = 64
    for layer in range(layers):
        t = layer / max(layers - 1, 1)
        scale = 1.0 + 4.0 * t
        basis = rng.standard_normal((rank, d), dtype=np.float32) * (np.geomspace(4.0, 0.2, rank, dtype=np.float32)[:, None] * scale)
        latent = rng.standard_normal((n, rank), dtype=np.float32)
        x = latent @ basis
        x += rng.standard_normal((n, d), dtype=np.float32) * (rng.uniform(0.3, 1.5, d).astype(np.float32) * scale)
        x += (rng.standard_normal(d) * 3.0 * scale).astype(np.float32)
        direction = rng.standard_normal(d).astype(np.float32)
        direction /= np.linalg.norm(direction)
        strength = (min(t / 0.5, 1.0) - 0.3 * max(t - 0.5, 0.0)) * 1.6 * scale
        x += np.outer(sign * strength, direction).astype(np.float32)
        x[:, :3] = 100.0 * scale + rng.standard_normal((n, 3), dtype=np.float32) * 10.0 * scale
        feats[:, layer, :] = x
    feats.flush()
    train, test = train_test_split(np.arange(n), test_size=0.4, stratify=y, random_state=seed)
    np.save(out / "labels.npy", y)
    np.save(out / "train.npy", np.sort(train).astype(np.int64))
    np.save(out / "test.npy", np.sort(test).astype(np.int64))


if __name__ == "__main__":
    main()
