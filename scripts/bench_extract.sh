#!/usr/bin/env bash
# Extraction throughput: cd-worker (release) against HF transformers, same run,
# same texts, same f32 weights, same thread count.
#
#   scripts/bench_extract.sh [N_TEXTS]      (default 256)
#
# Needs: CD_SMOLLM2_GGUF (else fetched by scripts/fetch-models.sh), a Python
# with torch + transformers + gguf in BENCH_PYTHON (default python3), GNU time
# at /usr/bin/time. Texts: the first N lines of the SST-2 training split
# (../shared/datasets/cd/stsa.binary.train, or $CD_SHARED_DATASETS/cd/...).
# Both sides time tokenisation + forward passes (model load excluded) and
# take the last token of every layer (residual stream, L+1 vectors).
# Peak RSS per run comes from /usr/bin/time -v. Prints a Markdown table:
# per engine and batch size, the best and median tokens/s over the rounds,
# and the ratios of cd-worker's best configuration to HF's best.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-256}
THREADS=${BENCH_THREADS:-2}
PY=${BENCH_PYTHON:-python3}
BATCHES=${BENCH_BATCHES:-"1 2 4 8 16 32"}
DATA=${CD_SHARED_DATASETS:-../shared/datasets}/cd/stsa.binary.train
CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
WORK=${BENCH_WORK:-$CD_CACHE/bench-extract}
mkdir -p "$WORK"
GGUF=${CD_SMOLLM2_GGUF:-$(bash scripts/fetch-models.sh smollm2)}

# BENCH_PROFILE=dev uses the dev build (dependencies, candle included, are
# compiled at opt-level 3 there too; only our own crate is unoptimised).
PROFILE=${BENCH_PROFILE:-release}
if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN # an already built cd-worker
else
  cargo build --profile "$PROFILE" -p cd-worker >&2
  BIN=${CARGO_TARGET_DIR:-target}/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")/cd-worker
fi

# Texts as JSONL ({"text", "label"}).
head -n "$N" "$DATA" | "$PY" -c '
import json, sys
for line in sys.stdin:
    label, text = line.rstrip("\n").split(" ", 1)
    print(json.dumps({"text": text, "label": int(label)}))' > "$WORK/texts.jsonl"

# One f32 HF directory both sides load (dequantized from the GGUF once).
HFDIR="$WORK/smollm2-f32"
HFDIR=${BENCH_HF_DIR:-$HFDIR}
if [[ ! -f "$HFDIR/model.safetensors" ]]; then
  "$PY" scripts/bench_extract_hf.py convert --gguf "$GGUF" --out "$HFDIR" >&2
fi

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
rss() { grep 'Maximum resident set size' "$1" | awk '{printf "%.0f", $NF/1024}'; }

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
run_hf() { # mode batch
  /usr/bin/time -v "$PY" scripts/bench_extract_hf.py "$1" --model "$HFDIR" --input "$WORK/texts.jsonl" \
    --batch-size "$2" --threads "$THREADS" > "$WORK/hf.json" 2> "$WORK/hf.time"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("\t".join(str(r[k]) for k in ("mode", "batch_size", "texts", "tokens", "seconds", "tokens_per_s")) + "\t" + sys.argv[2])' \
    "$WORK/hf.json" "$(rss "$WORK/hf.time")" >> "$RESULTS"
}
run_ours() { # batch [label]
  /usr/bin/time -v "$BIN" extract --model "$HFDIR" --input "$WORK/texts.jsonl" --site residual \
    --pooling last --precision 32 --batch-size "$1" --out "$WORK/ours.safetensors" 2> "$WORK/ours.time"
  line=$(grep '^wrote ' "$WORK/ours.time")
  # "wrote F ([n, l, d] f32), N texts, T tokens in Xs (a texts/s, b tokens/s)"
  texts=$(sed -E 's/.*\), ([0-9]+) texts.*/\1/' <<<"$line")
  tokens=$(sed -E 's/.* ([0-9]+) tokens in.*/\1/' <<<"$line")
  secs=$(sed -E 's/.* tokens in ([0-9.]+)s.*/\1/' <<<"$line")
  tps=$(sed -E 's/.*, ([0-9.]+) tokens\/s.*/\1/' <<<"$line")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${2:-cd-worker}" "$1" "$texts" "$tokens" "$secs" "$tps" \
    "$(rss "$WORK/ours.time")" >> "$RESULTS"
}
# BENCH_REPEAT rounds (default 3), each running every configuration once in
# the same order, so that drift in the machine's speed reaches both sides.
for round in $(seq "${BENCH_REPEAT:-3}"); do
  echo "round $round" >&2
  [[ ${BENCH_SEED:-1} == 1 ]] && run_hf seed 1
  for b in $BATCHES; do
    run_ours "$b"
    # BENCH_CANDLE_MATMUL=1: also cd-worker with candle's generic CPU operations
    # instead of the engine's kernels (the same binary, CD_CPU_KERNELS=0), for an A/B.
    if [[ ${BENCH_CANDLE_MATMUL:-0} == 1 ]]; then
      CD_CPU_KERNELS=0 run_ours "$b" "cd-worker (candle ops)"
    fi
    run_hf batched "$b"
  done
done
"$PY" scripts/bench_extract_summary.py "$RESULTS"
