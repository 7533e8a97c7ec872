#!/usr/bin/env bash
# What hashing every blob costs (issue: hardening, corrupt blobs): `strata
# bench` load time and time to first token, cold (page cache dropped) and warm,
# with the default verified load and with --no-verify-load, runs alternated,
# for the `small` preset and optionally `mistral-7b`; with --with-7b also the
# export of its SOLAR DUS (21.5 GB) with the default hashing and --no-verify.
# usage: bench/verify_load_bench.sh [STRATA_BIN] [WORKDIR] [--with-7b]
set -euo pipefail
BIN=$(realpath "${1:-build/strata}")
WORK=${2:-/tmp/strata-verify-bench}
MODE=${3:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"
export HF_HUB_CACHE=$WORK/hf STRATA_STORE=$WORK/store
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; strata $(git -C "$ROOT" rev-parse --short HEAD)"

measure() {  # measure PRESET RUNS
  local preset=$1 runs=$2
  "$BIN" synth --preset "$preset" --hf-cache "$HF_HUB_CACHE" --as "org/$preset" --quiet > /dev/null
  printf 'models:\n  - model: org/%s\nmerge_method: passthrough\n' "$preset" > "$WORK/$preset.yml"
  "$BIN" compile "$WORK/$preset.yml" --quiet > /dev/null
  for i in $(seq 1 "$runs"); do
    for flag in "" --no-verify-load; do
      for warm in "" --warm; do
        "$BIN" bench "$preset" --prefill 16 --decode 2 --threads 2 --json $flag $warm > "$WORK/r.json"
        python3 - "$preset" "${flag:-verified}" "${warm:---cold}" "$WORK/r.json" <<'PY'
import json, sys
preset, flag, warm, path = sys.argv[1:]
r = json.load(open(path))
print(f"{preset:11s} {flag:17s} {warm[2:]:5s} load {r['load_s']:7.3f} s  ttft {r['ttft_cold_s']:7.3f} s")
PY
      done
    done
  done
  [ "$preset" = mistral-7b ] && export_cost "$preset"
  rm -rf "$HF_HUB_CACHE" "$STRATA_STORE"
}

export_cost() {  # export_cost PRESET: the DUS of it exported both ways, warm
  sed "s|mistralai/Mistral-7B-v0.1|org/$1|" "$ROOT/examples/solar-dus.yml" > "$WORK/dus.yml"
  "$BIN" compile "$WORK/dus.yml" --name dus --quiet > /dev/null
  for flag in "" --no-verify "" --no-verify; do
    rm -rf "$WORK/out"
    /usr/bin/time -f "%e %M" -o "$WORK/t" "$BIN" export dus "$WORK/out" --quiet $flag > /dev/null
    read -r wall rss < "$WORK/t"
    printf '%-11s export DUS %-12s %7.1f s  peak_rss %5d MiB\n' "$1" "${flag:-hashed}" "$wall" "$((rss / 1024))"
  done
  rm -rf "$WORK/out"
}

measure small 3
[ "$MODE" = --with-7b ] && measure mistral-7b 2
exit 0
