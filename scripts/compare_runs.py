#!/usr/bin/env python3
"""Compare two runs of the same sweep, e.g. before and after a change that
must not move results.

    python3 scripts/compare_runs.py RUNS_A RUNS_B [SWEEP]

RUNS_A and RUNS_B are file:// store directories. For every task both runs
completed, checks that `features.safetensors` and `mc_scores.safetensors` are
byte-identical and that `metrics.json` is identical once the fields that
describe the run rather than the result are removed, at any depth: the
`timings` and `versions` of the cell and the `seconds` / `fit_seconds` each
layer's probe took.
Prints one line per task and the extraction and total time of each run.
Exits 1 on any difference or when the runs share no task.
"""
import hashlib
import json
import sys
from pathlib import Path

RUN_FIELDS = ("timings", "versions", "seconds", "fit_seconds")


def result_only(value):
    """`value` without the fields that describe the run."""
    if isinstance(value, dict):
        return {k: result_only(v) for k, v in value.items() if k not in RUN_FIELDS}
    if isinstance(value, list):
        return [result_only(v) for v in value]
    return value


def tasks(root: Path, sweep: str) -> dict:
    base = root / sweep / "tasks"
    return {p.parent.name: p.parent for p in base.glob("*/metrics.json")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-"


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    sweep = sys.argv[3] if len(sys.argv) == 4 else "quickstart"
    ta, tb = tasks(a, sweep), tasks(b, sweep)
    shared = sorted(set(ta) & set(tb))
    if not shared:
        print(f"no task completed in both {a} and {b} (sweep {sweep})", file=sys.stderr)
        return 1
    bad = 0
    sums = {"a": [0.0, 0.0], "b": [0.0, 0.0]}
    for tid in shared:
        da, db = ta[tid], tb[tid]
        ma = json.loads((da / "metrics.json").read_text())
        mb = json.loads((db / "metrics.json").read_text())
        for side, m in (("a", ma), ("b", mb)):
            t = m.get("timings", {})
            sums[side][0] += t.get("extract", 0.0)
            sums[side][1] += t.get("total", 0.0)
        same_metrics = result_only(ma) == result_only(mb)
        files = ("features.safetensors", "mc_scores.safetensors")
        same_files = all(digest(da / f) == digest(db / f) for f in files)
        ok = same_metrics and same_files
        bad += not ok
        what = "identical" if ok else f"DIFFERENT (metrics {same_metrics}, files {same_files})"
        print(f"{tid} {ma.get('spec', {}).get('dataset', {}).get('name', '?'):<24} {what}")
    print(f"{len(shared)} tasks compared, {bad} different; "
          f"only in A: {len(set(ta) - set(tb))}, only in B: {len(set(tb) - set(ta))}")
    for side, root in (("a", a), ("b", b)):
        print(f"{root}: extract {sums[side][0]:.1f} s, total {sums[side][1]:.1f} s")
    if sums["a"][0] > 0:
        print(f"extract time B / A = {sums['b'][0] / sums['a'][0]:.3f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
