#!/usr/bin/env bash
# strata verify, rm and gc through the command line: a clean store verifies;
# each kind of damage (flipped byte, truncated blob, deleted node, garbage ref,
# ref to a non-variant node) is reported with the right object and variant and
# exit 1; --quick misses a flipped byte but not a truncation. After rm of one of
# two variants sharing a base, gc removes exactly what only it used (worked out
# here from the node files), --dry-run removes nothing and reports the same
# bytes, and the other variant still verifies and exports byte for byte.
# usage: store_verify_gc.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1
PY=${STRATA_PYTHON3:-python3}
T=$(mktemp -d "${TMPDIR:-/tmp}/strata-vgc.XXXXXX")
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
export HF_HUB_CACHE=$T/hf STRATA_STORE=$T/store
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

# json_get FILE EXPR: evaluates the Python expression EXPR over the JSON in FILE (as j).
json_get() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# reach STORE HASH: every blobs/... and nodes/... path the node HASH reaches,
# read from the node files (independently of strata's own walker).
reach() {
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
root, start = sys.argv[1], sys.argv[2]
p = lambda d, h: f"{d}/{h[:2]}/{h}"
out, stack = set(), [start]
while stack:
    h = stack.pop()
    if p("nodes", h) in out: continue
    out.add(p("nodes", h))
    j = json.load(open(f"{root}/{p('nodes', h)}"))
    k = j["kind"]
    if k == "variant":
        out |= {p("blobs", b) for b in [j["config"], j["plan"], *j["files"].values()]}
        stack += [t["tensor"] for t in j["pre"] + j["post"]] + [l["layer"] for l in j["layers"]]
    elif k == "layer":
        stack += list(j["tensors"].values())
    elif "blob" in j:
        out.add(p("blobs", j["blob"]))
    elif "src" in j:
        stack.append(j["src"])
print("\n".join(sorted(out)))
EOF
}
objects() { (cd "$1" && find blobs nodes -type f | sort); }
node_json() { cat "$STRATA_STORE/nodes/${1:0:2}/$1"; }

"$BIN" synth --preset tiny --layers 8 --hf-cache "$HF_HUB_CACHE" --as org/base --quiet > /dev/null
printf '%s\n' "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 6]" \
  "  - sources:" "    - model: org/base" "      layer_range: [2, 8]" "merge_method: passthrough" \
  "dtype: bfloat16" > "$T/dus.yml"
printf '%s\n' "slices:" "  - sources:" "    - model: org/base" "      layer_range: [0, 8]" \
  "  - sources:" "    - model: org/base" "      layer_range: [7, 8]" "      parameters:" "        scale:" \
  "          - filter: o_proj" "            value: 0.0" "          - filter: down_proj" "            value: 0.0" \
  "          - value: 1.0" "merge_method: passthrough" "dtype: bfloat16" > "$T/expand.yml"
"$BIN" compile "$T/dus.yml" --quiet > /dev/null && "$BIN" compile "$T/expand.yml" --quiet > /dev/null \
  && ok "compiled dus and expand" || bad "compile"

"$BIN" verify > "$T/v.txt" 2>&1 && grep -q "store ok" "$T/v.txt" && ok "untouched store verifies (exit 0)" \
  || bad "untouched store: $(cat "$T/v.txt")"
"$BIN" verify --json > "$T/v.json" && [ "$(json_get "$T/v.json" 'j["clean"]')" = True ] \
  && ok "verify --json says clean" || bad "verify --json: $(cat "$T/v.json")"
echo junk > "$STRATA_STORE/tmp/blob.1.2.3.tmp"
"$BIN" verify > /dev/null 2>&1 && ok "a temporary in tmp/ is not damage" || bad "tmp/ file reported"
rm -f "$STRATA_STORE/tmp/blob.1.2.3.tmp"

"$BIN" show dus --json > "$T/show-dus.json"
"$BIN" show expand --json > "$T/show-expand.json"
EMBED_NODE=$(json_get "$T/show-dus.json" '[t["node"] for t in j["tensors"] if t["name"]=="model.embed_tokens.weight"][0]')
EMBED_BLOB=$(node_json "$EMBED_NODE" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["blob"])')
SCALED_LAYER=$(json_get "$T/show-expand.json" 'j["layers"][8]["layer"]')
DUS_LAYER0=$(json_get "$T/show-dus.json" 'j["layers"][0]["layer"]')

# damage NAME SETUP KIND HASH VARIANTS [--quick]: on a copy of the store, run SETUP
# (with $S the copy), then expect verify to exit 1 and report a KIND object HASH
# breaking exactly VARIANTS (comma-separated, sorted).
damage() {
  local name=$1 setup=$2 kind=$3 hash=$4 variants=$5; shift 5
  local S=$T/damaged
  chmod -R u+w "$S" 2>/dev/null; rm -rf "$S"; cp -a "$STRATA_STORE" "$S"
  S=$S bash -c "$setup"
  "$BIN" verify --store "$S" --json "$@" > "$T/d.json" 2> "$T/d.err"; local rc=$?
  [ $rc -eq 1 ] || { bad "$name: exit $rc, expected 1"; return; }
  local got
  got=$(json_get "$T/d.json" "'|'.join(','.join(d['variants']) for d in j['damaged'] if d['kind']=='$kind' and (d['hash'] or '')=='$hash')")
  [ "$got" = "$variants" ] && ok "$name: $kind ${hash:0:12} breaks $variants" \
    || bad "$name: expected $kind $hash breaking '$variants', got '$got': $(cat "$T/d.json")"
  "$BIN" verify --store "$S" "$@" > "$T/d.txt" 2>&1
  grep -q "damaged $kind ${hash:--}" "$T/d.txt" && grep -q "breaks: ${variants//,/, }" "$T/d.txt" \
    && ok "$name: text report names it" || bad "$name: text report: $(cat "$T/d.txt")"
}
blob_path() { echo "blobs/${1:0:2}/$1"; }
FLIP="f=\$S/$(blob_path "$EMBED_BLOB"); chmod u+w \$f; printf '\\x55' | dd of=\$f bs=1 seek=10 conv=notrunc status=none"
damage "flipped byte" "$FLIP" blob "$EMBED_BLOB" "dus,expand"
S=$T/damaged; "$BIN" verify --store "$S" --quick > /dev/null 2>&1 && ok "--quick misses the flipped byte" \
  || bad "--quick reported a flipped byte it cannot see"
TRUNC="f=\$S/$(blob_path "$EMBED_BLOB"); chmod u+w \$f; truncate -s 1000 \$f"
damage "truncated blob" "$TRUNC" blob "$EMBED_BLOB" "dus,expand"
damage "truncated blob (--quick)" "$TRUNC" blob "$EMBED_BLOB" "dus,expand" --quick
damage "deleted node" "rm \$S/nodes/${SCALED_LAYER:0:2}/$SCALED_LAYER" node "$SCALED_LAYER" "expand"
damage "ref to garbage" "echo garbage > \$S/refs/dus" ref "" "dus"
damage "ref to an absent hash" "echo 0123456789abcdef0123456789abcdef > \$S/refs/expand" node \
  0123456789abcdef0123456789abcdef "expand"
damage "ref to a layer node" "echo $DUS_LAYER0 > \$S/refs/expand" ref "$DUS_LAYER0" "expand"
"$BIN" verify dus --store "$T/damaged" > /dev/null 2>&1 && ok "verify NAME checks only what NAME reaches" \
  || bad "verify dus reported expand's damage"

# gc: the expected removals, worked out from the node files.
mkdir -p "$T/exp-before"
"$BIN" export dus "$T/exp-before/dus" --quiet > /dev/null || bad "export before gc"
reach "$STRATA_STORE" "$(cat "$STRATA_STORE/refs/dus")" > "$T/reach-dus"
reach "$STRATA_STORE" "$(cat "$STRATA_STORE/refs/expand")" > "$T/reach-expand"
comm -13 "$T/reach-dus" "$T/reach-expand" > "$T/expected"
EXPECTED_BYTES=$(cd "$STRATA_STORE" && xargs stat -c %s < "$T/expected" | awk '{s+=$1} END {print s+0}')
[ -s "$T/expected" ] && ok "expand has $(wc -l < "$T/expected") objects of its own" || bad "no objects of its own?"
"$BIN" rm expand > /dev/null && [ ! -e "$STRATA_STORE/refs/expand" ] && ok "rm removes the ref" || bad "rm"
"$BIN" rm expand > /dev/null 2>&1; [ $? -eq 1 ] && ok "rm of an unknown name fails" || bad "rm of unknown name"
objects "$STRATA_STORE" > "$T/before"
"$BIN" gc --dry-run --grace 0 --json > "$T/dry.json" || bad "gc --dry-run failed"
objects "$STRATA_STORE" > "$T/after-dry"
cmp -s "$T/before" "$T/after-dry" && ok "--dry-run removes nothing" || bad "--dry-run removed files"
json_get "$T/dry.json" '"\n".join(sorted(r["path"] for r in j["removed"] if r["kind"]!="tmp"))' > "$T/dry-list"
cmp -s "$T/dry-list" "$T/expected" && ok "--dry-run lists exactly the expected objects" \
  || bad "--dry-run list differs: $(diff "$T/dry-list" "$T/expected" | head)"
"$BIN" gc --grace 0 --json > "$T/gc.json" || bad "gc failed"
objects "$STRATA_STORE" > "$T/after"
comm -23 "$T/before" "$T/after" > "$T/removed"
cmp -s "$T/removed" "$T/expected" && ok "gc removed exactly the objects only expand used" \
  || bad "gc removed differs: $(diff "$T/removed" "$T/expected" | head)"
[ "$(json_get "$T/dry.json" 'j["bytes_freed"]')" = "$(json_get "$T/gc.json" 'j["bytes_freed"]')" ] \
  && ok "--dry-run reported the same bytes ($(json_get "$T/gc.json" 'j["bytes_freed"]'))" || bad "bytes differ"
[ "$(json_get "$T/gc.json" 'j["blob_bytes"]+j["node_bytes"]')" = "$EXPECTED_BYTES" ] \
  && ok "bytes freed are the sizes of the expected files" || bad "bytes freed differ from $EXPECTED_BYTES"
"$BIN" verify > /dev/null 2>&1 && ok "store verifies after gc" || bad "verify after gc"
"$BIN" verify dus > /dev/null 2>&1 && ok "dus verifies after gc" || bad "verify dus after gc"
"$BIN" export dus "$T/exp-after" --quiet > /dev/null || bad "export after gc"
same=1
for f in $(cd "$T/exp-before/dus" && ls); do cmp -s "$T/exp-before/dus/$f" "$T/exp-after/$f" || same=0; done
[ "$(ls "$T/exp-before/dus")" = "$(ls "$T/exp-after")" ] || same=0
[ $same -eq 1 ] && ok "dus exports identically after gc (cmp)" || bad "export changed after gc"
"$BIN" gc --json > "$T/gc2.json" && [ "$(json_get "$T/gc2.json" 'len(j["removed"])')" = 0 ] \
  && ok "a second gc removes nothing" || bad "second gc removed: $(cat "$T/gc2.json")"
"$BIN" compile "$T/expand.yml" --quiet --json > "$T/re.json" && "$BIN" verify > /dev/null 2>&1 \
  && ok "expand compiles again after gc and the store verifies" || bad "recompile after gc"

# The store lock (flock(1) stands in for a running compile, then for a gc).
if command -v flock > /dev/null; then
  flock -s "$STRATA_STORE/lock" sleep 2 &
  sleep 0.3
  "$BIN" gc 2> "$T/gc-wait.err" > /dev/null && grep -q "waiting for running compiles" "$T/gc-wait.err" \
    && ok "gc waits for a shared lock holder and says so" || bad "gc did not wait: $(cat "$T/gc-wait.err")"
  wait
  flock -x "$STRATA_STORE/lock" sleep 2 &
  sleep 0.3
  start=$(date +%s%N)
  "$BIN" compile "$T/dus.yml" --name dus-again --quiet > /dev/null || bad "compile under a held lock failed"
  waited_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  wait
  [ "$waited_ms" -ge 1500 ] && ok "compile waits for gc's exclusive lock (${waited_ms} ms)" \
    || bad "compile did not wait for the exclusive lock (${waited_ms} ms)"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
