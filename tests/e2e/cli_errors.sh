#!/usr/bin/env bash
# The command line on bad input: every case gives a clear message, the right
# exit code, and leaves the store and the user's files as they were.
# usage: cli_errors.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export HF_HUB_CACHE=$T/hf STRATA_STORE=$T/store
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
# expect NAME CODE PATTERN -- command...: exit code CODE and stderr matching PATTERN.
expect() {
  local name=$1 code=$2 pattern=$3; shift 4
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code: $err"; return; fi
  if ! grep -qE -- "$pattern" <<< "$err"; then bad "$name: message does not match /$pattern/: $err"; return; fi
  ok "$name"
}
# The store must hold no temporaries and no partial objects: every blob's
# size is a tensor size and nothing sits in tmp/.
store_clean() {
  local n
  n=$(find "$STRATA_STORE/tmp" -type f 2>/dev/null | wc -l)
  [ "$n" -eq 0 ] || { bad "$1: $n files left in tmp/"; return; }
  ok "$1: nothing left in tmp/"
}

"$BIN" synth --preset tiny --layers 4 --hf-cache "$HF_HUB_CACHE" --as org/base --quiet > /dev/null
"$BIN" synth --preset tiny --layers 4 --hidden 32 --heads 2 --kv-heads 1 --hf-cache "$HF_HUB_CACHE" --as org/narrow --quiet > /dev/null

plan() { printf '%s\n' "$@" > "$T/$PLAN"; }
PLAN=good.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 3]" \
  "  - sources:" "    - model: org/base" "      layer_range: [1, 4]" "merge_method: passthrough" "dtype: bfloat16"

expect "no command" 2 "usage" -- "$BIN"
expect "unknown command" 2 "unknown command" -- "$BIN" frobnicate
expect "unknown option" 2 "unrecognised|unrecognized" -- "$BIN" compile "$T/good.yml" --bogus
expect "missing plan file" 1 "no such plan file" -- "$BIN" compile "$T/nope.yml"
PLAN=bad-yaml.yml plan "slices:" "  - sources: [" "merge_method: passthrough"
expect "malformed YAML names file:line" 1 "bad-yaml.yml:[0-9]+:[0-9]+: malformed YAML" -- "$BIN" compile "$T/bad-yaml.yml"
PLAN=past.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [2, 8]" "merge_method: passthrough"
expect "layer_range past the model" 1 "past.yml:4:20: layer_range \[2, 8\] is past the 4 layers of org/base" -- "$BIN" compile "$T/past.yml"
PLAN=missing.yml plan "slices:" "  - sources:" "    - model: org/absent" "      layer_range: [0, 2]" "merge_method: passthrough"
expect "missing model lists where it looked" 1 "models--org--absent" -- "$BIN" compile "$T/missing.yml"
PLAN=method.yml plan "models:" "  - model: org/base" "merge_method: frankenmerge"
expect "unsupported merge method lists the supported" 1 "method.yml:3:15: .*supported: passthrough, linear, .*slerp" -- "$BIN" compile "$T/method.yml"
PLAN=lens.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 2]" \
  "    - model: org/base" "      layer_range: [0, 3]" "merge_method: passthrough"
expect "sources of different lengths" 1 "same number of layers" -- "$BIN" compile "$T/lens.yml"
PLAN=shapes.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 2]" \
  "  - sources:" "    - model: org/narrow" "      layer_range: [2, 4]" "merge_method: passthrough"
expect "shapes that disagree" 1 "shapes disagree" -- "$BIN" compile "$T/shapes.yml"
[ ! -e "$STRATA_STORE/refs/shapes" ] && ok "no ref after a failed compile" || bad "a failed compile left a ref"

# A corrupt source checkpoint: truncate the safetensors file of a copy.
cp -rL "$HF_HUB_CACHE/models--org--base/snapshots/"* "$T/trunc"
truncate -s 1000 "$T/trunc/model.safetensors"
PLAN=trunc.yml plan "slices:" "  - sources:" "    - model: $T/trunc" "      layer_range: [0, 2]" "merge_method: passthrough"
expect "truncated safetensors" 1 "model.safetensors" -- "$BIN" compile "$T/trunc.yml"

# A write that fails part-way (RLIMIT_FSIZE: 16 KiB per file, smaller than a blob).
expect "write failure" 1 "File too large|No space" -- bash -c "ulimit -f 16; exec \"$BIN\" compile \"$T/good.yml\" --name good --quiet"
[ ! -e "$STRATA_STORE/refs/good" ] && ok "no ref after a failed write" || bad "failed write left a ref"
store_clean "failed write"
expect "recompile after the failure succeeds" 0 "" -- "$BIN" compile "$T/good.yml" --name good --quiet
store_clean "recompile"

PLAN=other.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 4]" "merge_method: passthrough"
expect "same name, different variant, refused" 1 "already exists.*--force" -- "$BIN" compile "$T/other.yml" --name good
expect "bad variant name" 1 "not a valid variant name" -- "$BIN" compile "$T/good.yml" --name ../evil
expect "export of an unknown variant lists the known ones" 1 "variants: good" -- "$BIN" export nosuch "$T/out"
mkdir -p "$T/full"; echo keep > "$T/full/file"
expect "export refuses a non-empty dir" 1 "not empty.*--force" -- "$BIN" export good "$T/full"
[ "$(cat "$T/full/file")" = keep ] && ok "non-empty dir untouched" || bad "export touched a non-empty dir"
expect "export with a failing write" 1 "File too large|No space" -- bash -c "ulimit -f 16; exec \"$BIN\" export good \"$T/exp\" --quiet"
[ ! -e "$T/exp" ] && [ -z "$(ls -A "$T" | grep '^\.exp')" ] && ok "failed export left nothing" || bad "failed export left files: $(ls -A "$T")"
expect "export --shard-size garbage" 1 "cannot read size" -- "$BIN" export good "$T/exp" --shard-size lots
expect "store of a future version" 1 "newer strata" -- bash -c "mkdir -p $T/future && echo 'strata-store 9' > $T/future/STORE && exec \"$BIN\" ls --store $T/future"
expect "ls of a directory that is not a store" 1 "no strata store" -- "$BIN" ls --store "$T/nostore"

# Hostile input (issue 11). A run past the model's context fails before it
# allocates anything for it (under 4 GB of address space: a 10 GB KV cache
# reserved up front would not fit), saying the limit and what to change.
expect "run -n past the context, at once" 1 "past the model's context of 32768 .*give -n 32765 or less" -- \
  bash -c "ulimit -v 4000000; exec \"$BIN\" run good --tokens 1,2,3 -n 100000000"
expect "bench past the context" 2 "past the model's context of 32768.*lower --prefill or --decode" -- \
  "$BIN" bench good --prefill 40000 --warm
for bad in "--temperature -1:temperature must be a finite number >= 0" "--temperature nan:temperature must be a finite" \
           "--temperature inf:temperature must be a finite" "--top-p 2:top-p must be in \(0, 1\]" \
           "--top-p -1:top-p must be in \(0, 1\]" "--top-k -1:top-k must be an integer >= 0" \
           "--repetition-penalty 0:repetition-penalty must be a finite number > 0" \
           "--repetition-penalty -1:repetition-penalty must be a finite number > 0" "--threads -1:threads must be >= 0"; do
  # shellcheck disable=SC2086 # the option and its value are two words
  expect "run ${bad%%:*}" 2 "${bad#*:}" -- "$BIN" run good --tokens 1,2,3 -n 1 ${bad%%:*}
done
expect "bench --threads -1" 2 "threads must be >= 0 \(0: all cores\)" -- "$BIN" bench good --threads -1
expect "bench --batch 0" 2 "--batch wants comma-separated counts >= 1, got \"0\"" -- "$BIN" bench good --batch 1,0
expect "bench --batch-steps 0" 2 "--batch-steps must be >= 1" -- "$BIN" bench good --batch 2 --batch-steps 0
# Batched decode: one figure per --batch count, and the KV cache it used.
if "$BIN" bench good --warm --prefill 4 --decode 2 --batch 1,3 --batch-prompt 5 --batch-steps 2 --json > "$T/bench.json" &&
   python3 - "$T/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
b = r["batched"]
assert [x["sequences"] for x in b] == [1, 3], b
assert all(x["tokens_per_s"] > 0 and x["steps"] == 2 and x["prompt_tokens"] == 5 for x in b), b
# 3 sequences of 5 + 3 positions: one 32-position block each, at most.
assert r["kv_peak_bytes"] == 3 * r["kv_block_bytes"], r
assert r["kv_block_tokens"] == 32 and r["host_rss_other_bytes"] < r["host_peak_rss_bytes"], r
PY
then ok "bench --batch 1,3: figures and KV use"; else bad "bench --batch 1,3 (see above)"; fi
for cmd in "ls" "run good --tokens 1" "bench good" "show good" "export good $T/exp"; do
  # shellcheck disable=SC2086
  expect "$cmd --store ''" 2 "--store is empty: give a directory, or leave --store out" -- "$BIN" $cmd --store ""
done
for size in 1e30 18446744073709551616 99999999999999999999999 0.0001; do
  expect "export --shard-size $size" 1 "cannot read size \"$size\".*whole number of bytes from 1 to 2\^63" -- \
    "$BIN" export good "$T/exp" --shard-size "$size"
  expect "synth --shard-size $size" 1 "cannot read size \"$size\"" -- \
    "$BIN" synth --preset tiny --out "$T/synth-big" --shard-size "$size"
done
[ ! -e "$T/exp" ] && [ ! -e "$T/synth-big" ] && ok "refused shard sizes wrote nothing" || bad "a refused shard size wrote files"
PLAN=dup.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 1]" "      layer_range: [0, 3]" \
  "merge_method: passthrough"
expect "duplicate key names both places" 1 "dup.yml:5:7: duplicate key \"layer_range\" \(first at .*dup.yml:4:7\).*mergekit would silently take the last" -- \
  "$BIN" compile "$T/dup.yml"
PLAN=twodocs.yml plan "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 1]" "merge_method: passthrough" \
  "---" "dtype: float16"
expect "second YAML document" 1 "twodocs.yml:6:1: a second YAML document" -- "$BIN" compile "$T/twodocs.yml"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
