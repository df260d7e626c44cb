#!/usr/bin/env bash
# Load benchmark of the coordinator: ≥1000 simulated workers pulling ≥100,000
# trivial tasks over real gRPC on loopback (see docs/bench-load.md).
#
#   scripts/bench_load.sh [--workers N] [--tasks N] [--connections N]
#
# Builds the release coordinator and the benchmark, then runs the coordinator as
# its own process (its VmHWM is reported) with a memory:// store and completion
# verification off: the benchmark measures scheduling and RPC, not storage.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cd-coordinator --bin cd-coordinator --example load_bench
target="${CARGO_TARGET_DIR:-target}"
echo "machine: $(nproc) cores, $(uname -sr), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
exec "$target/release/examples/load_bench" --coordinator-bin "$target/release/cd-coordinator" "$@"
