#!/usr/bin/env python3
"""Summarise scripts/bench_extract.sh's per-run results (TSV: engine, batch,
texts, tokens, seconds, tokens/s, peak RSS MiB) as a Markdown table: per
engine and batch size, the runs, best and median tokens/s and the largest
peak RSS; then cd-worker's best configuration against HF's best, by best
run and by median."""

import statistics
import sys
from collections import OrderedDict


def main(path):
    groups = OrderedDict()
    for line in open(path):
        engine, batch, texts, tokens, _secs, tps, rss = line.rstrip("\n").split("\t")
        g = groups.setdefault((engine, int(batch)), {"tokens": tokens, "tps": [], "rss": []})
        g["tps"].append(float(tps))
        g["rss"].append(int(rss))
    print("| engine | batch | tokens | runs | best tokens/s | median tokens/s | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for (engine, batch), g in groups.items():
        print(
            f"| {engine} | {batch} | {g['tokens']} | {len(g['tps'])} | {max(g['tps']):.1f} "
            f"| {statistics.median(g['tps']):.1f} | {max(g['rss'])} |"
        )

    def best(engine, stat):
        cands = [(stat(g["tps"]), b) for (e, b), g in groups.items() if e == engine]
        return max(cands) if cands else None

    print()
    for label, stat in (("best run", max), ("median run", statistics.median)):
        ours, hf = best("cd-worker", stat), best("hf-batched", stat)
        if ours and hf:
            print(
                f"- by {label}: cd-worker {ours[0]:.1f} tokens/s (batch {ours[1]}) / "
                f"HF batched {hf[0]:.1f} (batch {hf[1]}) = **{ours[0] / hf[0]:.2f}x**"
            )
    seed = groups.get(("hf-seed", 1))
    ours = best("cd-worker", statistics.median)
    if seed and ours:
        print(
            f"- against the seed code's way (batch 1, median {statistics.median(seed['tps']):.1f}): "
            f"{ours[0] / statistics.median(seed['tps']):.2f}x"
        )


if __name__ == "__main__":
    main(sys.argv[1])
