#!/usr/bin/env bash
# Load benchmark of the coordinator: ≥1000 simulated workers pulling ≥100,000
# trivial tasks over real gRPC on loopback (see docs/bench-load.md).
#
#   scripts/bench_load.sh [--workers N] [--tasks N] [--connections N] [--work-ms MS]
#
# BENCH_NICE=-15 (root only) runs the benchmark and the coordinator at that
# scheduling priority, in their own autogroup where the kernel has autogroups,
# so that background jobs on a shared machine do not decide the latency tail.
#
# Builds the release coordinator and the benchmark, then runs the coordinator as
# its own process (its VmHWM is reported) with a memory:// store and completion
# verification off: the benchmark measures scheduling and RPC, not storage.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cd-coordinator --bin cd-coordinator --example load_bench
target="${CARGO_TARGET_DIR:-target}"
echo "machine: $(nproc) cores, $(uname -sr), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
bench=("$target/release/examples/load_bench" --coordinator-bin "$target/release/cd-coordinator" "$@")
if [[ -n "${BENCH_NICE:-}" ]]; then
  echo "priority: nice $BENCH_NICE (own autogroup: $([[ -e /proc/self/autogroup ]] && echo yes || echo no))"
  # With autogroups, nice only ranks threads inside a session: start a new
  # session and set the group's nice too.
  exec setsid --wait bash -c 'n=$1; shift; [[ -e /proc/self/autogroup ]] && echo "$n" > /proc/self/autogroup; exec nice -n "$n" "$@"' _ "$BENCH_NICE" "${bench[@]}"
fi
exec "${bench[@]}"
