#!/usr/bin/env bash
# CPU runtime benchmark (issue: CPU runtime): prefill and decode tokens/s and
# peak RSS for the `small` preset and its SOLAR-DUS variant (128-token prompt,
# 128 decoded tokens, --threads 2), then decode tokens/s and peak RSS for the
# `mistral-7b` preset and its DUS variant.
# usage: bench/run_bench.sh [STRATA_BIN] [WORKDIR] [--skip-7b]
set -euo pipefail
BIN=$(realpath "${1:-build/strata}")
WORK=${2:-/tmp/strata-run-bench}
MODE=${3:-}  # --skip-7b: only the small preset; --only-7b: only mistral-7b
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"
export HF_HUB_CACHE=$WORK/hf STRATA_STORE=$WORK/store
PROMPT=$(seq -s, 1 128)

# run LABEL NAME N: prints tok/s from --json and peak RSS from /usr/bin/time.
run() {
  local label=$1 name=$2 n=$3
  /usr/bin/time -v "$BIN" run "$name" --tokens "$PROMPT" -n "$n" --threads 2 --json > "$WORK/out.json" 2> "$WORK/time.log"
  python3 - "$label" "$WORK/out.json" "$WORK/time.log" <<'PY'
import json, re, sys
label, out, log = sys.argv[1:]
r = json.load(open(out))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(log).read()).group(1))
print(f"{label:28s} prefill {r['prefill_tokens_per_s']:8.1f} tok/s  decode {r['decode_tokens_per_s']:7.2f} tok/s"
      f"  ({len(r['tokens'])} tokens)  peak_rss {rss/1024:8.1f} MiB  layers {r['layers']} ({r['distinct_layers']} distinct)")
PY
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; strata $(git -C "$ROOT" rev-parse --short HEAD)"
snapshot() { echo "$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1/snapshots/$(cat "$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1/refs/main")"; }
if [ "$MODE" != "--only-7b" ]; then
  "$BIN" synth --arch mistral --preset small --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 -q > /dev/null
  "$BIN" compile "$ROOT/examples/solar-dus.yml" -q > /dev/null
  SNAP=$(snapshot)
  run "small base" "$SNAP" 128
  run "small solar-dus" solar-dus 128
fi
[ "$MODE" = "--skip-7b" ] && exit 0

rm -rf "$HF_HUB_CACHE" "$STRATA_STORE"
"$BIN" synth --arch mistral --preset mistral-7b --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 -q > /dev/null
"$BIN" compile "$ROOT/examples/solar-dus.yml" -q > /dev/null
SNAP=$(snapshot)
PROMPT=$(seq -s, 1 16)
run "mistral-7b base" "$SNAP" 16
run "mistral-7b solar-dus" solar-dus 16
rm -rf "$WORK"
