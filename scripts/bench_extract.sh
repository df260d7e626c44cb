#!/usr/bin/env bash
# Extraction throughput: cd-worker (release) against HF transformers, same run,
# same texts, same weights, same thread count.
#
#   scripts/bench_extract.sh [N_TEXTS]      (default 256)
#
# Needs: CD_SMOLLM2_GGUF (else fetched by scripts/fetch-models.sh), a Python
# with torch + transformers + gguf in BENCH_PYTHON (default python3), GNU time
# at /usr/bin/time, a C compiler (cc) for the FMA-peak probe. Texts: the first
# N lines of the SST-2 training split (../shared/datasets/cd/stsa.binary.train,
# or $CD_SHARED_DATASETS/cd/...).
# Both sides time tokenisation + forward passes (model load excluded) and
# take the last token of every layer (residual stream, L+1 vectors).
# Peak RSS per run comes from /usr/bin/time -v. Prints the machine (CPU model,
# threads, the instruction set each side uses, the measured FMA peak per
# instruction set) and a Markdown table: per engine and batch size, the best
# and median tokens/s over the rounds, the achieved GFLOP/s as a share of the
# peak of the instruction set that engine ran, and the ratios of each
# cd-worker configuration's best to HF's best.
#
# Knobs: BENCH_GGUF (another model than SmolLM2-135M), BENCH_BATCHES (batch sizes), BENCH_REPEAT (rounds, default 3),
# BENCH_ISAS (cd-worker's CPU kernels, each run as its own engine: e.g.
# "avx512 avx2"; default "auto", the best the CPU has), BENCH_HF_ISAS (HF's,
# "auto" and/or "avx2": torch, oneDNN and MKL held to AVX2, the peer of an
# AVX2-only machine), BENCH_PRECISION (32, or
# 16 for bf16 on both sides), BENCH_THREADS (default 2), BENCH_SEED=0 to skip
# HF's one-text-at-a-time run, BENCH_BLOCKINGS (the packed kernels' blockings
# to run each of our ISAs under, space-separated, each "default" or
# "k_chunk=N", "row_block_kib=N" or both joined by a comma: e.g.
# "default k_chunk=256 row_block_kib=1024"; each is its own engine,
# labelled with it).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-256}
THREADS=${BENCH_THREADS:-2}
PY=${BENCH_PYTHON:-python3}
BATCHES=${BENCH_BATCHES:-"1 2 4 8 16 32"}
ISAS=${BENCH_ISAS:-auto}
BLOCKINGS=${BENCH_BLOCKINGS:-default}
HF_ISAS=${BENCH_HF_ISAS:-auto}
PRECISION=${BENCH_PRECISION:-32}
case $PRECISION in
  32) HF_DTYPE=f32 ;;
  16) HF_DTYPE=bf16 ;;
  *) echo "BENCH_PRECISION must be 32 or 16, not $PRECISION" >&2; exit 2 ;;
esac
DATA=${CD_SHARED_DATASETS:-../shared/datasets}/cd/stsa.binary.train
CD_CACHE=${CD_CACHE:-$HOME/.cache/concept-depth}
WORK=${BENCH_WORK:-$CD_CACHE/bench-extract}
mkdir -p "$WORK"
# BENCH_GGUF benchmarks another GGUF (e.g. Gemma-3-270m: "$CD_GEMMA3_GGUF").
GGUF=${BENCH_GGUF:-${CD_SMOLLM2_GGUF:-$(bash scripts/fetch-models.sh smollm2)}}

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
# SmolLM2 keeps the directory name earlier runs cached its conversion under.
NAME=$([[ -n ${BENCH_GGUF:-} ]] && basename "$GGUF" .gguf || echo smollm2)
HFDIR=${BENCH_HF_DIR:-$WORK/$NAME-f32}
if [[ ! -f "$HFDIR/model.safetensors" ]]; then
  "$PY" scripts/bench_extract_hf.py convert --gguf "$GGUF" --out "$HFDIR" >&2
fi

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

# The machine: CPU model, the FMA peak per instruction set on $THREADS threads,
# and the instruction set torch dispatches to.
cc -O2 -pthread -o "$WORK/fma_peak" scripts/bench/fma_peak.c
"$WORK/fma_peak" "$THREADS" > "$WORK/peak.json"
"$PY" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())' > "$WORK/torch_isa.txt"
MACHINE=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
rss() { grep 'Maximum resident set size' "$1" | awk '{printf "%.0f", $NF/1024}'; }

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
run_hf() { # mode batch [isa]
  # isa "avx2": torch, oneDNN and MKL limited to AVX2, as on an AVX2-only
  # machine (the peer for cd-worker's AVX2 kernels).
  local env=() label_isa=""
  if [[ ${3:-auto} == avx2 ]]; then
    env=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)
    label_isa=avx2
  fi
  env "${env[@]}" /usr/bin/time -v "$PY" scripts/bench_extract_hf.py "$1" --model "$HFDIR" --input "$WORK/texts.jsonl" \
    --batch-size "$2" --threads "$THREADS" --dtype "$HF_DTYPE" > "$WORK/hf.json" 2> "$WORK/hf.time"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); mode=" ".join(x for x in (r["mode"], sys.argv[3]) if x); print("\t".join([mode] + [str(r[k]) for k in ("batch_size", "texts", "tokens", "seconds", "tokens_per_s")]) + "\t" + sys.argv[2])' \
    "$WORK/hf.json" "$(rss "$WORK/hf.time")" "$label_isa" >> "$RESULTS"
}
# A blocking spec ("default", "k_chunk=256,row_block_kib=1024") as the
# environment variables that set it.
blocking_env() {
  local part
  [[ $1 == default ]] && return
  for part in ${1//,/ }; do
    case ${part%%=*} in
      k_chunk) echo "CD_CPU_K_CHUNK=${part#*=}" ;;
      row_block_kib) echo "CD_CPU_ROW_BLOCK_KIB=${part#*=}" ;;
      *) echo "BENCH_BLOCKINGS: $part is not k_chunk=N or row_block_kib=N" >&2; return 2 ;;
    esac
  done
}
for blocking in $BLOCKINGS; do blocking_env "$blocking" > /dev/null; done
run_ours() { # batch isa [blocking]
  local benv
  benv=$(blocking_env "${3:-default}")
  env $benv CD_CPU_ISA=$2 /usr/bin/time -v "$BIN" extract --model "$HFDIR" --input "$WORK/texts.jsonl" --site residual \
    --pooling last --precision "$PRECISION" --batch-size "$1" --out "$WORK/ours.safetensors" 2> "$WORK/ours.time"
  line=$(grep '^wrote ' "$WORK/ours.time")
  # "wrote F ([n, l, d] f32), N texts, T tokens in Xs (a texts/s, b tokens/s;
  # CPU kernels I[ BLOCKING])"
  texts=$(sed -E 's/.*\), ([0-9]+) texts.*/\1/' <<<"$line")
  tokens=$(sed -E 's/.* ([0-9]+) tokens in.*/\1/' <<<"$line")
  secs=$(sed -E 's/.* tokens in ([0-9.]+)s.*/\1/' <<<"$line")
  tps=$(sed -E 's/.*, ([0-9.]+) tokens\/s.*/\1/' <<<"$line")
  isa=$(sed -E 's/.*CPU kernels ([^)]+)\).*/\1/' <<<"$line")
  label="cd-worker $isa"
  [[ ${CD_CPU_KERNELS:-1} == 0 ]] && label="cd-worker (candle ops)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$1" "$texts" "$tokens" "$secs" "$tps" \
    "$(rss "$WORK/ours.time")" >> "$RESULTS"
}
# BENCH_REPEAT rounds (default 3), each running every configuration once in
# the same order, so that drift in the machine's speed reaches both sides.
for round in $(seq "${BENCH_REPEAT:-3}"); do
  echo "round $round" >&2
  [[ ${BENCH_SEED:-1} == 1 ]] && run_hf seed 1
  for b in $BATCHES; do
    for isa in $ISAS; do
      for blocking in $BLOCKINGS; do
        run_ours "$b" "$isa" "$blocking"
      done
    done
    # BENCH_CANDLE_MATMUL=1: also cd-worker with candle's generic CPU operations
    # instead of the engine's kernels (the same binary, CD_CPU_KERNELS=0), for an A/B.
    if [[ ${BENCH_CANDLE_MATMUL:-0} == 1 ]]; then
      CD_CPU_KERNELS=0 run_ours "$b" auto
    fi
    for isa in $HF_ISAS; do
      run_hf batched "$b" "$isa"
    done
  done
done
"$PY" scripts/bench_extract_summary.py "$RESULTS" --model "$HFDIR" --peak "$WORK/peak.json" \
  --torch-isa "$(cat "$WORK/torch_isa.txt")" --machine "$MACHINE" --cores "$(nproc)" --threads "$THREADS" --precision "$PRECISION"
