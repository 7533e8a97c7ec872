#!/usr/bin/env bash
# strata run (CPU) against the independent float64 numpy reference of HF's
# forward pass (tests/ref/forward_ref.py), on tiny synthetic models of each
# architecture and on every example plan; plus the runtime's own invariants.
# usage: run_reference.sh STRATA_BIN PROJECT_ROOT
#
# Relative error here is max|strata - ref| / max|ref| over all logits compared.
# Tolerances (issue: CPU runtime): 1e-4 for fp32 weights, 2e-2 for bf16.
set -uo pipefail
BIN=$1 ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
REF="$PY $ROOT/tests/ref/forward_ref.py"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export HF_HUB_CACHE=$T/hf STRATA_STORE=$T/store
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
PROMPT=1,7,42,3,99,15,200,8,64,128,5,77
N=16

# relerr A.npy B.npy -> prints max|a-b|/max|b|
relerr() { $PY -c "import numpy as np,sys; a=np.load(sys.argv[1]).astype(np.float64); b=np.load(sys.argv[2]).astype(np.float64); print('%.3e' % (np.abs(a-b).max()/np.abs(b).max()))" "$1" "$2"; }
within() { $PY -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$1" "$2"; }
same_bits() { cmp -s "$1" "$2"; }

# check NAME MODEL(dir or variant) REFDIR TOL: logits of every prompt position and 16 greedy tokens.
check() {
  local name=$1 model=$2 refdir=$3 tol=$4
  local ours theirs err
  ours=$("$BIN" run "$model" --tokens $PROMPT -n $N --logits-out "$T/ours.npy" --all-logits) || { bad "$name: strata run failed"; return; }
  theirs=$($REF "$refdir" --tokens $PROMPT --all-logits --out "$T/ref.npy" --greedy $N) || { bad "$name: reference failed"; return; }
  err=$(relerr "$T/ours.npy" "$T/ref.npy")
  if within "$err" "$tol"; then ok "$name: logits rel err $err <= $tol"; else bad "$name: logits rel err $err > $tol"; fi
  if [ "$ours" = "$theirs" ]; then ok "$name: $N greedy tokens identical"; else bad "$name: greedy tokens differ: $ours vs $theirs"; fi
}

for arch in llama mistral qwen2; do
  for dt in float32 bfloat16; do
    d=$T/models/$arch-$dt
    "$BIN" synth --arch $arch --preset tiny --layers 6 --dtype $dt --seed 7 --out "$d" -q > /dev/null
    tol=1e-4; [ $dt = bfloat16 ] && tol=2e-2
    check "$arch $dt" "$d" "$d" $tol
  done
done
d=$T/models/tied
"$BIN" synth --arch qwen2 --preset tiny --layers 4 --dtype float32 --tie-embeddings --out "$d" -q > /dev/null
check "qwen2 tied embeddings" "$d" "$d" 1e-4

# Every example plan: the variant run from the store against the reference on its export.
ids=$(cat "$ROOT"/examples/*.yml | sed -n 's/^ *- model: *//p' | sort -u)
seed=1
for id in $ids; do
  arch=mistral; case $id in *Llama*) arch=llama;; esac
  "$BIN" synth --arch $arch --preset tiny --dtype bfloat16 --seed $seed --hf-cache "$HF_HUB_CACHE" --as "$id" -q > /dev/null
  seed=$((seed + 1))
done
for plan in "$ROOT"/examples/*.yml; do
  name=$(basename "$plan" .yml)
  "$BIN" compile "$plan" -q > /dev/null || { bad "$name: compile"; continue; }
  "$BIN" export "$name" "$T/export/$name" -q > /dev/null || { bad "$name: export"; continue; }
  check "$name (from the store)" "$name" "$T/export/$name" 2e-2
done

# The DUS variant from the store equals its exported 48-layer checkpoint run as an HF directory.
"$BIN" run solar-dus --tokens $PROMPT -n 0 --logits-out "$T/a.npy" --all-logits > /dev/null
"$BIN" run "$T/export/solar-dus" --tokens $PROMPT -n 0 --logits-out "$T/b.npy" --all-logits > /dev/null
same_bits "$T/a.npy" "$T/b.npy" && ok "DUS from the store == its export as an HF dir (bit for bit)" || bad "DUS store vs export differ: $(relerr "$T/a.npy" "$T/b.npy")"

# Block expansion: elided, bit-identical to its 32-layer base; not elided, within 1e-6.
base=$HF_HUB_CACHE/models--openchat--openchat-3.5-0106/snapshots/$(cat "$HF_HUB_CACHE/models--openchat--openchat-3.5-0106/refs/main")
"$BIN" run "$base" --tokens $PROMPT -n 0 --logits-out "$T/base.npy" --all-logits > /dev/null
"$BIN" run block-expansion-40 --tokens $PROMPT -n 0 --logits-out "$T/be.npy" --all-logits > /dev/null
same_bits "$T/base.npy" "$T/be.npy" && ok "block expansion (elided) == base, bit for bit" || bad "block expansion differs from base: $(relerr "$T/be.npy" "$T/base.npy")"
"$BIN" run block-expansion-40 --no-elide --tokens $PROMPT -n 0 --logits-out "$T/be2.npy" --all-logits > /dev/null
err=$(relerr "$T/be2.npy" "$T/base.npy")
within "$err" 1e-6 && ok "block expansion --no-elide within 1e-6 of base ($err)" || bad "block expansion --no-elide rel err $err"
elided=$("$BIN" run block-expansion-40 --tokens 1 -n 1 -v 2>&1 >/dev/null | grep -o '[0-9]* elided')
[ "$elided" = "8 elided" ] && ok "-v reports 8 elided layers" || bad "-v reports '$elided'"

# Sliding window: a small window on a long prompt, against the reference.
d=$T/models/window
"$BIN" synth --arch mistral --preset tiny --layers 3 --dtype float32 --out "$d" -q > /dev/null
$PY -c "import json,sys; p=sys.argv[1]+'/config.json'; c=json.load(open(p)); c['sliding_window']=4; json.dump(c,open(p,'w'),indent=2)" "$d"
long=$(seq -s, 3 3 90)
"$BIN" run "$d" --tokens $long -n 8 --logits-out "$T/w1.npy" --all-logits > "$T/w1.txt" || bad "window run"
$REF "$d" --tokens $long --all-logits --out "$T/w2.npy" --greedy 8 > "$T/w2.txt" || bad "window reference"
err=$(relerr "$T/w1.npy" "$T/w2.npy")
within "$err" 1e-4 && ok "sliding window 4 over 30 tokens: rel err $err" || bad "sliding window rel err $err"
cmp -s "$T/w1.txt" "$T/w2.txt" && ok "sliding window: greedy tokens identical" || bad "sliding window tokens: $(cat "$T/w1.txt") vs $(cat "$T/w2.txt")"

# KV cache reuse equals a full recompute: decode 8 tokens, then prefill prompt+7 of them; the 8th must match.
toks=$("$BIN" run "$d" --tokens $long -n 8)
seven=$(echo "$toks" | cut -d, -f1-7) eighth=$(echo "$toks" | cut -d, -f8)
again=$("$BIN" run "$d" --tokens "$long,$seven" -n 1)
[ "$again" = "$eighth" ] && ok "KV cache decode == full recompute" || bad "KV reuse: $eighth vs recompute $again"

# Bad input.
err=$("$BIN" run "$d" --tokens 1,256 -n 1 2>&1); [ $? -eq 1 ] && grep -q "outside the vocabulary" <<< "$err" && ok "token id out of range" || bad "token out of range: $err"
$PY -c "import json,sys; p=sys.argv[1]+'/config.json'; c=json.load(open(p)); c['max_position_embeddings']=16; json.dump(c,open(p,'w'),indent=2)" "$d"
err=$("$BIN" run "$d" --tokens $long -n 1 2>&1); [ $? -eq 1 ] && grep -q "past the model's context" <<< "$err" && ok "context past max_position_embeddings" || bad "long context: $err"
# The embedding blob of solar-dus: variant -> tensor node -> blob.
node=$("$BIN" show solar-dus --json | $PY -c "import json,sys; print(json.load(sys.stdin)['tensors'][0]['node'])")
bhash=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['blob'])" "$STRATA_STORE/nodes/${node:0:2}/$node")
blob=$STRATA_STORE/blobs/${bhash:0:2}/$bhash
mv "$blob" "$T/moved"
err=$("$BIN" run solar-dus --tokens 1,2 -n 1 2>&1); rc=$?
mv "$T/moved" "$blob"
[ $rc -eq 1 ] && grep -q "$(basename "$blob")" <<< "$err" && ok "missing blob named in the error" || bad "missing blob: rc $rc: $err"
cp "$blob" "$T/saved"; chmod u+w "$blob"; truncate -s 100 "$blob"
err=$("$BIN" run solar-dus --tokens 1,2 -n 1 2>&1); rc=$?
cp "$T/saved" "$blob"
[ $rc -eq 1 ] && grep -q "damaged" <<< "$err" && ok "truncated blob reported" || bad "truncated blob: rc $rc: $err"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
