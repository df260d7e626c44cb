#!/usr/bin/env bash
# CPU projection kernels, shape by shape: candle's matmul and the engine's
# packed f32 kernel (`cd-worker bench-matmul`) against PyTorch's `linear` on
# the same shapes, in the same run, with the same thread count.
#
#   scripts/bench_matmul.sh            (SmolLM2-135M's projections, 22/180/700 rows)
#
# Needs a Python with torch in BENCH_PYTHON (default python3). Uses the release
# build of cd-worker (BENCH_BIN=path for another one). Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${BENCH_THREADS:-2}
PY=${BENCH_PYTHON:-python3}
if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN
else
  cargo build --release -p cd-worker >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/cd-worker
fi
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "machine: $(nproc) cores, $THREADS threads, $(uname -m)"
echo
"$BIN" bench-matmul ${BENCH_SHAPES:+--shapes "$BENCH_SHAPES"}
echo
"$PY" - "$THREADS" "${BENCH_SHAPES:-}" <<'PYEOF'
import sys, time
import torch
threads, shapes = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
if shapes:
    shapes = [tuple(int(v) for v in s.split(",")) for s in shapes.split(";") if s.strip()]
else:
    shapes = [(m, n, k) for m in (22, 180, 700)
              for (n, k) in ((576, 576), (192, 576), (1536, 576), (576, 1536))]
print("| m | n | k | torch GFLOP/s |")
print("|---|---|---|---|")
with torch.inference_mode():
    for m, n, k in shapes:
        x, w = torch.randn(m, k), torch.randn(n, k)
        torch.nn.functional.linear(x, w)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.5 or calls < 3:
            torch.nn.functional.linear(x, w)
            calls += 1
        per = (time.perf_counter() - start) / calls
        print(f"| {m} | {n} | {k} | {2 * m * n * k / per / 1e9:.1f} |")
PYEOF
