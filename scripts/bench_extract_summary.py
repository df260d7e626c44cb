#!/usr/bin/env python3
"""Summarise scripts/bench_extract.sh's per-run results (TSV: engine, batch,
texts, tokens, seconds, tokens/s, peak RSS MiB) as Markdown: the machine, then
per engine and batch size the runs, best and median tokens/s, the achieved
GFLOP/s (projections only: 2 x their weights per token) as a share of the
measured FMA peak of the instruction set that engine ran, and the largest
peak RSS; then each cd-worker engine's best configuration against HF's best,
by best run and by median."""

import argparse
import json
import os
import statistics
from collections import OrderedDict


def flops_per_token(model_dir):
    """2 x the weights of every projection (attention and MLP) of all layers:
    the multiply-adds a token costs, attention scores aside (small for the
    short texts benchmarked)."""
    c = json.load(open(os.path.join(model_dir, "config.json")))
    d, layers, inter = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    heads = c["num_attention_heads"]
    hd = c.get("head_dim") or d // heads
    kv = c.get("num_key_value_heads") or heads
    attn = d * heads * hd * 2 + d * kv * hd * 2
    mlp = 3 * d * inter
    return 2 * layers * (attn + mlp)


def isa_of(engine, torch_isa, precision, peak):
    """The instruction set whose peak an engine's throughput is compared to:
    in bf16 the machine's bf16 peak (its AMX tiles when it has them, else
    AVX512-BF16: both sides' bf16 matmuls run there), in f32 the vector
    width the engine ran."""
    words = engine.split(" ")
    if precision == "16":
        return "amx" if "amx" in peak else "avx512bf16"
    if engine.startswith("cd-worker"):
        # "cd-worker ISA[ BLOCKING]"
        return words[1] if len(words) > 1 and words[1] in ("avx512", "avx2") else None
    if words[-1] in ("avx512", "avx2"):
        return words[-1]
    cap = torch_isa.upper()
    if cap.startswith("AVX512"):
        return "avx512"
    if cap.startswith("AVX2"):
        return "avx2"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--model")
    ap.add_argument("--peak")
    ap.add_argument("--torch-isa", default="unknown")
    ap.add_argument("--machine", default="unknown")
    ap.add_argument("--threads", default="?")
    ap.add_argument("--cores", default="?")
    ap.add_argument("--precision", default="32")
    args = ap.parse_args()
    peak = json.load(open(args.peak)) if args.peak else {}
    fpt = flops_per_token(args.model) if args.model else None

    groups = OrderedDict()
    for line in open(args.results):
        engine, batch, texts, tokens, _secs, tps, rss = line.rstrip("\n").split("\t")
        g = groups.setdefault((engine, int(batch)), {"tokens": tokens, "tps": [], "rss": []})
        g["tps"].append(float(tps))
        g["rss"].append(int(rss))

    peaks = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items() if k != "threads")
    print(
        f"- machine: {args.machine}, {args.cores} cores, {args.threads} threads per engine; "
        f"measured peak on those threads: {peaks or 'n/a'}"
    )
    print(f"- precision: {'f32' if args.precision == '32' else 'bf16'}; torch CPU capability: {args.torch_isa}")
    if fpt:
        print(f"- projections: {fpt / 1e6:.0f} MFLOP per token")
    print()
    print("| engine | batch | tokens | runs | best tokens/s | median tokens/s | GFLOP/s (share of ISA peak) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for (engine, batch), g in groups.items():
        best = max(g["tps"])
        eff = "n/a"
        isa = isa_of(engine, args.torch_isa, args.precision, peak)
        if fpt:
            gf = best * fpt / 1e9
            eff = f"{gf:.0f}"
            if isa in peak:
                eff += f" ({100 * gf / peak[isa]:.0f} % of {isa})"
        print(
            f"| {engine} | {batch} | {g['tokens']} | {len(g['tps'])} | {best:.1f} "
            f"| {statistics.median(g['tps']):.1f} | {eff} | {max(g['rss'])} |"
        )

    def best_of(engine, stat):
        cands = [(stat(g["tps"]), b) for (e, b), g in groups.items() if e == engine]
        return max(cands) if cands else None

    hf_engines = list(OrderedDict.fromkeys(e for e, _ in groups if e.startswith("hf-batched")))
    ours = list(OrderedDict.fromkeys(e for e, _ in groups if e.startswith("cd-worker")))

    def peer(engine):
        """HF held to the same instruction set if it ran so, else HF as it is."""
        words = engine.split(" ")
        isa = words[1] if len(words) > 1 else ""
        same = [h for h in hf_engines if h.endswith(" " + isa)]
        plain = [h for h in hf_engines if h.split(" ")[-1] not in ("avx2", "avx512")]
        return (same or plain or [None])[0]

    print()
    for engine in ours:
        hf_engine = peer(engine)
        for label, stat in (("best run", max), ("median run", statistics.median)):
            o, hf = best_of(engine, stat), best_of(hf_engine, stat) if hf_engine else None
            if o and hf:
                print(
                    f"- {engine}, by {label}: {o[0]:.1f} tokens/s (batch {o[1]}) / "
                    f"{hf_engine} {hf[0]:.1f} (batch {hf[1]}) = **{o[0] / hf[0]:.2f}x**"
                )
    seed = next((g for (e, b), g in groups.items() if e.startswith("hf-seed")), None)
    if seed and ours:
        o = best_of(ours[0], statistics.median)
        print(
            f"- {ours[0]} against the seed code's way (batch 1, median "
            f"{statistics.median(seed['tps']):.1f}): {o[0] / statistics.median(seed['tps']):.2f}x"
        )


if __name__ == "__main__":
    main()
