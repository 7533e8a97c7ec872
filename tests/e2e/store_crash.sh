#!/usr/bin/env bash
# Crash safety: kill -9 a `strata compile` at 20 random moments. After each
# kill the store verifies clean (so every blob and node file outside tmp/
# hashes to its name: no partial object is visible), the ref is absent or
# whole, recompiling succeeds and exports the same bytes as an uninterrupted
# compile, and `gc --grace 0` removes the leftovers in tmp/. Between rounds
# rm + gc empty the store so each compile starts from nothing again.
# usage: store_crash.sh STRATA_BIN PROJECT_ROOT   (STRATA_CRASH_ROUNDS: default 20)
set -uo pipefail
BIN=$1
ROUNDS=${STRATA_CRASH_ROUNDS:-20}
PY=${STRATA_PYTHON3:-python3}
T=$(mktemp -d "${TMPDIR:-/tmp}/strata-crash.XXXXXX")
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
export HF_HUB_CACHE=$T/hf STRATA_STORE=$T/store
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

# same_dirs A B: the same file names, each file equal (cmp).
same_dirs() {
  [ "$(ls "$1")" = "$(ls "$2")" ] || return 1
  local f
  for f in $(ls "$1"); do cmp -s "$1/$f" "$2/$f" || return 1; done
}
now_ms() { date +%s%3N; }

# Big enough that a compile takes a while (about 80 blobs of up to 512 KB, each fsynced).
"$BIN" synth --preset tiny --layers 8 --hidden 256 --intermediate 512 --hf-cache "$HF_HUB_CACHE" \
  --as org/base --quiet > /dev/null
printf '%s\n' "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 6]" \
  "  - sources:" "    - model: org/base" "      layer_range: [2, 8]" "merge_method: passthrough" \
  "dtype: bfloat16" "out_dtype: float16" > "$T/dus.yml"

start=$(now_ms)
"$BIN" compile "$T/dus.yml" --name v --quiet > /dev/null || bad "reference compile"
FULL_MS=$(( $(now_ms) - start ))
"$BIN" export v "$T/ref" --quiet > /dev/null || bad "reference export"
echo "an uninterrupted compile takes ${FULL_MS} ms"

# reset: rm + gc leave an empty store (and gc must manage that).
reset() {
  "$BIN" rm v > /dev/null 2>&1
  "$BIN" gc --grace 0 > /dev/null || bad "round $1: gc to reset failed"
  [ -z "$(find "$STRATA_STORE/blobs" "$STRATA_STORE/nodes" "$STRATA_STORE/tmp" -type f)" ] \
    || bad "round $1: store not empty after rm + gc"
}

reset 0
leftovers=0 completed=0
for i in $(seq 1 "$ROUNDS"); do
  delay_ms=$(( (RANDOM * 32768 + RANDOM) % (FULL_MS * 9 / 10 + 1) ))  # mostly mid-compile
  delay=$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))
  # In a subshell whose stderr is dropped, so bash's "Killed" notice is not printed.
  (timeout -s KILL "$delay" "$BIN" compile "$T/dus.yml" --name v --quiet > /dev/null 2>&1; exit $?) 2> /dev/null
  rc=$?
  [ $rc -eq 0 ] && completed=$((completed + 1))
  [ $rc -eq 0 ] || [ $rc -eq 137 ] || bad "round $i: compile exited $rc (not killed, not ok)"
  n_tmp=$(find "$STRATA_STORE/tmp" -type f | wc -l)
  [ "$n_tmp" -gt 0 ] && leftovers=$((leftovers + 1))
  if "$BIN" verify > "$T/verify.txt" 2>&1; then
    ok "round $i (killed after ${delay}s, $n_tmp in tmp/): store verifies"
  else
    bad "round $i (killed after ${delay}s): verify: $(cat "$T/verify.txt")"
  fi
  # Source-cache entries are renamed into place whole: each must parse.
  "$PY" -c 'import json,sys; [json.load(open(f)) for f in sys.argv[1:]]' \
    $(find "$STRATA_STORE/cache" -type f) || bad "round $i: a partial source-cache entry"
  if [ -e "$STRATA_STORE/refs/v" ]; then
    "$BIN" verify v > /dev/null 2>&1 || bad "round $i: ref v exists but does not verify"
  fi
  "$BIN" compile "$T/dus.yml" --name v --quiet > /dev/null 2>"$T/err.txt" || bad "round $i: recompile: $(cat "$T/err.txt")"
  rm -rf "$T/out"
  "$BIN" export v "$T/out" --quiet > /dev/null && same_dirs "$T/ref" "$T/out" \
    || bad "round $i: the recompiled variant exports differently"
  "$BIN" gc --grace 0 > /dev/null || bad "round $i: gc failed"
  [ -z "$(find "$STRATA_STORE/tmp" -type f)" ] || bad "round $i: gc --grace 0 left files in tmp/"
  "$BIN" verify > /dev/null 2>&1 || bad "round $i: store does not verify after gc"
  reset "$i"
done
echo "$leftovers of $ROUNDS kills left files in tmp/; $completed compiles finished before the kill"
[ "$completed" -lt "$ROUNDS" ] && ok "most kills interrupted a compile" || bad "no kill interrupted a compile"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
