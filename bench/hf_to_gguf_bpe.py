#!/usr/bin/python3
"""HF Mistral/Llama directory with a byte-level BPE tokenizer.json -> BF16 GGUF, for llama.cpp.

For benchmarks only (bench/eval_compare.sh): llama.cpp's convert_hf_to_gguf.py reads byte-level
BPE vocabularies through HF transformers, which Debian does not ship. This writes the same GGUF
with llama.cpp's own gguf-py writer (give its directory with --gguf-py, e.g.
/tmp/llama.cpp/gguf-py): llama architecture keys, tokenizer.ggml.model "gpt2" with pre-tokenizer
"gpt-2", Q and K rows permuted as convert_hf_to_gguf.py's LlamaModel.permute does, norms in F32,
everything else BF16 as stored.

  hf_to_gguf_bpe.py MODEL_DIR OUT.gguf --gguf-py /tmp/llama.cpp/gguf-py
"""

import argparse
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] != "BF16":
            sys.exit(f"{name}: only BF16 checkpoints are handled, not {info['dtype']}")
        out[name] = np.frombuffer(data[b:e], dtype="<u2").reshape(info["shape"])
    return out


def tensors_of(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    t = {}
    for fn in files:
        t.update(read_safetensors(os.path.join(model_dir, fn)))
    return t


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def bf16_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("out")
    p.add_argument("--gguf-py", required=True)
    a = p.parse_args()
    sys.path.insert(0, a.gguf_py)
    import gguf

    with open(os.path.join(a.model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(a.model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    if tj["model"]["type"] != "BPE" or tj["pre_tokenizer"]["type"] != "ByteLevel":
        sys.exit("only byte-level BPE tokenizers (GPT-2 split) are handled")
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(os.path.basename(os.path.normpath(a.model_dir)))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)

    vocab = tj["model"]["vocab"]
    inv = sorted((i, t) for t, i in vocab.items())
    assert [i for i, _ in inv] == list(range(len(inv))), "vocabulary ids must be dense"
    special = {t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list([t for _, t in inv])
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i, _ in inv])
    merges = tj["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    t = tensors_of(a.model_dir)
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}

    def add(name, u, norm=False):
        if norm:
            w.add_tensor(name, bf16_to_f32(u))
        else:
            w.add_tensor(name, np.ascontiguousarray(u), raw_dtype=gguf.GGMLQuantizationType.BF16)

    add("token_embd.weight", t["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            u = t[f"model.layers.{i}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                u = permute(u, nh)
            elif hf == "self_attn.k_proj":
                u = permute(u, nkv)
            add(f"blk.{i}.{gg}.weight", u, norm=hf.endswith("layernorm"))
    add("output_norm.weight", t["model.norm.weight"], norm=True)
    add("output.weight", t.get("lm_head.weight", t["model.embed_tokens.weight"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
