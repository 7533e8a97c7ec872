#!/usr/bin/env bash
# End-to-end: GGUF files into the store (`strata compile FILE.gguf`, and a .gguf
# path as a plan's model), on the trained fixture.
#
#   gguf_import.sh STRATA_BIN PROJECT_ROOT
#
# - HF -> GGUF (bf16) -> strata: the same layers (hashes) as compiling the
#   checkpoint, no new blob, an HF export whose every tensor is the
#   checkpoint's bytes, the same logits and the same perplexity (so the same
#   tokens) on the held-out text; a second compile reads nothing;
# - a Q4_K_M GGUF comes in as its blocks: no new blob over the quantized
#   variant, the same logits;
# - a DUS plan over the GGUF has exactly the layers of the same plan over the
#   checkpoint; a plan may mix the two;
# - llama3 and linear rope_scaling go out as llama.cpp writes them and come
#   back as the same config and logits;
# - hostile and unsupported files (bad magic, future version, truncated,
#   overlapping or misaligned data, absurd counts, unknown tensors, types,
#   architectures, keys that disagree with the tensors) fail with a clear
#   message and leave the store exactly as it was.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STRATA_BIN PROJECT_ROOT" >&2
  exit 2
fi
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
FIX="$ROOT/tests/fixtures/kjv"
MUT="$ROOT/tests/ref/gguf_mutate.py"
export PYTHONDONTWRITEBYTECODE=1
T=$(mktemp -d "${TMPDIR:-/tmp}/strata-gguf-in.XXXXXX")
trap 'rm -rf "$T"' EXIT
export STRATA_STORE="$T/store"
# shellcheck source=check_common.bash
source "$ROOT/tests/e2e/check_common.bash"

layers=$(json_get "$FIX/config.json" 'j["num_hidden_layers"]')
printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$FIX" >"$T/kjv.yml"
"$STRATA" compile "$T/kjv.yml" --name kjv >/dev/null
"$STRATA" quantize kjv --type q4_k_m >/dev/null
"$STRATA" export kjv "$T/kjv.gguf" --format gguf >/dev/null 2>&1
"$STRATA" export kjv-q4_k_m "$T/q4.gguf" --format gguf >/dev/null 2>&1
TOKENS=0,5,17,300,42,1000,7,7,7,2048,13

logits() {  # logits NAME OUT: every prompt position's logits as float32
  "$STRATA" run "$1" --tokens "$TOKENS" -n 1 --logits-out "$2" --all-logits >/dev/null
}

# --- bf16 round trip ---
if "$STRATA" compile "$T/kjv.gguf" --name g --json >"$T/g.json" 2>"$T/g.err"; then
  [[ $(json_get "$T/g.json" 'j["blobs_written"]') == 0 && $(json_get "$T/g.json" 'j["layers"]') == "$layers" ]] &&
    ok "HF -> GGUF -> strata stores no new blob" || bad "bf16 import wrote blobs" "$T/g.json"
else
  bad "compile kjv.gguf" "$T/g.err"
fi
"$STRATA" diff kjv g >"$T/diff.txt" 2>&1 || true
grep -q "^$layers kept, 0 changed, 0 inserted, 0 removed" "$T/diff.txt" &&
  ok "every layer of the imported GGUF has the checkpoint's hash" || bad "diff kjv g" "$T/diff.txt"
"$STRATA" export g "$T/g-hf" >/dev/null
"$PY" - "$FIX" "$T/g-hf" >"$T/hf.log" 2>&1 <<'EOF' && ok "its HF export is the checkpoint's tensors, byte for byte, and its shape keys" || bad "HF export of the import" "$T/hf.log"
import json, struct, sys
def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n)); data = f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items() if k != "__metadata__"}
a, b = read(sys.argv[1] + "/model.safetensors"), read(sys.argv[2] + "/model.safetensors")
assert sorted(a) == sorted(b), set(a) ^ set(b)
for k in a:
    assert a[k] == b[k], k
ca, cb = json.load(open(sys.argv[1] + "/config.json")), json.load(open(sys.argv[2] + "/config.json"))
for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
          "bos_token_id", "eos_token_id", "torch_dtype"):
    assert ca[k] == cb[k], (k, ca[k], cb[k])
assert cb["architectures"] == ["LlamaForCausalLM"]
print("ok", len(a))
EOF
logits kjv "$T/kjv.npy"
logits g "$T/g.npy"
cmp -s "$T/kjv.npy" "$T/g.npy" && ok "the same logits, bit for bit" || bad "logits of the bf16 import differ"
"$STRATA" eval kjv g --file "$FIX/heldout.txt" --ctx 128 --chunks 4 --json >"$T/eval.json" 2>"$T/eval.err" || bad "eval" "$T/eval.err"
"$PY" - "$T/eval.json" >"$T/eval.log" 2>&1 <<'EOF' && ok "the same tokens and perplexity on the held-out text (tokenizer from the GGUF vocabulary)" || bad "eval of the import" "$T/eval.log"
import json, sys
j = json.load(open(sys.argv[1]))
a, b = j["results"]
for k in ("text_tokens", "scored_tokens", "nll_sum", "ppl"):
    assert a[k] == b[k], (k, a[k], b[k])
print(a["ppl"], a["text_tokens"])
EOF
"$STRATA" compile "$T/kjv.gguf" --name g2 --json >"$T/g2.json"
[[ $(json_get "$T/g2.json" 'j["bytes_read"]') == 0 && $(json_get "$T/g2.json" 'j["variant"]') == $(json_get "$T/g.json" 'j["variant"]') ]] &&
  ok "a second compile of the file reads no tensor byte (Q/K and norms too)" || bad "second compile" "$T/g2.json"

# --- quantized ---
"$STRATA" compile "$T/q4.gguf" --name gq --json >"$T/gq.json" 2>"$T/gq.err" || bad "compile q4.gguf" "$T/gq.err"
[[ $(json_get "$T/gq.json" 'j["blobs_written"]') == 0 ]] &&
  ok "a Q4_K_M GGUF of the quantized variant stores no new blob (its blocks are the store's)" || bad "q4 import wrote blobs" "$T/gq.json"
logits kjv-q4_k_m "$T/q.npy"
logits gq "$T/gq.npy"
cmp -s "$T/q.npy" "$T/gq.npy" && ok "the same logits as the quantized variant, bit for bit" || bad "logits of the q4 import differ"

rc=0
"$STRATA" quantize gq --type q8_0 --name gq8 >"$T/requant.log" 2>&1 || rc=$?
[[ $rc == 1 ]] && grep -q "does not quantize a quantized tensor again" "$T/requant.log" && ! "$STRATA" ls | grep -q gq8 &&
  ok "quantizing the imported Q4_K_M to q8_0 is refused (no second quantization)" || bad "re-quantize: exit $rc" "$T/requant.log"
"$STRATA" quantize gq --type q4_k_m --name gq4 --json >"$T/same.json" 2>&1 &&
  [[ $(json_get "$T/same.json" 'j["blobs_written"]') == 0 ]] &&
  ok "quantizing it with its own mix keeps every tensor" || bad "quantize with the same mix" "$T/same.json"

# --- plans over GGUF files ---
dus() {  # dus MODEL: SOLAR-style depth up-scaling of the fixture
  printf 'slices:\n  - sources:\n      - model: "%s"\n        layer_range: [0, 24]\n  - sources:\n      - model: "%s"\n        layer_range: [8, %s]\nmerge_method: passthrough\ndtype: bfloat16\n' "$1" "$1" "$layers"
}
dus "$FIX" >"$T/dus-hf.yml"
dus "$T/kjv.gguf" >"$T/dus-gguf.yml"
"$STRATA" compile "$T/dus-hf.yml" --name dus-hf >/dev/null
"$STRATA" compile "$T/dus-gguf.yml" --name dus-gguf --json >"$T/dus.json" 2>"$T/dus.err" || bad "DUS plan over the GGUF" "$T/dus.err"
"$STRATA" diff dus-hf dus-gguf >"$T/dus-diff.txt" 2>&1 || true
[[ $(json_get "$T/dus.json" 'j["blobs_written"]') == 0 ]] && grep -q "^$((layers + 16)) kept, 0 changed" "$T/dus-diff.txt" &&
  ok "a DUS plan over the GGUF file has the layers of the same plan over the checkpoint" || bad "DUS over GGUF" "$T/dus-diff.txt"
printf 'slices:\n  - sources:\n      - model: "%s"\n        layer_range: [0, 16]\n  - sources:\n      - model: "%s"\n        layer_range: [16, %s]\nmerge_method: passthrough\n' "$FIX" "$T/kjv.gguf" "$layers" >"$T/mixed.yml"
"$STRATA" compile "$T/mixed.yml" --name mixed >"$T/mixed.log" 2>&1 && "$STRATA" diff kjv mixed 2>&1 | grep -q "^$layers kept" &&
  ok "a plan mixes the checkpoint (Mistral) and its GGUF (llama) layers" || bad "mixed plan" "$T/mixed.log"
"$PY" "$MUT" "$T/kjv.gguf" "$T/tied.gguf" drop:output.weight
"$STRATA" compile "$T/tied.gguf" --name tied >"$T/tied.log" 2>&1 && "$STRATA" export tied "$T/tied-hf" >/dev/null &&
  [[ $(json_get "$T/tied-hf/config.json" 'j["tie_word_embeddings"]') == True ]] && "$STRATA" run tied --tokens 1,2,3 -n 2 >/dev/null &&
  ok "a GGUF without output.weight ties lm_head to the embeddings" || bad "tied GGUF" "$T/tied.log"

# --- rope scaling, both ways ---
"$STRATA" synth --arch llama --preset tiny --tokenizer gpt2 --vocab-gguf "$ROOT/../shared/vocab/ggml-vocab-gpt-2.gguf" \
  --out "$T/l3" -q >/dev/null
cp -r "$T/l3" "$T/lin"
"$PY" - "$T" <<'EOF'
import json, sys
for d, rs in (("l3", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}), ("lin", {"type": "linear", "factor": 2.0})):
    p = sys.argv[1] + "/" + d + "/config.json"
    c = json.load(open(p)); c["rope_scaling"] = rs; c["rope_theta"] = 500000.0
    json.dump(c, open(p, "w"), indent=2)
EOF
for d in l3 lin; do
  printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$T/$d" >"$T/$d.yml"
  "$STRATA" compile "$T/$d.yml" --name "$d" >/dev/null
  "$STRATA" export "$d" "$T/$d.gguf" --format gguf >/dev/null 2>&1 || bad "export $d"
  "$STRATA" compile "$T/$d.gguf" --name "$d-g" >"$T/$d-g.log" 2>&1 || bad "import $d" "$T/$d-g.log"
  "$STRATA" export "$d-g" "$T/$d-g-hf" >/dev/null
  logits "$d" "$T/$d.npy"
  logits "$d-g" "$T/$d-g.npy"
done
"$PY" - "$T" "$ROOT" >"$T/rope.log" 2>&1 <<'EOF' && ok "llama3 rope_scaling goes out as llama.cpp's rope_freqs factors and comes back as rope_scaling" || bad "llama3 rope scaling" "$T/rope.log"
import json, math, sys
import numpy as np
T, ROOT = sys.argv[1:3]
sys.path.insert(0, ROOT + "/tests/ref")
import gguf_read
kv, tensors, start, data = gguf_read.read(T + "/l3.gguf")
assert tensors[0]["name"] == "rope_freqs.weight", tensors[0]
c = json.load(open(T + "/l3/config.json"))
dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
# convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors, in float32 as it computes.
freqs = 1.0 / (np.float32(c["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
want = []
for f in freqs:
    wl = 2 * math.pi / f
    if wl < 8192 / 4.0: want.append(1.0)
    elif wl > 8192 / 1.0: want.append(8.0)
    else:
        sm = (8192 / wl - 1.0) / (4.0 - 1.0)
        want.append(1 / ((1 - sm) / 8.0 + sm))
got = np.frombuffer(data[start:start + 4 * len(want)], "<f4")
assert tensors[0]["ne"] == [dim // 2] and np.allclose(got, want, rtol=1e-6, atol=0), (got, want)
assert any(1 < x < 8 for x in want), "no factor in the smooth band: the check would not test it"
back = json.load(open(T + "/l3-g-hf/config.json"))["rope_scaling"]
assert back == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}, back
kv, _, _, _ = gguf_read.read(T + "/lin.gguf")
assert kv["llama.rope.scaling.type"] == "linear" and kv["llama.rope.scaling.factor"] == 2.0
back = json.load(open(T + "/lin-g-hf/config.json"))["rope_scaling"]
assert back == {"type": "linear", "factor": 2.0}, back
print("ok", list(got))
EOF
cmp -s "$T/l3.npy" "$T/l3-g.npy" && cmp -s "$T/lin.npy" "$T/lin-g.npy" &&
  ok "llama3 and linear rope scaling: the same logits after the round trip" || bad "rope-scaled logits differ"
"$PY" "$MUT" "$T/l3.gguf" "$T/ropefreqs.gguf" kv:llama.rope.freq_base=f32:10000

# --- hostile and unsupported files ---
snapshot() { (cd "$STRATA_STORE" && find . -path ./tmp -prune -o -type f -print | sort | xargs md5sum); }
snapshot >"$T/before.txt"
refuse() {  # refuse LABEL FILE EXPECTED-SUBSTRING
  local rc=0
  "$STRATA" compile "$2" --name hostile >"$T/h.log" 2>&1 || rc=$?
  if [[ $rc == 1 ]] && grep -qF -- "$3" "$T/h.log" && ! grep -qi "terminate\|abort\|segmentation" "$T/h.log"; then
    ok "$1: $(grep -o 'error: .*' "$T/h.log" | cut -c8-90)..."
  else
    bad "$1 (exit $rc, wanted \"$3\")" "$T/h.log"
  fi
}
mutate() { "$PY" "$MUT" "$T/kjv.gguf" "$T/$1.gguf" "${@:2}"; echo "$T/$1.gguf"; }
size=$(stat -c %s "$T/kjv.gguf")
head -c $((size / 2)) "$T/kjv.gguf" >"$T/trunc.gguf"
refuse "truncated data" "$T/trunc.gguf" "past the end of the file"
head -c 3000 "$T/kjv.gguf" >"$T/trunc2.gguf"
refuse "truncated header" "$T/trunc2.gguf" "truncated or not a valid GGUF file"
{ printf 'GGML'; tail -c +5 "$T/kjv.gguf"; } >"$T/magic.gguf"
refuse "bad magic" "$T/magic.gguf" "not a GGUF file"
{ printf 'GGUF\x04\x00\x00\x00'; tail -c +9 "$T/kjv.gguf"; } >"$T/v4.gguf"
refuse "future version" "$T/v4.gguf" "version 4 is newer"
{ head -c 8 "$T/kjv.gguf"; printf '\x00\x00\x00\x00\x00\x01\x00\x00'; tail -c +17 "$T/kjv.gguf"; } >"$T/count.gguf"
refuse "absurd tensor count" "$T/count.gguf" "tensor count"
refuse "overlapping data" "$(mutate overlap offset:blk.0.attn_k.weight=blk.0.attn_q.weight)" "overlap"
refuse "misaligned data" "$(mutate misaligned offset:blk.1.ffn_up.weight=+8)" "alignment"
refuse "unsupported tensor type" "$(mutate q3k type:blk.2.ffn_down.weight=11)" "Q3_K; strata imports"
refuse "a type no GGML has" "$(mutate badtype type:blk.2.ffn_gate.weight=31)" "no GGML tensor type"
refuse "integer norms" "$(mutate i32 type:output_norm.weight=26)" "is I32"
refuse "another architecture" "$(mutate arch kv:general.architecture=str:gemma)" "architecture is \"gemma\""
refuse "mixture of experts" "$(mutate moe kv:llama.expert_count=u32:8)" "mixture of experts"
refuse "keys that disagree with the tensors" "$(mutate width kv:llama.feed_forward_length=u32:512)" "but the keys say"
refuse "an unknown tensor" "$(mutate unknown rename:blk.0.attn_q.weight=blk.0.attn_qkv.weight)" "blk.0.attn_qkv.weight"
refuse "RoPE factors that are not Llama 3's rule" "$T/ropefreqs.gguf" "strata imports only that rule's factors"
refuse "a rope_freqs of the wrong shape" "$(mutate ropelin rename:output_norm.weight=rope_freqs.weight)" "rope_freqs.weight must be F32 of"
refuse "a missing tensor" "$(mutate missing drop:blk.3.ffn_up.weight)" "model.layers.3.mlp.up_proj.weight"
refuse "rope scaling strata does not run" "$(mutate yarn kv:llama.rope.scaling.type=str:yarn)" "rope.scaling.type is \"yarn\""
refuse "a layer past block_count" "$(mutate blocks kv:llama.block_count=u32:4)" "block_count is 4"
refuse "no such file" "$T/nope.gguf" "does not exist"
snapshot >"$T/after.txt"
cmp -s "$T/before.txt" "$T/after.txt" && ! "$STRATA" ls | grep -q hostile &&
  ok "every refusal left the store as it was" || bad "the store changed" <(diff "$T/before.txt" "$T/after.txt")

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
