#!/usr/bin/env bash
# End-to-end: `strata export NAME OUT.gguf --format gguf` on the trained fixture,
# read back by an independent GGUF reader (tests/ref/gguf_read.py).
#
#   gguf_export.sh STRATA_BIN PROJECT_ROOT
#
# - bf16: every tensor equals the checkpoint's (q_proj/k_proj rows permuted as
#   llama.cpp's converter permutes them, norms widened to F32), llama.cpp's keys
#   carry config.json's numbers, the vocabulary is tokenizer.json's in id order
#   with its merges, and the file is exactly the size --help promised;
# - q4_k_m (after strata quantize): each tensor is its stored blocks, rows permuted
#   the same way; general.file_type is Q4_K_M (15);
# - f32 of the quantized variant: the numpy reference's dequantization;
# - an existing file is kept without --force; a model without tokenizer.json, a bad
#   --type or --format fail cleanly and leave no file behind.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STRATA_BIN PROJECT_ROOT" >&2
  exit 2
fi
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
FIX="$ROOT/tests/fixtures/kjv"
export PYTHONDONTWRITEBYTECODE=1
T=$(mktemp -d "${TMPDIR:-/tmp}/strata-gguf.XXXXXX")
trap 'rm -rf "$T"' EXIT
export STRATA_STORE="$T/store"
# shellcheck source=check_common.bash
source "$ROOT/tests/e2e/check_common.bash"

printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$FIX" >"$T/kjv.yml"
"$STRATA" compile "$T/kjv.yml" --name kjv >/dev/null
"$STRATA" quantize kjv --type q4_k_m >/dev/null
"$STRATA" export kjv "$T/kjv.gguf" --format gguf >"$T/bf16.log" 2>&1 || bad "export bf16" "$T/bf16.log"
"$STRATA" export kjv-q4_k_m "$T/q4.gguf" --format gguf >"$T/q4.log" 2>&1 || bad "export q4_k_m" "$T/q4.log"
"$STRATA" export kjv-q4_k_m "$T/q4-f32.gguf" --format gguf --type f32 >"$T/f32.log" 2>&1 || bad "export --type f32" "$T/f32.log"
"$PY" "$ROOT/tests/ref/quant_ref.py" dequantize "$STRATA_STORE" kjv-q4_k_m "$T/deq"

cat >"$T/common.py" <<'EOF'
import json, os, struct, sys
import numpy as np
name, ROOT, FIX, T, STORE = sys.argv[1:6]
sys.path.insert(0, ROOT + "/tests/ref")
import gguf_read
LAYER = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
         "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
         "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
         "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
         "mlp.down_proj.weight": "ffn_down.weight"}
OTHER = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}
def gguf_name(hf):
    if hf in OTHER: return OTHER[hf]
    parts = hf.split(".")
    return "blk.%s.%s" % (parts[2], LAYER[".".join(parts[3:])])
def safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n)); data = f.read()
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        raw = data[v["data_offsets"][0]:v["data_offsets"][1]]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, "<f4")
        out[k] = (v["dtype"], a.reshape(v["shape"]), raw)
    return out
def permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
cfg = json.load(open(FIX + "/config.json"))
def heads_for(g):
    if g.endswith("attn_q.weight"): return cfg["num_attention_heads"]
    if g.endswith("attn_k.weight"): return cfg["num_key_value_heads"]
    return 0
def tensor_bytes(kv, tensors, start, data, i):
    t = tensors[i]
    end = tensors[i + 1]["offset"] if i + 1 < len(tensors) else len(data) - start
    return data[start + t["offset"]:start + end]
EOF

check_bf16() {
  "$PY" - "$T/kjv.gguf" "$ROOT" "$FIX" "$T" "$STRATA_STORE" >"$T/check.log" 2>&1 <<'EOF'
import sys
exec(open(sys.argv[4] + "/common.py").read())
kv, tensors, start, data = gguf_read.read(name)
ck = safetensors(FIX + "/model.safetensors")
assert kv["general.architecture"] == "llama" and kv["__version__"] == 3
for key, want in (("llama.block_count", cfg["num_hidden_layers"]), ("llama.embedding_length", cfg["hidden_size"]),
                  ("llama.feed_forward_length", cfg["intermediate_size"]),
                  ("llama.attention.head_count", cfg["num_attention_heads"]),
                  ("llama.attention.head_count_kv", cfg["num_key_value_heads"]),
                  ("llama.context_length", cfg["max_position_embeddings"]), ("llama.vocab_size", cfg["vocab_size"])):
    assert kv[key] == want, (key, kv[key], want)
assert abs(kv["llama.rope.freq_base"] - cfg.get("rope_theta", 10000.0)) < 1e-3
assert kv["general.file_type"] == 32  # MOSTLY_BF16
tok = json.load(open(FIX + "/tokenizer.json"))
vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv_: kv_[1])
assert kv["tokenizer.ggml.tokens"][:len(vocab)] == [t for t, _ in vocab]
assert kv["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "gpt-2"
names = {gguf_name(k): k for k in ck}
assert sorted(names) == sorted(t["name"] for t in tensors), "tensor names"
for i, t in enumerate(tensors):
    dt, a, raw = ck[names[t["name"]]]
    assert t["ne"] == list(reversed(a.shape)), t
    assert t["offset"] % 32 == 0
    got = tensor_bytes(kv, tensors, start, data, i)
    if a.ndim == 1:
        assert t["type"] == 0 and np.frombuffer(got[:a.size * 4], "<f4").tobytes() == a.astype("<f4").tobytes(), t["name"]
    else:
        h = heads_for(t["name"])
        want = np.frombuffer(raw, "<u2").reshape(a.shape)
        if h: want = permute(want, h)
        assert t["type"] == 30 and got[:want.nbytes] == want.tobytes(), t["name"]
print("ok", len(tensors))
EOF
}
check_bf16 && ok "bf16: every tensor, key and token as llama.cpp's converter writes them" || bad "bf16 GGUF" "$T/check.log"
size=$(sed -n 's/^writing .*: \(.*\) (GGUF.*/\1/p' "$T/bf16.log")
actual=$("$PY" -c "
import sys
n = $(stat -c %s "$T/kjv.gguf")
for u, f in (('GB', 1e9), ('MB', 1e6), ('KB', 1e3)):
    if n >= f: print('%.2f %s' % (n / f, u)); break")
[[ "$size" == "$actual" ]] && ok "the size printed before writing is the file's ($size)" ||
  bad "printed size '$size', file '$actual'" "$T/bf16.log"

"$PY" - "$T/q4.gguf" "$ROOT" "$FIX" "$T" "$STRATA_STORE" >"$T/check.log" 2>&1 <<'EOF' && ok "q4_k_m: each tensor is its stored blocks (Q/K rows permuted), file_type Q4_K_M" || bad "q4_k_m GGUF" "$T/check.log"
import sys
exec(open(sys.argv[4] + "/common.py").read())
kv, tensors, start, data = gguf_read.read(name)
assert kv["general.file_type"] == 15 and kv["general.quantization_version"] == 2
vh = open(STORE + "/refs/kjv-q4_k_m").read().strip()
node = lambda h: json.load(open("%s/nodes/%s/%s" % (STORE, h[:2], h)))
v = node(vh)
hf = {t["name"]: t["tensor"] for t in v["pre"] + v["post"]}
for i, l in enumerate(v["layers"]):
    for role, h in node(l["layer"])["tensors"].items():
        hf["model.layers.%d.%s" % (i, role)] = h
ids = {"Q4_0": 2, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
by = {gguf_name(k): k for k in hf}
nq = 0
for i, t in enumerate(tensors):
    n = node(hf[by[t["name"]]])
    if n["op"] != "quant":
        assert t["type"] == 0, t
        continue
    nq += 1
    assert t["type"] == ids[n["quant"]], (t, n["quant"])
    blob = np.fromfile("%s/blobs/%s/%s" % (STORE, n["blob"][:2], n["blob"]), np.uint8).reshape(n["shape"][0], -1)
    h = heads_for(t["name"])
    if h: blob = permute(blob, h)
    assert tensor_bytes(kv, tensors, start, data, i)[:blob.nbytes] == blob.tobytes(), t["name"]
assert nq == 226, nq
print("ok")
EOF

"$PY" - "$T/q4-f32.gguf" "$ROOT" "$FIX" "$T" "$STRATA_STORE" >"$T/check.log" 2>&1 <<'EOF' && ok "--type f32 writes the reference's dequantization" || bad "f32 GGUF of the quantized variant" "$T/check.log"
import sys
exec(open(sys.argv[4] + "/common.py").read())
kv, tensors, start, data = gguf_read.read(name)
deq = safetensors(T + "/deq/model.safetensors")
by = {gguf_name(k): k for k in deq}
for i, t in enumerate(tensors):
    a = deq[by[t["name"]]][1]
    h = heads_for(t["name"])
    if h: a = permute(a, h)
    assert t["type"] == 0 and tensor_bytes(kv, tensors, start, data, i)[:a.size * 4] == a.astype("<f4").tobytes(), t["name"]
assert kv["general.file_type"] == 0
print("ok")
EOF

# Refusals.
cp "$T/kjv.gguf" "$T/keep.gguf"
set +e
"$STRATA" export kjv-q4_k_m "$T/keep.gguf" --format gguf >"$T/r1.log" 2>&1
r1=$?
"$STRATA" export kjv "$T/x.gguf" --format gguf --type q4_k_m >"$T/r2.log" 2>&1
r2=$?
"$STRATA" export kjv "$T/x.gguf" --format ggml >"$T/r3.log" 2>&1
r3=$?
"$STRATA" synth --preset tiny --layers 2 --out "$T/notok" -q >/dev/null
printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$T/notok" >"$T/notok.yml"
"$STRATA" compile "$T/notok.yml" --name notok >/dev/null
"$STRATA" export notok "$T/x.gguf" --format gguf >"$T/r4.log" 2>&1
r4=$?
set -e
[[ $r1 == 1 ]] && cmp -s "$T/kjv.gguf" "$T/keep.gguf" && grep -q -- "--force" "$T/r1.log" &&
  ok "an existing file is kept without --force" || bad "existing file: exit $r1" "$T/r1.log"
[[ $r2 == 1 ]] && grep -q "strata quantize" "$T/r2.log" && ok "--type q4_k_m says to quantize first" || bad "--type q4_k_m: exit $r2" "$T/r2.log"
[[ $r3 == 2 ]] && ok "an unknown --format exits 2" || bad "--format ggml: exit $r3" "$T/r3.log"
[[ $r4 == 1 ]] && grep -q "tokenizer.json" "$T/r4.log" && ok "a model without a tokenizer is refused" || bad "no tokenizer: exit $r4" "$T/r4.log"
left=$(find "$T" -maxdepth 1 -name 'x.gguf*' | wc -l)
[[ $left == 0 ]] && ok "failed exports leave no file" || bad "failed exports left $left files"
"$STRATA" export kjv-q4_k_m "$T/keep.gguf" --format gguf --force >/dev/null && cmp -s "$T/keep.gguf" "$T/q4.gguf" &&
  ok "--force replaces the file, with the same bytes as a fresh export" || bad "--force"

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
