#!/usr/bin/env bash
# One-command GPU benchmark and correctness check of the CUDA worker.
#
#   scripts/gpu/bench.sh [quick|full]
#
# Needs a CUDA build of the engine's benchmark at .cuda-bin/cd-bench
# (scripts/build-cuda.sh makes one; set CD_BENCH to use another) and one NVIDIA GPU. No model is
# downloaded: every model is random weights of a named shape, except the tiny
# HF checkpoints written by scripts/fixtures/make_tiny_models.py (needs numpy).
#
# It runs, in order:
#   1. correctness: per-layer pooled states on cuda:0 against the CPU in f32
#      (tiny checkpoints of every architecture, a random tiny LLaMA with the
#      layers split over two device handles, a random SmolLM2-135M-shaped
#      model), at precisions 32 and 16;
#   2. throughput: a LLaMA-2-7B-shaped model in bf16 at batch × seq =
#      32 × 256 (full: also 8, 16 and 64 × 256 and 32 × 512), tokens/s and MFU;
#   3. where the time goes: the 7B layer's operations timed one by one;
#   4. 70B shapes: a 40-layer slice of LLaMA-2-70B in bf16 (half the model:
#      what each of two 80 GB GPUs runs), and the cost of a device boundary.
# Results: one JSON line per run in $RESULTS (default gpu-bench.jsonl), logs
# on stderr. MFU uses the dense bf16 peak of the GPU found by nvidia-smi
# (H100 SXM 989.4 TFLOP/s; override with PEAK_TFLOPS).
set -euo pipefail

mode="${1:-quick}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bench="${CD_BENCH:-$repo/.cuda-bin/cd-bench}"
results="${RESULTS:-gpu-bench.jsonl}"
[[ -x "$bench" ]] || {
    echo "bench.sh: no CUDA cd-bench at $bench: run scripts/build-cuda.sh first" >&2
    exit 1
}

# Run-time libraries: a lib/ next to the binary (its rpath) wins; otherwise
# the CUDA 13 libraries of a Python install (PyTorch cu13x wheels ship them in
# site-packages/nvidia/cu13/lib), then the system's. libcuda.so.1 comes from
# the driver.
if [[ ! -d "$(dirname "$bench")/lib" ]]; then
    for py in python3 python; do
        command -v "$py" >/dev/null || continue
        dirs="$("$py" -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)"
        for d in $dirs; do
            if [[ -e "$d/nvidia/cu13/lib/libcublas.so.13" ]]; then
                export LD_LIBRARY_PATH="$d/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
                break 2
            fi
        done
    done
fi
if ldd "$bench" | grep -q 'not found'; then
    echo "bench.sh: the worker's libraries are not all found:" >&2
    ldd "$bench" | grep 'not found' >&2
    exit 1
fi

gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n1)"
echo "== GPU: $gpu" >&2
if [[ -z "${PEAK_TFLOPS:-}" ]]; then
    case "$gpu" in
        *H100*PCIe*) PEAK_TFLOPS=756 ;;
        *H100*NVL*) PEAK_TFLOPS=835 ;;
        *H100* | *H200* | *H800*) PEAK_TFLOPS=989.4 ;;
        *A100*) PEAK_TFLOPS=312 ;;
        *L40S*) PEAK_TFLOPS=362 ;;
        *)
            echo "bench.sh: unknown GPU peak for '$gpu': set PEAK_TFLOPS (dense bf16 TFLOP/s)" >&2
            exit 1
            ;;
    esac
fi
echo "== MFU against $PEAK_TFLOPS TFLOP/s dense bf16" >&2

# A failed run is reported and counted, and the remaining runs still go.
failures=0
w() {
    "$bench" random --json "$results" --peak-tflops "$PEAK_TFLOPS" "$@" || {
        echo "bench.sh: FAILED: cd-bench random $*" >&2
        failures=$((failures + 1))
    }
}

echo "== 1. correctness against the CPU in f32" >&2
tiny="$(mktemp -d)"
trap 'rm -rf "$tiny"' EXIT
if python3 "$repo/scripts/fixtures/make_tiny_models.py" --out "$tiny" >/dev/null; then
    for m in "$tiny"/*/; do
        for p in 32 16; do
            w --check --model "$m" --precision "$p" --batch 4
        done
    done
else
    echo "bench.sh: tiny checkpoints not written (numpy missing?); skipping them" >&2
fi
for p in 32 16 8; do
    w --check --config tiny --precision "$p" --batch 4 --seq 64 --split 2
    w --check --config smollm2-135m --precision "$p" --batch 4 --seq 128
done

echo "== 2. throughput, LLaMA-2-7B shape" >&2
w --config llama2-7b --precision 16 --batch 32 --seq 256
if [[ "$mode" == full ]]; then
    for b in 8 16 64; do
        w --config llama2-7b --precision 16 --batch "$b" --seq 256
    done
    w --config llama2-7b --precision 16 --batch 32 --seq 512 --iters 4
    w --config llama2-7b --precision 16 --batch 32 --seq 256 --site post_attention_norm
    w --config llama2-7b --precision 32 --batch 32 --seq 256 --iters 4
    w --config llama2-7b --precision 8 --batch 32 --seq 256 --warmup 1 --iters 2
fi

echo "== 3. the 7B layer, op by op" >&2
w --ops --config llama2-7b --precision 16 --batch 32 --seq 256

echo "== 4. 70B shapes: half the model per GPU, and a device boundary" >&2
w --config llama2-70b --layers 40 --precision 16 --batch 32 --seq 256 --warmup 1 --iters 4
w --config llama2-7b --precision 16 --batch 32 --seq 256 --split 2
echo "== results appended to $results; $failures run(s) failed" >&2
((failures == 0))
