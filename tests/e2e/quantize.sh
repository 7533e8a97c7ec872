#!/usr/bin/env bash
# End-to-end: `strata quantize` and quantized variants in the store and the CPU runtime.
#
#   quantize.sh STRATA_BIN PROJECT_ROOT
#
# - a synthetic model whose rows every block type divides (hidden 256), quantized with
#   each mix: strata's logits on the quantized weights against the float64 reference
#   forward (tests/ref/forward_ref.py) on the same weights dequantized by the numpy
#   reference (tests/ref/quant_ref.py), for a long prompt (bf16 row blocks), a short one
#   (integer dot products) and the short one on the avx2 tier (its integer kernels):
#   within 0.1 of the logits' spread, and the same greedy token wherever the reference's
#   top-2 margin is wider than that; the same for Qwen2 (q/k/v biases) at q8_0;
# - the fixture (tests/fixtures/kjv) and its SOLAR DUS: quantizing the DUS after the base
#   writes no blob; held-out perplexity within 1% of the unquantized base; a second
#   quantize is served by the cache; compile --quantize of the DUS gives the same variant
#   and no blob; verify passes; the STORE marker is version 2;
#   export writes the dequantized values; gc after removing the unquantized variants
#   keeps the quantized ones whole; a damaged quantized blob is reported and refused;
#   bad options exit 2, an unknown variant 1.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STRATA_BIN PROJECT_ROOT" >&2
  exit 2
fi
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
FIX="$ROOT/tests/fixtures/kjv"
# shellcheck source=fixture_common.bash
source "$ROOT/tests/e2e/fixture_common.bash"
export PYTHONDONTWRITEBYTECODE=1

T=$(mktemp -d "${TMPDIR:-/tmp}/strata-quant.XXXXXX")
trap 'rm -rf "$T"' EXIT
export HF_HUB_CACHE="$T/hf" STRATA_STORE="$T/store"
# shellcheck source=check_common.bash
source "$ROOT/tests/e2e/check_common.bash"

# compare_logits NAME STRATA.npy REFERENCE.npy: the logits agree (see the header).
compare_logits() {
  if "$PY" - "$2" "$3" >"$T/cmp.log" 2>&1 <<'EOF'; then ok "$1: $(cat "$T/cmp.log")"; else bad "$1" "$T/cmp.log"; fi
import sys
import numpy as np
s, r = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
r = r[:len(s)]
spread = r.std(axis=1, keepdims=True)
err = (np.abs(s - r) / spread).max()
top = np.sort(r, axis=1)
margin = (top[:, -1] - top[:, -2]) / spread[:, 0]
clear = margin > 0.1
same = (s.argmax(1) == r.argmax(1))
print("max |logit error| / spread %.4f, greedy token equal at %d of %d positions with a clear margin"
      % (err, (same & clear).sum(), clear.sum()))
sys.exit(0 if err < 0.1 and same[clear].all() else 1)
EOF
}

# --- every mix on a synthetic model against the reference forward ------------------
"$STRATA" synth --preset tiny --layers 4 --hidden 256 --heads 4 --kv-heads 2 --intermediate 512 --vocab 512 \
  --seed 7 --out "$T/synth" -q >/dev/null
printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$T/synth" >"$T/synth.yml"
"$STRATA" compile "$T/synth.yml" --name synth >/dev/null
LONG=1,17,300,44,5,91,250,3,77,410,12,8,199,64,33,2,480,120,7,351,90,18,402,66
SHORT=1,17,300,44,5,91,250,3
for t in q8_0 q4_0 q5_0 q5_1 q4_k_s q4_k_m q5_k_m q6_k; do
  if ! "$STRATA" quantize synth --type "$t" --json >"$T/q-$t.json" 2>"$T/q-$t.err"; then
    bad "quantize synth --type $t" "$T/q-$t.err"
    continue
  fi
  "$PY" "$ROOT/tests/ref/quant_ref.py" dequantize "$STRATA_STORE" "synth-$t" "$T/deq-$t"
  "$PY" "$ROOT/tests/ref/forward_ref.py" "$T/deq-$t" --tokens "$LONG" --all-logits --out "$T/ref-$t.npy" 2>/dev/null
  "$STRATA" run "synth-$t" --tokens "$LONG" -n 1 --logits-out "$T/long-$t.npy" --all-logits >/dev/null 2>&1
  "$STRATA" run "synth-$t" --tokens "$SHORT" -n 1 --logits-out "$T/short-$t.npy" --all-logits >/dev/null 2>&1
  STRATA_CPU_KERNELS=avx2 "$STRATA" run "synth-$t" --tokens "$SHORT" -n 1 --logits-out "$T/avx2-$t.npy" \
    --all-logits >/dev/null 2>&1
  types=$(json_get "$T/q-$t.json" "', '.join('%d %s' % (n, k) for k, n in sorted(j['types'].items()))")
  compare_logits "$t ($types), 24 tokens" "$T/long-$t.npy" "$T/ref-$t.npy"
  compare_logits "$t, 8 tokens" "$T/short-$t.npy" "$T/ref-$t.npy"
  compare_logits "$t, 8 tokens, avx2 kernels" "$T/avx2-$t.npy" "$T/ref-$t.npy"
done
# Qwen2's q/k/v biases on quantized products (added by the dense kernels on the bf16 row blocks).
"$STRATA" synth --arch qwen2 --preset tiny --layers 2 --hidden 256 --heads 4 --kv-heads 2 --intermediate 512 \
  --vocab 512 --seed 7 --out "$T/qwen" -q >/dev/null
printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$T/qwen" >"$T/qwen.yml"
"$STRATA" compile "$T/qwen.yml" --name qwen >/dev/null
"$STRATA" quantize qwen --type q8_0 >/dev/null
"$PY" "$ROOT/tests/ref/quant_ref.py" dequantize "$STRATA_STORE" qwen-q8_0 "$T/deq-qwen"
"$PY" "$ROOT/tests/ref/forward_ref.py" "$T/deq-qwen" --tokens "$LONG" --all-logits --out "$T/ref-qwen.npy" 2>/dev/null
for n in "$LONG" "$SHORT"; do
  "$STRATA" run qwen-q8_0 --tokens "$n" -n 1 --logits-out "$T/qwen.npy" --all-logits >/dev/null 2>&1
  compare_logits "qwen2 with biases, q8_0, $(($(tr -cd , <<<"$n" | wc -c) + 1)) tokens" "$T/qwen.npy" "$T/ref-qwen.npy"
done
want=$(json_get "$T/q-q4_k_m.json" "(j['types'].get('Q6_K'), j['types'].get('Q4_K'))")
# 4 layers: use_more_bits is true for layers 0 and 3 (n/8 = 0, 7n/8 = 3), so attn_v and
# ffn_down of two layers and the output are Q6_K: 5; the other 25 2-D weights Q4_K.
[[ $want == "(5, 25)" ]] && ok "q4_k_m picks llama-quantize's types: 5 Q6_K, 25 Q4_K" ||
  bad "q4_k_m types (Q6_K, Q4_K) = $want, want (5, 25)" "$T/q-q4_k_m.json"

# --- the fixture and its DUS: sharing, quality, the store -------------------------------
mapfile -t ids < <(plan_model_ids "$ROOT/examples/solar-dus.yml")
link_fixture_cache "$FIX" "$HF_HUB_CACHE" "${ids[@]}"
printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$FIX" >"$T/kjv.yml"
"$STRATA" compile "$T/kjv.yml" --name kjv >/dev/null
"$STRATA" compile "$ROOT/examples/solar-dus.yml" --name dus >/dev/null
"$STRATA" quantize kjv --type q4_k_m --json >"$T/base.json"
"$STRATA" quantize dus --type q4_k_m --json >"$T/dus.json"
got=$(json_get "$T/dus.json" "(j['blobs_written'], j['quantized'], j['cached'] > 0)")
[[ $got == "(0, 0, True)" ]] && ok "the DUS of a quantized base writes no blob and quantizes nothing" ||
  bad "the DUS of a quantized base: (blobs_written, quantized, cached) = $got" "$T/dus.json"
"$STRATA" compile "$ROOT/examples/solar-dus.yml" --name dus-q --quantize q4_k_m --json >"$T/cq.json"
got=$(json_get "$T/cq.json" "(j['name'], j['quantize']['blobs_written'], j['quantize']['quantized'], j['variant'] == json.load(open('$T/dus.json'))['variant'])")
[[ $got == "('dus-q', 0, 0, True)" ]] && ok "compile --quantize over a quantized base: the DUS's quantized variant, no blob" ||
  bad "compile --quantize: (name, blobs_written, quantized, same variant) = $got" "$T/cq.json"
[[ -z $(ls "$STRATA_STORE/refs" | grep '^tmp\.') ]] && ok "compile --quantize leaves no temporary name" ||
  bad "compile --quantize left: $(ls "$STRATA_STORE/refs")"
"$STRATA" quantize kjv --type q4_k_m --json >"$T/again.json"
got=$(json_get "$T/again.json" "(j['unchanged'], j['quantized'], j['blobs_written'])")
[[ $got == "(True, 0, 0)" ]] && ok "quantizing again changes nothing and computes nothing" ||
  bad "quantizing again: (unchanged, quantized, blobs_written) = $got" "$T/again.json"
"$STRATA" quantize kjv --type q8_0 >/dev/null
[[ $(cat "$STRATA_STORE/STORE") == "strata-store 2" ]] && ok "the store marker is version 2" ||
  bad "the store marker reads: $(cat "$STRATA_STORE/STORE")"
"$STRATA" verify >"$T/verify.log" 2>&1 && ok "verify passes on a store with quantized variants" ||
  bad "verify on a store with quantized variants" "$T/verify.log"

for v in kjv kjv-q8_0 kjv-q4_k_m; do
  "$STRATA" eval "$v" --file "$FIX/heldout.txt" --chunks 8 --json -q >"$T/eval-$v.json"
done
for v in kjv-q8_0 kjv-q4_k_m; do
  rel=$("$PY" -c "import json; a=json.load(open('$T/eval-kjv.json'))['results'][0]['ppl']; b=json.load(open('$T/eval-$v.json'))['results'][0]['ppl']; print('%.5f' % abs(b / a - 1))")
  "$PY" -c "import sys; sys.exit(0 if $rel < 0.01 else 1)" && ok "$v: held-out perplexity within 1% of the base ($rel)" ||
    bad "$v: held-out perplexity differs from the base by $rel"
done

# Export writes the dequantized values in the source dtype.
"$STRATA" export kjv-q8_0 "$T/export" >/dev/null
"$PY" "$ROOT/tests/ref/quant_ref.py" dequantize "$STRATA_STORE" kjv-q8_0 "$T/deq-kjv"
if "$PY" - "$T/export" "$T/deq-kjv" >"$T/export.log" 2>&1 <<'EOF'; then ok "export writes the dequantized weights as BF16"; else bad "export of a quantized variant" "$T/export.log"; fi
import json, struct, sys
import numpy as np
def read(path):
    with open(path + "/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    return {k: (v, data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items() if k != "__metadata__"}
e, d = read(sys.argv[1]), read(sys.argv[2])
assert e.keys() == d.keys(), "tensor names differ"
for k in e:
    (he, be), (hd, bd) = e[k], d[k]
    assert he["dtype"] == "BF16", (k, he["dtype"])
    ours = (np.frombuffer(be, "<u2").astype(np.uint32) << 16).view(np.float32)
    ref = np.frombuffer(bd, "<f4")
    rb = ref.view(np.uint32)
    ref_bf16 = (((rb + 0x7FFF + ((rb >> 16) & 1)) >> 16) << 16).view(np.float32)
    assert np.array_equal(ours, ref_bf16), k
print("ok")
EOF

# gc after the unquantized variants are gone: the quantized ones stay whole.
"$STRATA" rm kjv dus dus-q >/dev/null
"$STRATA" gc --grace 0 >"$T/gc.log" 2>&1 || bad "gc" "$T/gc.log"
"$STRATA" verify >"$T/verify2.log" 2>&1 && "$STRATA" eval kjv-q4_k_m --file "$FIX/heldout.txt" --chunks 2 -q >/dev/null &&
  ok "gc keeps the quantized variants whole without their sources" || bad "after gc" "$T/verify2.log"

# Damage and bad input.
blob=$("$PY" -c "
import json, os
r = '$STRATA_STORE'
h = open(r + '/refs/kjv-q4_k_m').read().strip()
v = json.load(open(f'{r}/nodes/{h[:2]}/{h}'))
l = json.load(open(f'{r}/nodes/{v[\"layers\"][3][\"layer\"][:2]}/{v[\"layers\"][3][\"layer\"]}'))
t = l['tensors']['mlp.down_proj.weight']
print(json.load(open(f'{r}/nodes/{t[:2]}/{t}'))['blob'])")
f="$STRATA_STORE/blobs/${blob:0:2}/$blob"
chmod u+w "$f"
truncate -s -10 "$f"
if "$STRATA" verify >"$T/verify3.log" 2>&1; then bad "verify finds a truncated quantized blob" "$T/verify3.log"
else grep -q "$blob" "$T/verify3.log" && ok "verify names a truncated quantized blob" || bad "verify's report" "$T/verify3.log"; fi
if "$STRATA" run kjv-q4_k_m --tokens 0,297 -n 2 >"$T/run.log" 2>&1; then bad "run refuses a damaged quantized variant" "$T/run.log"
else grep -q "damaged" "$T/run.log" && ok "run refuses a damaged quantized variant with a message" || bad "run's message" "$T/run.log"; fi
set +e
"$STRATA" quantize kjv-q8_0 --type q3_k >"$T/bad1.log" 2>&1
r1=$?
"$STRATA" quantize nosuch --type q8_0 >"$T/bad2.log" 2>&1
r2=$?
"$STRATA" quantize kjv-q8_0 --layers middle >"$T/bad3.log" 2>&1
r3=$?
set -e
[[ $r1 == 2 ]] && grep -q "q4_k_m" "$T/bad1.log" && ok "an unknown --type exits 2 and lists the types" || bad "unknown --type: exit $r1" "$T/bad1.log"
[[ $r2 == 1 ]] && ok "an unknown variant exits 1" || bad "unknown variant: exit $r2" "$T/bad2.log"
[[ $r3 == 2 ]] && ok "a bad --layers exits 2" || bad "bad --layers: exit $r3" "$T/bad3.log"

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
