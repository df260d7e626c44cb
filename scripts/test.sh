#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: sets up what the tests need
# (Python helpers, the SmolLM2 GGUF, tiny random checkpoints, an S3-compatible
# server, manifest validators), then runs formatting, lint and every test.
#
# Safe to rerun: downloads and builds are cached under $CD_CACHE
# (default ~/.cache/concept-depth), outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

export CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CD_CACHE/target}
mkdir -p "$CD_CACHE"

step() { printf '\n==> %s\n' "$*"; }

step "python tools for tests (numpy and safetensors, to read our outputs as users do)"
bash scripts/setup-python.sh
export CD_PYTHON="$CD_CACHE/venv/bin/python"
export PATH="$CD_CACHE/venv/bin:$PATH"

step "real model weights: SmolLM2-135M-Instruct and gemma-3-270m GGUF"
export CD_SMOLLM2_GGUF CD_GEMMA3_GGUF
CD_SMOLLM2_GGUF=$(bash scripts/fetch-models.sh smollm2)
CD_GEMMA3_GGUF=$(bash scripts/fetch-models.sh gemma3)

step "a real S3-compatible server for storage tests (s3s-fs)"
export CD_S3S_FS="$CD_CACHE/s3s/bin/s3s-fs"
if [[ ! -x "$CD_S3S_FS" ]]; then
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$CD_CACHE/s3s"
fi

step "a headless browser for the dashboard and report tests (Debian's chromium)"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo -n)
  { "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } ||
    echo "warning: could not install chromium; the browser tests will say so and skip" >&2
fi
if command -v chromium >/dev/null 2>&1; then
  export CD_CHROMIUM
  CD_CHROMIUM=$(command -v chromium)
fi
# Screenshots the browser tests take, for people to look at.
export CD_ARTEFACTS_DIR=${CD_ARTEFACTS_DIR:-$ROOT/target/artefacts}

step "tiny random checkpoints of every architecture"
export CD_TINY_MODELS="$CD_CACHE/tiny-models"
"$CD_PYTHON" scripts/fixtures/make_tiny_models.py --out "$CD_TINY_MODELS"

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# End-to-end tests start the binaries nextest has just built.
export CD_BIN_DIR="$CARGO_TARGET_DIR/debug"
cargo build --workspace --locked --bins
cargo nextest run --workspace --locked --profile ci

step "deployment manifests and images"
bash scripts/ci/deploy.sh
