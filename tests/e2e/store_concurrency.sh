#!/usr/bin/env bash
# Concurrency: 4 compiles of overlapping plans (DUS-like and block-expansion-
# like over one synthetic base, different names) start at once into one new
# store while a `strata gc --grace 0` loop runs. All succeed, every variant
# verifies, and each exports the same bytes as a store filled one compile at a
# time. Three rounds, each on a fresh store (so store creation races too);
# later rounds stagger the starts a little so gc also runs between compiles.
# usage: store_concurrency.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/strata-conc.XXXXXX")
trap 'kill "$GC_PID" 2>/dev/null; chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
GC_PID=
export HF_HUB_CACHE=$T/hf
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

same_dirs() {
  [ "$(ls "$1")" = "$(ls "$2")" ] || return 1
  local f
  for f in $(ls "$1"); do cmp -s "$1/$f" "$2/$f" || return 1; done
}

"$BIN" synth --preset tiny --layers 8 --hidden 128 --intermediate 256 --hf-cache "$HF_HUB_CACHE" \
  --as org/base --quiet > /dev/null
# plan FILE SLICE...: each SLICE is "begin end" or "begin end scale" (o_proj and down_proj scaled).
plan() {
  local file=$1; shift
  echo "slices:" > "$file"
  for s in "$@"; do
    set -- $s
    printf '%s\n' "  - sources:" "    - model: org/base" "      layer_range: [$1, $2]" >> "$file"
    [ $# -eq 3 ] && printf '%s\n' "      parameters:" "        scale:" "          - filter: o_proj" \
      "            value: $3" "          - filter: down_proj" "            value: $3" "          - value: 1.0" >> "$file"
  done
  printf '%s\n' "merge_method: passthrough" "dtype: bfloat16" >> "$file"
}
plan "$T/dus.yml" "0 6" "2 8"
plan "$T/dus-wide.yml" "0 7" "1 8"
plan "$T/expand.yml" "0 8" "7 8 0.0" "7 8 0.0"
plan "$T/expand-half.yml" "0 8" "6 7 0.5" "7 8 0.0"
NAMES="dus dus-wide expand expand-half"

# Reference: one compile at a time into its own store.
for n in $NAMES; do
  "$BIN" compile "$T/$n.yml" --store "$T/ref-store" --quiet > /dev/null || bad "reference compile $n"
  "$BIN" export "$n" "$T/ref/$n" --store "$T/ref-store" --quiet > /dev/null || bad "reference export $n"
done

for round in 1 2 3; do
  S=$T/store$round
  rm -f "$T/stop"
  # gc loop: until the store exists it fails with "no strata store here"; any
  # other failure is a bug.
  (
    while [ ! -e "$T/stop" ]; do
      if ! "$BIN" gc --grace 0 --store "$S" > /dev/null 2> "$T/gc.err"; then
        grep -q "no strata store here" "$T/gc.err" || cat "$T/gc.err" >> "$T/gc.failures"
      else
        echo x >> "$T/gc.runs"
      fi
    done
  ) &
  GC_PID=$!
  pids=()
  # Round 1 starts all four at the same instant; later rounds stagger them by
  # up to a second, so gc also gets the lock between compiles.
  for n in $NAMES; do
    jitter=0
    [ "$round" -gt 1 ] && jitter=0.$((RANDOM % 10))
    (sleep "$jitter"; exec "$BIN" compile "$T/$n.yml" --store "$S" --quiet) > "$T/$n.out" 2>&1 &
    pids+=($!)
  done
  i=0
  for n in $NAMES; do
    wait "${pids[$i]}" && ok "round $round: compile $n succeeded" || bad "round $round: compile $n: $(cat "$T/$n.out")"
    i=$((i + 1))
  done
  touch "$T/stop"
  wait "$GC_PID"
  GC_PID=
  [ ! -s "$T/gc.failures" ] && ok "round $round: every gc succeeded ($(wc -l < "$T/gc.runs" 2>/dev/null || echo 0) runs)" \
    || bad "round $round: gc failed: $(cat "$T/gc.failures")"
  rm -f "$T/gc.failures" "$T/gc.runs"
  "$BIN" verify --store "$S" > "$T/verify.txt" 2>&1 && ok "round $round: the store verifies" \
    || bad "round $round: verify: $(cat "$T/verify.txt")"
  for n in $NAMES; do
    rm -rf "$T/out"
    "$BIN" export "$n" "$T/out" --store "$S" --quiet > /dev/null && same_dirs "$T/ref/$n" "$T/out" \
      && ok "round $round: $n exports as from a one-at-a-time store (cmp)" || bad "round $round: $n exports differently"
  done
  "$BIN" gc --grace 0 --store "$S" --json > "$T/gc.json" && grep -q '"removed": \[\]' "$T/gc.json" \
    && ok "round $round: nothing was left half-written" || bad "round $round: gc found leftovers: $(head -c 600 "$T/gc.json")"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
