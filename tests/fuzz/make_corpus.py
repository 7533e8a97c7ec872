#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/.

Deterministic: the same files every run (python3 tests/fuzz/make_corpus.py).
Seeds are small, real-shaped inputs (valid ones the way the real writers lay them
out, plus typical broken ones); the example plans are copied from examples/.
"""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
META = "\u2581"


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def compact(j):
    return json.dumps(j, separators=(",", ":"), ensure_ascii=False)


def pretty(j):
    return json.dumps(j, indent=2, ensure_ascii=False) + "\n"


# ---- safetensors ---------------------------------------------------------------

DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
          "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
RANK = {n: i for i, n in enumerate(DTYPES)}


def safetensors(tensors, metadata=None):
    """The reference save_file() layout: largest dtype first, then by name."""
    order = sorted(tensors, key=lambda t: (-RANK[t[1]], t[0]))
    header, data, off = {}, b"", 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape in order:
        n = DTYPES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        data += bytes((off + i) % 251 for i in range(n))
        off += n
    return raw_safetensors(compact(header).encode(), data)


def raw_safetensors(header, data=b"", pad=True):
    if pad and len(header) % 8:
        header += b" " * (8 - len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def safetensors_seeds():
    t = "safetensors"
    write(t, "tiny_f32", safetensors([("weight", "F32", [2, 2])]))
    write(t, "llama_tiny", safetensors([
        ("model.embed_tokens.weight", "BF16", [8, 4]),
        ("model.layers.0.input_layernorm.weight", "BF16", [4]),
        ("model.layers.0.self_attn.q_proj.weight", "BF16", [4, 4]),
        ("model.layers.0.self_attn.k_proj.weight", "BF16", [2, 4]),
        ("model.norm.weight", "F32", [4]),
        ("lm_head.weight", "F16", [8, 4])], {"format": "pt"}))
    write(t, "every_dtype", safetensors([(f"t.{d.lower()}", d, [3]) for d in DTYPES]))
    write(t, "scalar_and_empty", safetensors([("scalar", "F64", []), ("empty", "I64", [0, 5]),
                                              ("one", "U8", [1, 1, 1])]))
    write(t, "no_tensors", raw_safetensors(b"{}"))
    write(t, "metadata_only", raw_safetensors(compact({"__metadata__": {"format": "pt", "k": "v"}}).encode()))
    write(t, "unicode_names", safetensors([("w\u00e9ight", "F32", [1]), ("\u65e5\u672c", "I32", [1])],
                                          {"note": "\u00fcnicode \"quoted\""}))
    # Broken: each violates one rule the parser checks.
    h = lambda j: compact(j).encode()
    write(t, "bad_overlap", raw_safetensors(h({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                               "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}), b"x" * 6))
    write(t, "bad_gap", raw_safetensors(h({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}), b"x" * 4))
    write(t, "bad_truncated_data", raw_safetensors(h({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}), b"x" * 8))
    write(t, "bad_trailing_bytes", raw_safetensors(h({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}), b"x" * 5))
    write(t, "bad_size_mismatch", raw_safetensors(h({"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}}), b"x" * 4))
    write(t, "bad_duplicate_key", raw_safetensors(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                                  b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"))
    write(t, "bad_dtype", raw_safetensors(h({"a": {"dtype": "Q4_0", "shape": [1], "data_offsets": [0, 1]}}), b"x"))
    write(t, "bad_negative_dim", raw_safetensors(h({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}), b"x"))
    write(t, "bad_float_dim", raw_safetensors(h({"a": {"dtype": "U8", "shape": [1.5], "data_offsets": [0, 1]}}), b"x"))
    write(t, "bad_overflow_shape", raw_safetensors(h({"a": {"dtype": "F64", "shape": [2**62, 4], "data_offsets": [0, 8]}}), b"x" * 8))
    write(t, "bad_offsets", raw_safetensors(h({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 0]}}), b"x"))
    write(t, "bad_metadata", raw_safetensors(h({"__metadata__": {"format": 1}})))
    write(t, "bad_not_object", raw_safetensors(b"[1,2,3]"))
    write(t, "bad_json", raw_safetensors(b'{"a":{"dtype":"U8",'))
    write(t, "bad_header_length", struct.pack("<Q", 2**40) + b"{}")
    write(t, "bad_short", b"\x02\x00\x00")


# ---- config.json ---------------------------------------------------------------

LLAMA2 = {
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False,
    "torch_dtype": "float16", "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000}
LLAMA31 = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256}
MISTRAL = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000}
MISTRAL_V03 = dict(MISTRAL, max_position_embeddings=32768, rope_theta=1000000.0, sliding_window=None,
                   vocab_size=32768, head_dim=128)
QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
    "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 18944,
    "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 28,
    "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.37.2", "use_cache": True, "use_sliding_window": False, "vocab_size": 152064}
QWEN2_05B = dict(QWEN2, hidden_size=896, intermediate_size=4864, max_window_layers=24, num_attention_heads=14,
                 num_hidden_layers=24, num_key_value_heads=2, tie_word_embeddings=True, vocab_size=151936,
                 eos_token_id=[151645, 151643], use_sliding_window=True, sliding_window=32768)
TINY = {"architectures": ["MistralForCausalLM"], "hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 32, "vocab_size": 64,
        "max_position_embeddings": 128, "sliding_window": 8}


def config_seeds():
    t = "model_config"
    for name, c in [("llama2_7b", LLAMA2), ("llama31_8b", LLAMA31), ("mistral_7b_v01", MISTRAL),
                    ("mistral_7b_v03", MISTRAL_V03), ("qwen2_7b", QWEN2), ("qwen2_05b", QWEN2_05B),
                    ("tiny_mistral", TINY)]:
        write(t, name + ".json", pretty(c))
    write(t, "linear_rope.json", pretty(dict(LLAMA2, rope_scaling={"type": "linear", "factor": 2.0})))
    write(t, "default_rope.json", pretty(dict(LLAMA2, rope_scaling={"rope_type": "default"})))
    broken = {
        "bad_arch": dict(LLAMA2, architectures=["GemmaForCausalLM"]),
        "bad_arch_empty": dict(LLAMA2, architectures=[]),
        "bad_heads": dict(LLAMA2, num_attention_heads=30),
        "bad_kv_heads": dict(LLAMA31, num_key_value_heads=5),
        "bad_head_dim_odd": dict(MISTRAL_V03, head_dim=127),
        "bad_rope_yarn": dict(LLAMA2, rope_scaling={"type": "yarn", "factor": 4.0}),
        "bad_rope_llama3_freqs": dict(LLAMA31, rope_scaling=dict(LLAMA31["rope_scaling"], high_freq_factor=1.0)),
        "bad_attention_bias": dict(LLAMA2, attention_bias=True),
        "bad_act": dict(LLAMA2, hidden_act="gelu"),
        "bad_missing_hidden": {k: v for k, v in LLAMA2.items() if k != "hidden_size"},
        "bad_negative_layers": dict(LLAMA2, num_hidden_layers=-1),
        "bad_string_vocab": dict(LLAMA2, vocab_size="32000"),
        "bad_big_hidden": dict(LLAMA2, hidden_size=2**40),
        "bad_eps_zero": dict(LLAMA2, rms_norm_eps=0),
        "bad_eos_list": dict(LLAMA2, eos_token_id=[2, -1]),
        "bad_bos_list": dict(LLAMA2, bos_token_id=[1, 2]),
        "bad_window": dict(QWEN2, sliding_window=-4),
        "bad_bool": dict(LLAMA2, tie_word_embeddings="false"),
    }
    for name, c in broken.items():
        write(t, name + ".json", pretty(c))
    write(t, "bad_null_eps.json", pretty(dict(LLAMA2, rms_norm_eps=None)))
    write(t, "bad_array.json", '[{"architectures": ["LlamaForCausalLM"]}]')
    write(t, "bad_truncated.json", pretty(LLAMA2)[:200])


# ---- plans -----------------------------------------------------------------------

PLANS = {
    "models_form.yml": """\
models:
  - model: meta-llama/Llama-2-7b-hf
    parameters:
      scale: 1.0
base_model: meta-llama/Llama-2-7b-hf
merge_method: passthrough
dtype: float16
""",
    "parameters.yml": """\
# Every parameter form: scalar, gradient, filter list, at all three levels.
slices:
  - sources:
      - model: ./models/base
        layer_range: [0, 4]
        parameters:
          scale:
            - filter: o_proj
              value: 0.0
            - filter: down_proj
              value: [0.0, 0.5, 1.0]
            - value: 1.0
    parameters:
      scale: [1.0, 0.5]
  - sources:
      - model: "./models/base@main"
        layer_range: [2, 6]
parameters:
  scale: 1
  weight: 0.5
merge_method: passthrough
dtype: bfloat16
out_dtype: float32
tokenizer_source: base
chat_template: chatml
""",
    "anchors.yml": """\
slices:
  - sources:
      - &first
        model: mistralai/Mistral-7B-v0.1
        layer_range: [0, 16]
  - sources:
      - {model: 'mistralai/Mistral-7B-v0.1', layer_range: [8, 32], parameters: {scale: !!float 1}}
  - sources: [*first]
merge_method: passthrough
""",
    "flow_style.yml": '{slices: [{sources: [{model: a, layer_range: [0, 1]}]}], merge_method: passthrough, dtype: float32}\n',
    "bad_two_sources.yml": """\
slices:
  - sources:
      - model: a
        layer_range: [0, 4]
      - model: b
        layer_range: [0, 4]
merge_method: passthrough
""",
    "bad_range.yml": "slices:\n  - sources:\n      - model: a\n        layer_range: [4, 2]\nmerge_method: passthrough\n",
    "bad_unknown_key.yml": "slices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n        weight: 1\nmerge_method: passthrough\n",
    "bad_method.yml": "models:\n  - model: a\n  - model: b\nmerge_method: karcher\nbase_model: a\n",
    "slerp.yml": "slices:\n  - sources:\n      - {model: a, layer_range: [0, 32]}\n      - {model: b, layer_range: [0, 32]}\n"
                 "merge_method: slerp\nbase_model: a\nparameters:\n  t:\n    - filter: self_attn\n"
                 "      value: [0, 0.5, 0.3, 0.7, 1]\n    - value: 0.5\ndtype: bfloat16\n",
    "ties.yml": "models:\n  - model: base\n  - model: a\n    parameters: {density: 0.5, weight: [0.2, 0.8]}\n"
                "  - model: b\n    parameters: {density: 0.7, weight: 0.5}\nmerge_method: ties\nbase_model: base\n"
                "parameters: {normalize: true, int8_mask: true}\ndtype: float16\n",
    "dare_slice_base.yml": "merge_method: dare_linear\nslices:\n  - base_model: a\n    sources:\n"
                           "      - {model: a, layer_range: [0, 4]}\n      - {model: b, layer_range: [0, 4], "
                           "parameters: {weight: 1, density: 0.3}}\n",
    "bad_density.yml": "models:\n  - model: base\n  - model: a\n    parameters: {density: 1.5, weight: 1}\n"
                       "merge_method: ties\nbase_model: base\n",
    "bad_slerp_three.yml": "models:\n  - model: a\n  - model: b\n  - model: c\nmerge_method: slerp\n"
                           "base_model: a\nparameters: {t: 0.5}\n",
    "bad_union.yml": "models:\n  - model: a\nmerge_method: passthrough\ntokenizer_source: union\n",
    "bad_lora.yml": "models:\n  - model: a+lora\nmerge_method: passthrough\n",
    "bad_dtype.yml": "models:\n  - model: a\nmerge_method: passthrough\ndtype: int4\n",
    "bad_yaml.yml": "slices:\n  - sources: [\n      - model: a\n",
    "bad_scalar.yml": "just a string\n",
    "bad_both_forms.yml": "models:\n  - model: a\nslices: []\nmerge_method: passthrough\n",
}


def plan_seeds():
    t = "plan"
    ex = os.path.join(ROOT, "examples")
    for f in sorted(os.listdir(ex)):
        if f.endswith(".yml"):
            shutil.copyfile(os.path.join(ex, f), os.path.join(CORPUS, t, f))
    for name, text in PLANS.items():
        write(t, name, text)


# ---- store nodes -----------------------------------------------------------------

def h(i):
    return "%032x" % (0x1234567890abcdef1234567890abcdef * (i + 1) % (1 << 128))


LLAMA_ROLES = ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
               "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
               "mlp.up_proj.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight"]
QWEN2_EXTRA = ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]


def variant(arch, n_layers, files):
    return {
        "kind": "variant", "format": 1, "architecture": arch, "config": h(1),
        "pre": [{"name": "model.embed_tokens.weight", "tensor": h(2)}],
        "post": [{"name": "model.norm.weight", "tensor": h(3)}, {"name": "lm_head.weight", "tensor": h(4)}],
        "layers": [{"layer": h(10 + (l % 3)), "model": "mistralai/Mistral-7B-v0.1", "source_layer": l,
                    "slice": l // 2} for l in range(n_layers)],
        "files": files, "plan": h(5), "dtype": "bfloat16", "out_dtype": None,
        "sources": {"mistralai/Mistral-7B-v0.1": {"revision": "26bca36bde8333b5d7f72e9ed20ccda6a618af24"}}}


def node_seeds():
    t = "node"
    # The store writes sorted keys, compact (nlohmann::json::dump()).
    dump = lambda j: json.dumps(j, separators=(",", ":"), sort_keys=True)
    write(t, "tensor_blob.json", dump({"kind": "tensor", "dtype": "BF16", "shape": [4096, 4096], "op": "blob", "blob": h(20)}))
    write(t, "tensor_zeros.json", dump({"kind": "tensor", "dtype": "F32", "shape": [4096], "op": "zeros"}))
    write(t, "tensor_scale.json", dump({"kind": "tensor", "dtype": "F16", "shape": [32000, 4096], "op": "scale",
                                        "src": h(21), "factor": 0.5}))
    write(t, "tensor_cast.json", dump({"kind": "tensor", "dtype": "F32", "shape": [14336, 4096], "op": "cast", "src": h(22)}))
    write(t, "tensor_scalar.json", dump({"kind": "tensor", "dtype": "I64", "shape": [], "op": "zeros"}))
    write(t, "layer_llama.json", dump({"kind": "layer", "tensors": {r: h(30 + i) for i, r in enumerate(LLAMA_ROLES)}}))
    write(t, "layer_qwen2.json", dump({"kind": "layer", "tensors": {r: h(40 + i) for i, r in enumerate(LLAMA_ROLES + QWEN2_EXTRA)}}))
    write(t, "layer_empty.json", dump({"kind": "layer", "tensors": {}}))
    write(t, "variant_mistral.json", dump(variant("MistralForCausalLM", 4, {
        "tokenizer.json": h(6), "tokenizer_config.json": h(7), "special_tokens_map.json": h(8)})))
    write(t, "variant_llama.json", dump(variant("LlamaForCausalLM", 2, {"tokenizer.model": h(9)})))
    write(t, "variant_qwen2.json", dump(variant("Qwen2ForCausalLM", 1, {})))
    merge = {"kind": "tensor", "dtype": "BF16", "shape": [64, 64], "op": "merge", "method": "ties",
             "inputs": [h(23), h(24), h(25)], "base": 0, "params": {"int8_mask": False, "lambda": 1.0,
             "normalize": True, "rescale": False},
             "tensor_params": [{}, {"density": 0.5, "weight": 0.5}, {"density": 0.7, "weight": 0.3}]}
    write(t, "tensor_merge_ties.json", dump(merge))
    write(t, "tensor_merge_dare.json", dump(dict(merge, method="dare_ties", seed=7,
                                                 salt="model.layers.3.mlp.up_proj.weight")))
    write(t, "tensor_merge_slerp.json", dump({"kind": "tensor", "dtype": "F16", "shape": [4096], "op": "merge",
                                              "method": "slerp", "inputs": [h(26), h(27)], "base": 1,
                                              "params": {"t": 0.25}, "tensor_params": [{}, {}]}))
    write(t, "bad_merge_base.json", dump(dict(merge, base=3)))
    write(t, "bad_merge_seed.json", dump(dict(merge, seed=1, salt="x")))
    write(t, "bad_tensor_shape.json", dump({"kind": "tensor", "dtype": "F32", "shape": [-1], "op": "zeros"}))
    write(t, "bad_tensor_huge.json", dump({"kind": "tensor", "dtype": "F32", "shape": [2**24, 2**24, 2], "op": "zeros"}))
    write(t, "bad_tensor_op.json", dump({"kind": "tensor", "dtype": "F32", "shape": [1], "op": "add", "src": h(1)}))
    write(t, "bad_tensor_hash.json", dump({"kind": "tensor", "dtype": "F32", "shape": [1], "op": "blob", "blob": "ABC"}))
    write(t, "bad_factor.json", '{"kind":"tensor","dtype":"F32","shape":[1],"op":"scale","src":"%s","factor":"x"}' % h(1))
    write(t, "bad_layer_role.json", dump({"kind": "layer", "tensors": {"../etc/passwd": h(1)}}))
    v = variant("MistralForCausalLM", 1, {"../tokenizer.json": h(6)})
    write(t, "bad_variant_file.json", dump(v))
    v = variant("MistralForCausalLM", 1, {})
    v["format"] = 2
    write(t, "bad_variant_format.json", dump(v))
    v = variant("GPT2LMHeadModel", 1, {})
    write(t, "bad_variant_arch.json", dump(v))
    v = variant("LlamaForCausalLM", 1, {})
    v["layers"][0]["source_layer"] = 2**40
    write(t, "bad_variant_int.json", dump(v))


# ---- GGUF vocabularies -------------------------------------------------------------

GGUF_STRING, GGUF_ARRAY = 8, 9


class Gguf:
    def __init__(self, version=3, tensors=()):
        self.version, self.tensors, self.kv = version, list(tensors), []

    def put(self, key, typ, payload):
        self.kv.append(gstr(key) + struct.pack("<I", typ) + payload)
        return self

    def string(self, key, v):
        return self.put(key, GGUF_STRING, gstr(v))

    def u32(self, key, v):
        return self.put(key, 4, struct.pack("<I", v))

    def boolean(self, key, v):
        return self.put(key, 7, struct.pack("<B", v))

    def strings(self, key, vs):
        return self.put(key, GGUF_ARRAY, struct.pack("<IQ", GGUF_STRING, len(vs)) + b"".join(gstr(s) for s in vs))

    def f32s(self, key, vs):
        return self.put(key, GGUF_ARRAY, struct.pack("<IQ", 6, len(vs)) + b"".join(struct.pack("<f", x) for x in vs))

    def i32s(self, key, vs):
        return self.put(key, GGUF_ARRAY, struct.pack("<IQ", 5, len(vs)) + b"".join(struct.pack("<i", x) for x in vs))

    def bytes(self):
        out = b"GGUF" + struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv)) + b"".join(self.kv)
        for name, dims, typ, off in self.tensors:
            out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            out += struct.pack("<IQ", typ, off)
        if self.tensors:
            out += b"\0" * (-len(out) % 32) + b"\0" * 64  # aligned data section
        return out


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


SPM_PIECES = [META, "e", "t", "a", "o", "h", "l", "r", "s", "n", "d", "i", "W", "H", ",", "!",
              META + "t", "he", META + "the", META + "a", "ll", "lo", "llo", "el", "ello", "H" + "ello", META + "H",
              META + "Hello", "or", "ld", "orld", META + "w", META + "wor", META + "world", "in", META + "in",
              "\u00f6", "r\u00f6", "\u65e5", "\u672c", META + "\u65e5\u672c", "[INST]", "[/INST]"]


def spm_vocab_tokens():
    return ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + SPM_PIECES


def spm_vocab(pre_key=True):
    tokens = spm_vocab_tokens()
    types = [2, 3, 3] + [6] * 256 + [1] * (len(SPM_PIECES) - 2) + [4, 4]  # [INST] [/INST]: user-defined
    scores = [0.0] * 259 + [-float(i) for i in range(len(SPM_PIECES))]
    g = (Gguf().string("general.architecture", "llama").string("general.name", "tiny-spm")
         .string("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", tokens)
         .f32s("tokenizer.ggml.scores", scores).i32s("tokenizer.ggml.token_type", types)
         .u32("tokenizer.ggml.bos_token_id", 1).u32("tokenizer.ggml.eos_token_id", 2)
         .u32("tokenizer.ggml.unknown_token_id", 0).boolean("tokenizer.ggml.add_bos_token", 1)
         .boolean("tokenizer.ggml.add_eos_token", 0))
    if pre_key:
        g.boolean("tokenizer.ggml.add_space_prefix", 1)
    return g


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def bl(s):
    return "".join(B2U[b] for b in s.encode("utf-8"))


BPE_MERGES = [("\u0120", "t"), ("h", "e"), ("\u0120t", "he"), ("\u0120", "w"), ("o", "r"), ("\u0120w", "or"),
              ("l", "d"), ("\u0120wor", "ld"), ("H", "e"), ("l", "l"), ("He", "ll"), ("Hell", "o"), ("\u0120", "a"),
              ("i", "n"), ("\u0120", "in"), ("1", "2"), ("'", "s"), ("\u0120", "\u0120")]


def bpe_vocab(pre, specials):
    tokens = [B2U[b] for b in range(256)]
    for l, r in BPE_MERGES:
        if l + r not in tokens:
            tokens.append(l + r)
    tokens += specials
    types = [1] * (len(tokens) - len(specials)) + [3] * len(specials)
    g = (Gguf().string("general.architecture", "gpt2" if pre == "gpt-2" else pre)
         .string("tokenizer.ggml.model", "gpt2").string("tokenizer.ggml.pre", pre)
         .strings("tokenizer.ggml.tokens", tokens).i32s("tokenizer.ggml.token_type", types)
         .strings("tokenizer.ggml.merges", [l + " " + r for l, r in BPE_MERGES])
         .u32("tokenizer.ggml.bos_token_id", len(tokens) - len(specials))
         .u32("tokenizer.ggml.eos_token_id", len(tokens) - 1))
    return g


def gguf_seeds():
    t = "gguf"
    write(t, "spm_tiny.gguf", spm_vocab().bytes())
    write(t, "spm_chat_template.gguf", spm_vocab(pre_key=False).string(
        "tokenizer.chat_template", "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}").bytes())
    write(t, "gpt2_tiny.gguf", bpe_vocab("gpt-2", ["<|endoftext|>"]).bytes())
    write(t, "llama3_tiny.gguf", bpe_vocab("llama-bpe", ["<|begin_of_text|>", "<|eot_id|>"]).bytes())
    write(t, "qwen2_tiny.gguf", bpe_vocab("qwen2", ["<|im_start|>", "<|im_end|>"]).boolean(
        "tokenizer.ggml.add_bos_token", 0).bytes())
    g = bpe_vocab("gpt-2", ["<|endoftext|>"])
    g.tensors = [("token_embd.weight", [4, 2], 0, 0), ("output_norm.weight", [4], 0, 32)]  # 32 + 16 of the 64 data bytes
    g.u32("general.alignment", 32).put("general.file_type", 10, struct.pack("<Q", 1)).put(
        "llama.rope.freq_base", 6, struct.pack("<f", 10000.0)).put("x.f64", 12, struct.pack("<d", 0.5)).put(
        "x.i8", 1, b"\xff").put("x.u16", 2, b"\x01\x00").put("x.i16", 3, b"\xff\xff").put(
        "x.i64", 11, struct.pack("<q", -5)).put(
        "x.nested", GGUF_ARRAY, struct.pack("<IQ", GGUF_ARRAY, 2) + struct.pack("<IQ", 4, 1) + struct.pack("<I", 7) +
        struct.pack("<IQ", GGUF_STRING, 1) + gstr("s"))
    write(t, "with_tensors.gguf", g.bytes())
    # Other element types where the reader takes any number: f32 token types,
    # f64 scores, u64/i32 ids (the converters of older llama.cpp wrote these).
    n = 3 + 256 + len(SPM_PIECES)
    g = (Gguf().string("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", spm_vocab_tokens())
         .put("tokenizer.ggml.scores", GGUF_ARRAY, struct.pack("<IQ", 12, n) + b"".join(
             struct.pack("<d", -float(i)) for i in range(n)))
         .f32s("tokenizer.ggml.token_type", [2.0, 3.0, 3.0] + [6.0] * 256 + [1.0] * (n - 259))
         .put("tokenizer.ggml.bos_token_id", 10, struct.pack("<Q", 1))
         .put("tokenizer.ggml.eos_token_id", 5, struct.pack("<i", 2)))
    write(t, "spm_other_types.gguf", g.bytes())
    v2 = Gguf(version=2).string("general.architecture", "llama").u32("llama.context_length", 4096)
    write(t, "v2_metadata.gguf", v2.bytes())
    write(t, "bad_magic.gguf", b"GGML" + spm_vocab().bytes()[4:200])
    write(t, "bad_version.gguf", Gguf(version=4).bytes())
    write(t, "bad_truncated.gguf", spm_vocab().bytes()[:700])
    write(t, "bad_model.gguf", Gguf().string("tokenizer.ggml.model", "bert").strings("tokenizer.ggml.tokens", ["a"]).bytes())
    write(t, "bad_lengths.gguf", Gguf().string("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", ["a", "b"])
          .f32s("tokenizer.ggml.scores", [0.0]).bytes())


# ---- tokenizer.json ---------------------------------------------------------------

def added(i, content, special=True, **kw):
    d = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": not special, "special": special}
    d.update(kw)
    return d


def llama_style():
    """Llama 2 / Mistral v0.1: BPE with byte fallback, Prepend + Replace normalizer."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for p in SPM_PIECES:
        vocab.setdefault(p, len(vocab))
    merges = []
    for p in SPM_PIECES:
        for k in range(1, len(p)):
            if p[:k] in vocab and p[k:] in vocab and (p[:k] + " " + p[k:]) not in merges:
                merges.append(p[:k] + " " + p[k:])
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": META}, {"type": "Replace", "pattern": {"String": " "}, "content": META}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges}}


def metaspace_style():
    """Mistral v0.3: Metaspace pre-tokenizer and decoder, [INST] as added tokens."""
    j = llama_style()
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": False}
    j["decoder"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": False}
    j["added_tokens"] += [added(j["model"]["vocab"]["[INST]"], "[INST]"), added(j["model"]["vocab"]["[/INST]"], "[/INST]")]
    j["model"]["merges"] = [m.split(" ") for m in j["model"]["merges"]]  # the newer pair form
    return j


GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def byte_level(pre_tokenizer, specials, normalizer=None, ignore_merges=False):
    vocab = {B2U[b]: b for b in range(256)}
    for l, r in BPE_MERGES:
        vocab.setdefault(l + r, len(vocab))
    toks = [added(len(vocab) + i, s) for i, s in enumerate(specials)]
    bl_ = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": toks, "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer, "post_processor": bl_, "decoder": bl_,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": vocab, "merges": [l + " " + r for l, r in BPE_MERGES]}}


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def tokenizer_seeds():
    t = "tokenizer"
    write(t, "llama_spm_bpe.json", pretty(llama_style()))
    write(t, "mistral_metaspace.json", pretty(metaspace_style()))
    write(t, "gpt2_bytelevel.json", pretty(byte_level(
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}, ["<|endoftext|>"])))
    l3 = byte_level({"type": "Sequence", "pretokenizers": [
        split(LLAMA3_RE), {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], ignore_merges=True)
    bos = l3["added_tokens"][0]["id"]
    l3["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                                  {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                              "tokens": ["<|begin_of_text|>"]}}}]}
    write(t, "llama3_split.json", pretty(l3))
    qw = byte_level({"type": "Sequence", "pretokenizers": [
        split(QWEN2_RE), {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], normalizer={"type": "NFC"})
    qw["added_tokens"].append(added(len(qw["model"]["vocab"]) + 3, " <tool>", special=False, lstrip=True,
                                    rstrip=True, single_word=True))
    write(t, "qwen2_nfc.json", pretty(qw))
    # Minimal loadable forms: what the loader defaults when keys are absent.
    write(t, "minimal.json", '{"model":{"vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}')
    write(t, "minimal_pairs.json", '{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]]},'
                                   '"added_tokens":[{"id":5,"content":"<s>","special":true}]}')
    # Unsupported components and malformed fields: clean rejections.
    write(t, "bad_wordpiece.json", '{"model":{"type":"WordPiece","vocab":{"[UNK]":0}}}')
    write(t, "bad_unigram.json", '{"model":{"type":"Unigram","vocab":[["<unk>",0.0]]}}')
    write(t, "bad_normalizer.json", '{"normalizer":{"type":"NFKC"},"model":{"vocab":{"a":0},"merges":[]}}')
    write(t, "bad_split.json", pretty(byte_level(split(r"\w+"), [])))
    write(t, "bad_merge.json", '{"model":{"vocab":{"a":0,"b":1},"merges":["a b c"]}}')
    write(t, "bad_merge_missing.json", '{"model":{"vocab":{"a":0,"b":1},"merges":["a b"]}}')
    write(t, "bad_vocab_id.json", '{"model":{"vocab":{"a":-3},"merges":[]}}')
    write(t, "bad_added.json", '{"model":{"vocab":{"a":0},"merges":[]},"added_tokens":[{"id":1,"content":""}]}')
    write(t, "bad_affix.json", '{"model":{"vocab":{"a":0},"merges":[],"continuing_subword_prefix":"##"}}')
    write(t, "bad_not_object.json", '["model"]')
    write(t, "bad_truncated.json", pretty(llama_style())[:900])
    write(t, "tokenizer_config_llama.json", pretty({
        "add_bos_token": True, "add_eos_token": False, "bos_token": {"content": "<s>", "lstrip": False},
        "eos_token": "</s>", "chat_template": [{"name": "default", "template": "{{ messages }}"}]}))


# ---- serve_request (OpenAI request bodies) ------------------------------------------

def serve_request_seeds():
    """Bodies of /v1/completions and /v1/chat/completions (the target parses each as both)."""
    t = "serve_request"
    chat = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    write(t, "chat_minimal.json", compact({"model": "base", "messages": [{"role": "user", "content": "Hi"}]}))
    write(t, "chat_full.json", pretty({
        "model": "base", "messages": chat, "max_completion_tokens": 32, "temperature": 0.7, "top_p": 0.9,
        "top_k": 40, "repetition_penalty": 1.1, "seed": 42, "stop": ["\n\n", "User:"], "n": 1, "logprobs": True,
        "top_logprobs": 5, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": False,
        "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "response_format": {"type": "text"},
        "user": "u-1", "metadata": {"k": "v"}}))
    write(t, "chat_parts.json", compact({"model": "base", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hello, "}, {"type": "text", "text": "w\u00f6rld \U0001F600"}]}]}))
    write(t, "chat_tools.json", pretty({
        "model": "base", "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"zip": {"type": "string"}, "city": {"type": "string"}},
            "required": ["city"]}}}]}))
    write(t, "completion_minimal.json", compact({"model": "base", "prompt": "Once upon a time"}))
    write(t, "completion_full.json", pretty({
        "model": "base", "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0, "top_p": 1,
        "seed": -1, "stop": "\n", "logprobs": 3, "echo": False, "stream": False, "best_of": 1, "suffix": None}))
    write(t, "completion_prompts.json", compact({"model": "base", "prompt": ["a", "b", ""], "max_tokens": 1.0}))
    write(t, "completion_ids.json", compact({"model": "base", "prompt": [1, 15043, 2147483647]}))
    write(t, "completion_id_lists.json", compact({"model": "base", "prompt": [[1, 2], [3]], "max_tokens": 4,
                                                 "max_completion_tokens": 4}))
    # Refused: each a 400 naming its field.
    bad = {
        "bad_temperature.json": {"model": "m", "prompt": "x", "temperature": 2.5},
        "bad_temperature_type.json": {"model": "m", "prompt": "x", "temperature": "hot"},
        "bad_top_p_zero.json": {"model": "m", "prompt": "x", "top_p": 0},
        "bad_n.json": {"model": "m", "messages": chat, "n": 2},
        "bad_max_tokens_zero.json": {"model": "m", "prompt": "x", "max_tokens": 0},
        "bad_max_tokens_differ.json": {"model": "m", "messages": chat, "max_tokens": 5, "max_completion_tokens": 6},
        "bad_top_logprobs.json": {"model": "m", "messages": chat, "logprobs": True, "top_logprobs": 21},
        "bad_stop_empty.json": {"model": "m", "prompt": "x", "stop": ["a", ""]},
        "bad_stream_options.json": {"model": "m", "messages": chat, "stream_options": {"include_usage": True}},
        "bad_prompt_mixed.json": {"model": "m", "prompt": ["a", [1, 2]]},
        "bad_prompt_empty.json": {"model": "m", "prompt": []},
        "bad_prompt_id.json": {"model": "m", "prompt": [[-1]]},
        "bad_role.json": {"model": "m", "messages": [{"content": "hi"}]},
        "bad_image_part.json": {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
        "bad_presence_penalty.json": {"model": "m", "prompt": "x", "presence_penalty": 0.5},
        "bad_logit_bias.json": {"model": "m", "prompt": "x", "logit_bias": {"50256": -100}},
        "bad_echo.json": {"model": "m", "prompt": "x", "echo": True},
        "bad_model_type.json": {"model": 7, "prompt": "x"},
    }
    for name, body in bad.items():
        write(t, name, compact(body))
    write(t, "bad_truncated.json", pretty({"model": "m", "messages": chat})[:40])
    write(t, "bad_not_object.json", '["model","m"]')
    write(t, "bad_utf8.json", b'{"model":"m","prompt":"\xff\xfe"}')
    write(t, "bad_deep.json", '{"model":"m","messages":[{"role":"user","content":"x","x":' + "[" * 200 + "]" * 200 + "}]}")


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    os.makedirs(os.path.join(CORPUS, "plan"))
    safetensors_seeds()
    config_seeds()
    plan_seeds()
    node_seeds()
    gguf_seeds()
    tokenizer_seeds()
    serve_request_seeds()
    total = 0
    for d in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, d))
        size = sum(os.path.getsize(os.path.join(CORPUS, d, f)) for f in files)
        total += size
        print(f"{d}: {len(files)} files, {size} bytes")
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
