#!/usr/bin/env bash
# Probe benchmark: our per-layer probes (all cores, layers in parallel) against
# scikit-learn fitting the same layers one by one, on the same synthetic
# features and split, in the same run.
#
#   scripts/bench_probe.sh N LAYERS D [SKLEARN_MAX_ITER] [--layers a,b,c]
#   e.g. scripts/bench_probe.sh 2000 31 576
#        scripts/bench_probe.sh 6000 33 4096 100 --layers 0,8,16,24,32
#
# Needs python3 with numpy, scikit-learn and threadpoolctl (PYTHON overrides
# the interpreter). Data go to ${BENCH_DIR:-target/bench-probe}/N-L-D.
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1 layers=$2 d=$3 max_iter=${4:-100}
shift $(( $# >= 4 ? 4 : 3 ))
sel=("$@")
py=${PYTHON:-python3}
dir=${BENCH_DIR:-target/bench-probe}/$n-$layers-$d
if [ ! -f "$dir/features.npy" ]; then
  "$py" scripts/probe_bench_data.py "$dir" "$n" "$layers" "$d"
fi
cargo build --release -p cd-common --bench bench_probe >/dev/null 2>&1 || cargo bench -p cd-common --bench bench_probe --no-run
echo "== cd-common (release, $(nproc) cores)"
/usr/bin/time -f "peak_rss_kb=%M wall=%e user=%U" cargo bench -q -p cd-common --bench bench_probe -- "$dir" "${sel[@]}" | tee "$dir/ours.json"
echo "== scikit-learn LogisticRegression(C=1.0, max_iter=$max_iter), layer by layer"
# The BLAS kernel is picked by OpenBLAS itself for the comparison; threadpoolctl reports it.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" scripts/probe_bench_sklearn.py "$dir" "$max_iter" 1e-4 "${sel[@]}" | tee "$dir/sklearn.json"
"$py" - "$dir/ours.json" "$dir/sklearn.json" <<'PY'
import json, sys
ours, sk = (json.load(open(p)) for p in sys.argv[1:3])
acc_o = [l["accuracy"] for l in ours["layers"]]
acc_s = [l["accuracy"] for l in sk["layers"]]
gap = max(abs(a - b) for a, b in zip(acc_o, acc_s))
auc_gap = max(abs(a["auc"] - b["auc"]) for a, b in zip(ours["layers"], sk["layers"]))
print(f"layers={len(acc_o)} ours_fit_s={ours['fit_seconds']:.2f} sklearn_fit_s={sk['fit_seconds']:.2f} "
      f"speedup={sk['fit_seconds'] / ours['fit_seconds']:.1f}x ours_converged={sum(l['converged'] for l in ours['layers'])}/{len(acc_o)} "
      f"sklearn_converged={sum(l['converged'] for l in sk['layers'])}/{len(acc_s)} "
      f"mean_acc_ours={sum(acc_o)/len(acc_o):.4f} mean_acc_sklearn={sum(acc_s)/len(acc_s):.4f} max_layer_acc_gap={gap:.4f} max_layer_auc_gap={auc_gap:.4f}")
PY
