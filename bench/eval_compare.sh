#!/usr/bin/env bash
# strata eval against llama.cpp's llama-perplexity, side by side in one run:
# the same weights (a GGUF converted from the same checkpoint), the same text,
# the same ctx and threads, 4 chunks per batch in both (llama-perplexity's
# default -b 2048 at -c 512; strata's --parallel 4).
#
#   bench/eval_compare.sh --strata build/strata --llama-bin /tmp/llama.cpp/build/bin \
#       --text tests/fixtures/kjv/heldout.txt [--ctx 512] [--chunks N] [--threads 2] [--reps 1] \
#       NAME=GGUF ...
#
# NAME is a variant of the store ($STRATA_STORE or --store), GGUF its conversion
# (bench/hf_to_gguf_bpe.py for byte-level BPE models, llama.cpp's
# convert_hf_to_gguf.py otherwise). Prints one markdown row per model and rep:
# PPL from each (and their relative difference), chunks, and tokens/s through the
# forward (chunks x ctx / wall time of the scoring; llama.cpp: its prompt eval
# time). Raw outputs stay in $OUT (default a temporary directory, printed).
set -euo pipefail

STRATA=build/strata LLAMA_BIN= TEXT= CTX=512 CHUNKS=0 THREADS=2 REPS=1 STORE_ARGS=()
pairs=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --strata) STRATA=$2; shift 2 ;;
  --llama-bin) LLAMA_BIN=$2; shift 2 ;;
  --text) TEXT=$2; shift 2 ;;
  --ctx) CTX=$2; shift 2 ;;
  --chunks) CHUNKS=$2; shift 2 ;;
  --threads) THREADS=$2; shift 2 ;;
  --reps) REPS=$2; shift 2 ;;
  --store) STORE_ARGS=(--store "$2"); shift 2 ;;
  -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
  *=*) pairs+=("$1"); shift ;;
  *) echo "eval_compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "eval_compare: $*" >&2; exit 2; }
[[ -x $STRATA ]] || die "strata binary not found: $STRATA"
[[ -x $LLAMA_BIN/llama-perplexity ]] || die "llama-perplexity not found in --llama-bin ${LLAMA_BIN:-(unset)}"
[[ -f $TEXT ]] || die "--text FILE is required"
[[ ${#pairs[@]} -gt 0 ]] || die "give at least one NAME=GGUF"
OUT=${OUT:-$(mktemp -d /tmp/eval-compare.XXXXXX)}
mkdir -p "$OUT"
echo "raw outputs in $OUT" >&2
chunk_args=()
[[ $CHUNKS -gt 0 ]] && chunk_args=(--chunks "$CHUNKS")

echo "| model | rep | strata PPL | llama.cpp PPL | relative difference | chunks (strata / llama.cpp) | strata tok/s | llama.cpp tok/s | strata / llama.cpp |"
echo "|---|---|---|---|---|---|---|---|---|"
for pair in "${pairs[@]}"; do
  name=${pair%%=*} gguf=${pair#*=}
  [[ -f $gguf ]] || die "GGUF not found: $gguf"
  for ((rep = 1; rep <= REPS; rep++)); do
    s="$OUT/$name.strata.r$rep.json" l="$OUT/$name.llama.r$rep.log"
    "$STRATA" eval "$name" --file "$TEXT" --ctx "$CTX" --threads "$THREADS" --parallel 4 "${chunk_args[@]}" \
      "${STORE_ARGS[@]}" --json -q >"$s"
    "$LLAMA_BIN/llama-perplexity" -m "$gguf" -f "$TEXT" -c "$CTX" -b 2048 -t "$THREADS" "${chunk_args[@]}" \
      >"$l" 2>&1
    python3 - "$s" "$l" "$name" "$rep" <<'EOF'
import json, re, sys
s = json.load(open(sys.argv[1]))["results"][0]
log = open(sys.argv[2], errors="replace").read()
ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
chunks = int(re.search(r"calculating perplexity over (\d+) chunks", log).group(1))
m = re.search(r"prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens", log)
ltps = int(m.group(2)) / (float(m.group(1)) / 1000)
rel = s["ppl"] / ppl - 1
print(f"| {sys.argv[3]} | {sys.argv[4]} | {s['ppl']:.4f} | {ppl:.4f} | {rel:+.2e} | {s['chunks']} / {chunks} | "
      f"{s['tokens_per_s']:,.0f} | {ltps:,.0f} | {s['tokens_per_s'] / ltps:.2f}x |")
EOF
  done
done
