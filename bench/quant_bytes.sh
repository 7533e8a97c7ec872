#!/usr/bin/env bash
# strata quantize against llama.cpp's llama-quantize on the same weights: for
# each type, llama-quantize quantizes a GGUF (converted from the checkpoint the
# variant was compiled from), strata quantizes the variant, and
# bench/quant_vs_llama.py compares every tensor's GGML type and bytes. Also
# times both (llama-quantize with --threads, strata with every core).
#
#   bench/quant_bytes.sh --strata build/strata --llama-bin /tmp/llama.cpp/build/bin \
#       [--store DIR] [--threads 2] NAME=GGUF TYPE...
#
# Prints one markdown row per type: tensors compared, identical, the types
# used, both wall times. Raw outputs stay in $OUT (default a temporary directory).
set -euo pipefail

STRATA=build/strata LLAMA_BIN= THREADS=2 STORE_ARGS=() STORE=${STRATA_STORE:-$HOME/.cache/strata}
pair= types=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --strata) STRATA=$2; shift 2 ;;
  --llama-bin) LLAMA_BIN=$2; shift 2 ;;
  --threads) THREADS=$2; shift 2 ;;
  --store) STORE=$2; STORE_ARGS=(--store "$2"); shift 2 ;;
  *=*) pair=$1; shift ;;
  *) types+=("$1"); shift ;;
  esac
done
[[ -n $LLAMA_BIN && -n $pair && ${#types[@]} -gt 0 ]] || { sed -n 2,13p "$0"; exit 2; }
name=${pair%%=*} gguf=${pair#*=}
OUT=${OUT:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
echo "| model | type | tensors | identical | types | llama-quantize s | strata quantize s |"
echo "|---|---|---|---|---|---|---|"
for t in "${types[@]}"; do
  upper=${t^^}
  q="$OUT/$name-$t.gguf"
  s0=$(date +%s.%N)
  "$LLAMA_BIN/llama-quantize" "$gguf" "$q" "$upper" "$THREADS" >"$OUT/llama-quantize-$t.log" 2>&1
  s1=$(date +%s.%N)
  # --recompute: the quantization cache must not answer for a timing.
  "$STRATA" quantize "$name" --type "$t" --name "bench-$name-$t" --force --recompute --quiet \
    "${STORE_ARGS[@]}" >"$OUT/strata-$t.log"
  s2=$(date +%s.%N)
  "$here/quant_vs_llama.py" "$STORE" "bench-$name-$t" "$q" >"$OUT/compare-$t.json" || true
  /usr/bin/python3 - "$OUT/compare-$t.json" "$name" "$t" "$s0" "$s1" "$s2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s0, s1, s2 = map(float, sys.argv[4:7])
types = ", ".join("%d %s" % (n, k) for k, n in sorted(r["types"].items()))
print("| %s | %s | %d | %d | %s | %.1f | %.1f |" % (sys.argv[2], sys.argv[3], r["compared"], r["identical"], types,
                                                 s1 - s0, s2 - s1))
for d in r["differences"][:5]:
    print("|  | difference | %s: %s | | | | |" % (d["tensor"], d["problem"]))
PY
  rm -f "$q"
done
echo "raw outputs: $OUT" >&2
