#!/usr/bin/env bash
# Compile/export benchmark on the mistral-7b preset (issue: compile/store).
# usage: bench/compile_bench.sh [STRATA_BIN] [WORKDIR]   (needs ~60 GB free in WORKDIR)
# Prints one line per measurement; paste them into bench/RESULTS.md with the commit and machine.
set -euo pipefail
BIN=$(realpath "${1:-build/strata}")
WORK=${2:-/tmp/strata-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"
export HF_HUB_CACHE=$WORK/hf
STORE=$WORK/store
TIME=/usr/bin/time

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop page cache: figures may be warm)"; }
# Runs a command under /usr/bin/time -v; prints wall seconds, peak RSS and bytes written.
measure() {
  local label=$1; shift
  local log=$WORK/$label.time
  local before after
  before=$(du -sb "$WORK" --exclude=hf 2>/dev/null | cut -f1)
  $TIME -v "$@" > "$WORK/$label.out" 2> "$log"
  after=$(du -sb "$WORK" --exclude=hf 2>/dev/null | cut -f1)
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  printf "%-28s wall %-10s peak_rss %6d MiB  bytes_written %s\n" "$label" "$wall" $((rss / 1024)) $((after - before))
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; strata $(git -C "$ROOT" rev-parse --short HEAD)"
$BIN synth --arch mistral --preset mistral-7b --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 --quiet
SRC=$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1
SRC_BYTES=$(du -sbL "$SRC/snapshots" | cut -f1)
echo "source: $SRC_BYTES bytes"

# Every other id the example plans name is linked to the same files, as a user
# would link a local checkout under several names.
for id in openchat--openchat-3.5-0106 Cartinoe5930--Llama2_init_Mistral mistralai--Mistral-7B-Instruct-v0.3; do
  ln -s "$SRC" "$HF_HUB_CACHE/models--$id"
done

drop_caches
measure read-once sh -c "cat $SRC/blobs/* > /dev/null"
drop_caches
mkdir -p "$WORK/cp"
measure cp-source sh -c "cp -L $SRC/snapshots/*/* $WORK/cp/ && sync"
rm -rf "$WORK/cp"

drop_caches
measure compile-solar-dus "$BIN" compile "$ROOT/examples/solar-dus.yml" --store "$STORE" --quiet
measure compile-block-exp-40 "$BIN" compile "$ROOT/examples/block-expansion-40.yml" --store "$STORE" --quiet
drop_caches
measure export-solar-dus "$BIN" export solar-dus "$WORK/export" --store "$STORE" --quiet
rm -rf "$WORK/export"
for p in idus-1layer idus-8layer mistral-instruct-v0.3-dus; do
  "$BIN" compile "$ROOT/examples/$p.yml" --store "$STORE" --quiet > /dev/null
done
STORE_BYTES=$(du -sb "$STORE" | cut -f1)
echo "store with all example plans: $STORE_BYTES bytes = $(python3 -c "print(round($STORE_BYTES/$SRC_BYTES, 4))")x the distinct source bytes"
"$BIN" du --store "$STORE"
rm -rf "$WORK"
