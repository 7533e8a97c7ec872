#!/usr/bin/env bash
# Merge-method benchmark on the mistral-7b preset (issue 15).
# usage: bench/merge_bench.sh [STRATA_BIN] [WORKDIR]   (needs ~60 GB free in WORKDIR)
#
# Two synthetic 7B sources (14.5 GB bf16 each). Steps:
#  1. compile linear from an empty store (stores both sources: the from-scratch cost);
#  2. compile linear (other weights), slerp and ties over the stored sources: time and
#     bytes written (targets: under 1 s and 1 MiB);
#  3. the floor of an export: reading both sources' blobs once (cold) and writing the
#     result's bytes once (dd with fsync);
#  4. export each merge (cold), against that floor (target: within 1.3x);
#  5. CPU load time (cold) of the ties recipe variant against the same variant after
#     `strata materialize` (its merged tensors stored as blobs, mapped on load).
# STRATA_BENCH_PRESET=tiny runs the same steps in seconds (a dry run of the script);
# STRATA_BENCH_EXPORTS_ONLY=1 stops after step 4.
# Prints one line per measurement; paste them into bench/RESULTS.md with the commit and machine.
set -euo pipefail
BIN=$(realpath "${1:-build/strata}")
WORK=${2:-/tmp/strata-merge-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$WORK"
mkdir -p "$WORK/plans"
export HF_HUB_CACHE=$WORK/hf
STORE=$WORK/store
TIME=/usr/bin/time

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop page cache: figures may be warm)"; }
# measure LABEL CMD...: wall seconds, peak RSS and bytes written (growth of $WORK outside hf/).
measure() {
  local label=$1
  shift
  local log=$WORK/$label.time before after wall rss
  before=$(du -sb "$WORK" --exclude=hf 2>/dev/null | cut -f1)
  $TIME -v "$@" >"$WORK/$label.out" 2>"$log" || { cat "$log"; exit 1; }
  after=$(du -sb "$WORK" --exclude=hf 2>/dev/null | cut -f1)
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  printf "%-32s wall %-10s peak_rss %6d MiB  bytes_written %s\n" "$label" "$wall" $((rss / 1024)) $((after - before))
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; strata $(git -C "$ROOT" rev-parse --short HEAD)"
"$BIN" synth --preset "${STRATA_BENCH_PRESET:-mistral-7b}" --hf-cache "$HF_HUB_CACHE" --as org/base --seed 1 --quiet
"$BIN" synth --preset "${STRATA_BENCH_PRESET:-mistral-7b}" --hf-cache "$HF_HUB_CACHE" --as org/tuned --seed 2 --quiet
echo "sources: 2 x $(du -sbL "$HF_HUB_CACHE/models--org--base/snapshots" | cut -f1) bytes"

cat >"$WORK/plans/linear.yml" <<'EOF'
merge_method: linear
models:
  - {model: org/base, parameters: {weight: 0.5}}
  - {model: org/tuned, parameters: {weight: 0.5}}
dtype: bfloat16
EOF
cat >"$WORK/plans/linear2.yml" <<'EOF'
merge_method: linear
models:
  - {model: org/base, parameters: {weight: 0.3}}
  - {model: org/tuned, parameters: {weight: 0.7}}
dtype: bfloat16
EOF
cat >"$WORK/plans/slerp.yml" <<'EOF'
merge_method: slerp
base_model: org/base
slices:
  - sources:
      - {model: org/base, layer_range: [0, 32]}
      - {model: org/tuned, layer_range: [0, 32]}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
EOF
cat >"$WORK/plans/ties.yml" <<'EOF'
merge_method: ties
base_model: org/base
models:
  - model: org/base
  - model: org/tuned
    parameters: {weight: 1.0, density: 0.5}
parameters: {normalize: true}
dtype: bfloat16
EOF

drop_caches
measure compile-linear-from-empty "$BIN" compile "$WORK/plans/linear.yml" --store "$STORE" --quiet
for p in linear2 slerp ties; do
  measure "compile-$p-over-stored" "$BIN" compile "$WORK/plans/$p.yml" --store "$STORE" --quiet
done

# The floor: every blob of the store (both sources, nothing else of size) read once
# cold, and the result's bytes written once with fsync.
RESULT_BYTES=$(du -sbL "$HF_HUB_CACHE/models--org--base/snapshots" | cut -f1)  # same shapes, bf16
drop_caches
measure floor-read-both-sources sh -c "find '$STORE/blobs' -type f -size +1M -exec cat {} + > /dev/null"
measure floor-write-result-once sh -c "dd if=/dev/zero of='$WORK/ddfile' bs=16M count=$((RESULT_BYTES / 16777216)) conv=fsync status=none"
rm -f "$WORK/ddfile"

for p in linear slerp ties; do
  drop_caches
  measure "export-$p" "$BIN" export "$p" "$WORK/export-$p" --store "$STORE" --quiet
  rm -rf "$WORK/export-$p"
done

if [[ ${STRATA_BENCH_EXPORTS_ONLY:-0} == 1 ]]; then  # steps 1-4 only
  rm -rf "$WORK"
  exit 0
fi

# CPU load (cold) of the ties recipe variant, then of the same variant after
# `strata materialize` (its computed tensors stored as blobs that loads map).
rm -rf "$HF_HUB_CACHE"  # not needed any more: room for the materialized bytes
load() {
  "$BIN" bench ties --store "$STORE" --prefill 16 --decode 4 --json >"$WORK/bench-$1.json"
  python3 - "$WORK/bench-$1.json" "$1" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print(f"cpu load ties ({sys.argv[2]:<12}) {j['load_s']:.2f} s cold, peak host RSS {j['host_peak_rss_bytes'] / 2**20:.0f} MiB")
EOF
}
load recipe
drop_caches
measure materialize-ties "$BIN" materialize ties --store "$STORE" --quiet
drop_caches
load materialized
"$BIN" du --store "$STORE"
rm -rf "$WORK"
