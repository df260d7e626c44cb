#!/usr/bin/env bash
# CPU projection kernels, shape by shape: candle's matmul and the engine's
# packed f32 kernel (`cd-bench matmul`) against PyTorch's `linear` on
# the same shapes, in the same run, with the same thread count.
#
#   scripts/bench_matmul.sh            (SmolLM2-135M's projections, 22/180/700 rows)
#
# Needs a Python with torch in BENCH_PYTHON (default python3). Uses the release
# build of cd-bench (BENCH_BIN=path for another one). Prints Markdown tables.
# BENCH_THREADS (default 2) sets both sides' threads; BENCH_CPU_TIME=1 divides
# by each process's CPU time instead of wall time (GFLOP per CPU-second: with
# BENCH_THREADS=1, each kernel's per-core efficiency, robust to a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${BENCH_THREADS:-2}
PY=${BENCH_PYTHON:-python3}
if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN
else
  cargo build --release -p cd-worker --bin cd-bench >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/cd-bench
fi
CPU_TIME=${BENCH_CPU_TIME:-0}
CORES=$(nproc) # before OMP_NUM_THREADS is set: nproc honours it
export RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "machine: $CORES cores, $THREADS threads, $(uname -m), $([[ $CPU_TIME == 1 ]] && echo 'GFLOP per CPU-second' || echo 'GFLOP per wall-second')"
echo
"$BIN" matmul ${BENCH_SHAPES:+--shapes "$BENCH_SHAPES"} $([[ $CPU_TIME == 1 ]] && echo --cpu-time)
echo
"$PY" - "$THREADS" "${BENCH_SHAPES:-}" "$CPU_TIME" <<'PYEOF'
import sys, time
import torch
threads, shapes, cpu_time = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
clock = time.process_time if cpu_time else time.perf_counter
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
        calls, start, spent0 = 0, time.perf_counter(), clock()
        while time.perf_counter() - start < 0.5 or calls < 3:
            torch.nn.functional.linear(x, w)
            calls += 1
        per = (clock() - spent0) / calls
        print(f"| {m} | {n} | {k} | {2 * m * n * k / per / 1e9:.1f} |")
PYEOF
