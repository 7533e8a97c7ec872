#!/usr/bin/python3
"""Independent float64 reference of the Hugging Face transformers forward pass.

Covers LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM (numpy only, no
torch).  Written from a reading of transformers' modeling_llama.py,
modeling_mistral.py, modeling_qwen2.py, configuration_{llama,mistral,qwen2}.py,
modeling_rope_utils.py and masking_utils.py; no code is shared with transformers
nor with strata.  It is the judge of strata's C++ CPU runtime.  See README.md.

  forward_ref.py MODEL_DIR --tokens 1,15043,3186 [--all-logits] [--out logits.npy]
                           [--greedy N]

--out writes the logits of the last position, shape (vocab,), or with --all-logits
of every position, shape (n_tokens, vocab), as float32 .npy.  --greedy N prints N
greedily generated token ids (argmax, first index on ties, like torch.argmax) as
one comma-separated line on stdout.  Everything else goes to stderr.

Everything is computed in float64: HF computes in the checkpoint dtype (RoPE and
softmax in float32), so HF and strata are both approximations of this.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np


class RefError(Exception):
    """A checkpoint or config this reference does not (or cannot) handle."""


# --------------------------------------------------------------------------
# safetensors reading (format: u64 LE header length N, N bytes of JSON
# {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
# then the data; offsets are relative to the first byte after the header).
# --------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "F64": ("<f8", 8)}


def read_safetensors_header(path):
    """-> (data_start, {name: (dtype, shape, begin, end)})"""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise RefError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        size = os.fstat(f.fileno()).st_size
        if 8 + n > size:
            raise RefError(f"{path}: header length {n} runs past the end of the file")
        header = json.loads(f.read(n))
    data_start = 8 + n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = info["dtype"], tuple(info["shape"])
        begin, end = info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise RefError(f"{path}: tensor {name} has dtype {dtype}; only F32/F16/BF16 (and F64) are supported")
        if end - begin != math.prod(shape) * SAFETENSORS_DTYPES[dtype][1] or data_start + end > size:
            raise RefError(f"{path}: tensor {name} has bad data_offsets {begin},{end} for {dtype}{list(shape)}")
        entries[name] = (dtype, shape, data_start + begin, data_start + end)
    return entries


def decode_tensor(raw, dtype, shape):
    """raw bytes -> float64 array of `shape`."""
    np_dtype, _ = SAFETENSORS_DTYPES[dtype]
    a = np.frombuffer(raw, dtype=np_dtype)
    if dtype == "BF16":
        # bfloat16 is the upper half of a float32: widen the bits, reinterpret.
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float64).reshape(shape)


class Checkpoint:
    """Tensors of an HF checkpoint dir, decoded to float64 on first access."""

    def __init__(self, model_dir):
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        elif os.path.exists(os.path.join(model_dir, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            raise RefError(f"{model_dir}: no model.safetensors nor model.safetensors.index.json")
        self.where = {}  # name -> (path, dtype, shape, begin, end)
        for fn in files:
            path = os.path.join(model_dir, fn)
            for name, (dtype, shape, begin, end) in read_safetensors_header(path).items():
                if name in self.where:
                    raise RefError(f"tensor {name} is in both {self.where[name][0]} and {path}")
                self.where[name] = (path, dtype, shape, begin, end)
        self.cache = {}

    def __contains__(self, name):
        return name in self.where

    def get(self, name, shape):
        """The tensor `name` as float64, checked to have `shape`."""
        if name not in self.where:
            raise RefError(f"checkpoint has no tensor {name}")
        path, dtype, stored_shape, begin, end = self.where[name]
        if stored_shape != tuple(shape):
            raise RefError(f"tensor {name} has shape {list(stored_shape)}, config implies {list(shape)}")
        if name not in self.cache:
            with open(path, "rb") as f:
                f.seek(begin)
                self.cache[name] = decode_tensor(f.read(end - begin), dtype, stored_shape)
        return self.cache[name]


# --------------------------------------------------------------------------
# config.json -> the few numbers the forward pass needs, with the defaults of
# LlamaConfig / MistralConfig / Qwen2Config for keys a config.json leaves out.
# --------------------------------------------------------------------------

ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}

HF_DEFAULTS = {
    # configuration_llama.py: num_key_value_heads None -> num_attention_heads
    "llama": dict(rms_norm_eps=1e-6, num_key_value_heads=None,
                  tie_word_embeddings=False, hidden_act="silu", attention_bias=False, mlp_bias=False),
    # configuration_mistral.py: note num_key_value_heads=8 and sliding_window=4096
    "mistral": dict(rms_norm_eps=1e-6, num_key_value_heads=8,
                    tie_word_embeddings=False, hidden_act="silu", sliding_window=4096),
    # configuration_qwen2.py
    "qwen2": dict(rms_norm_eps=1e-6, num_key_value_heads=32,
                  tie_word_embeddings=False, hidden_act="silu", use_sliding_window=False,
                  sliding_window=4096, max_window_layers=28),
}


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    archs = raw.get("architectures") or []
    arch = ARCHS.get(archs[0]) if archs else None
    if arch is None:
        arch = raw.get("model_type")
    if arch not in HF_DEFAULTS:
        raise RefError(f"unsupported model: architectures={archs} model_type={raw.get('model_type')!r}; "
                       "supported: " + ", ".join(ARCHS))
    c = dict(HF_DEFAULTS[arch])
    c.update(raw)
    c["arch"] = arch
    if c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    if c["hidden_act"] != "silu":
        raise RefError(f"hidden_act {c['hidden_act']!r} not supported (only silu)")
    # LlamaAttention / MistralAttention / Qwen2Attention: head_dim from config, else hidden/heads.
    if c.get("head_dim") is None:
        c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    if c["num_attention_heads"] % c["num_key_value_heads"]:
        raise RefError("num_attention_heads is not a multiple of num_key_value_heads")
    c["layer_windows"] = layer_sliding_windows(c)
    return c


def layer_sliding_windows(c):
    """Per layer: the sliding window size, or None for full causal attention."""
    n = c["num_hidden_layers"]
    if c["arch"] == "llama":
        return [None] * n
    if c["arch"] == "mistral":
        # MistralModel.forward: create_sliding_window_causal_mask for every layer
        # when config.sliding_window is not None, else create_causal_mask.
        return [c["sliding_window"]] * n
    # Qwen2Config: sliding_window = sliding_window if use_sliding_window else None;
    # layer_types default: "sliding_attention" for layers i >= max_window_layers.
    window = c["sliding_window"] if c["use_sliding_window"] else None
    types = c.get("layer_types")
    if types is None:
        types = ["sliding_attention" if window is not None and i >= c["max_window_layers"]
                 else "full_attention" for i in range(n)]
    if len(types) != n:
        raise RefError(f"layer_types has {len(types)} entries for {n} layers")
    out = []
    for t in types:
        if t == "full_attention":
            out.append(None)
        elif t == "sliding_attention":
            if window is None:
                raise RefError("layer_types asks for sliding_attention but use_sliding_window/sliding_window is unset")
            out.append(window)
        else:
            raise RefError(f"unknown layer type {t!r}")
    return out


# --------------------------------------------------------------------------
# The ops, one function each.  T = number of tokens, H = hidden_size,
# nh = num_attention_heads, nkv = num_key_value_heads, hd = head_dim.
# --------------------------------------------------------------------------

def rms_norm(x, weight, eps):
    """LlamaRMSNorm.forward: x * rsqrt(mean(x^2) + eps) * weight.  x: (T, H)."""
    variance = np.mean(x * x, axis=-1, keepdims=True)  # (T, 1)
    return x / np.sqrt(variance + eps) * weight  # (T, H)


def linear(x, weight, bias=None):
    """nn.Linear: x @ W^T (+ b).  x: (T, in), weight: (out, in) -> (T, out)."""
    y = x @ weight.T
    return y if bias is None else y + bias


def silu(x):
    """ACT2FN["silu"] = x * sigmoid(x)."""
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative x gives 0, correctly
        return x / (1.0 + np.exp(-x))


def rope_inv_freq(c):
    """modeling_rope_utils: inverse frequencies, shape (hd/2,), for the config's rope type.

    _compute_default_rope_parameters: 1 / theta^(arange(0, hd, 2) / hd);
    _compute_linear_scaling_rope_parameters: that / factor (same as positions / factor);
    _compute_llama3_parameters: low frequencies / factor, high kept, medium smoothed.
    """
    if c.get("partial_rotary_factor", 1.0) != 1.0:
        raise RefError("partial_rotary_factor != 1 is not supported")
    # transformers >= 5 stores theta and scaling in `rope_parameters`; older in rope_theta/rope_scaling.
    params = c.get("rope_scaling") or c.get("rope_parameters") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise RefError("per-layer-type rope parameters are not supported")
    theta = c.get("rope_theta", params.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))  # "type" is the older spelling

    dim = c["head_dim"]
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float64) / dim))  # (hd/2,)
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / params["factor"]
    if rope_type == "llama3":
        factor = params["factor"]
        low_freq_factor = params["low_freq_factor"]
        high_freq_factor = params["high_freq_factor"]
        old_context_len = params["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        # wavelen > low_freq_wavelen: divide by factor; wavelen < high_freq_wavelen: keep;
        # in between: interpolate with the smooth factor.
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return np.where(is_medium, smoothed, scaled)
    raise RefError(f"rope type {rope_type!r} is not supported (only default, linear, llama3)")


def rope_cos_sin(inv_freq, positions):
    """LlamaRotaryEmbedding.forward: emb = concat(freqs, freqs); -> cos, sin of (T, hd)."""
    freqs = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)  # (T, hd/2)
    emb = np.concatenate([freqs, freqs], axis=-1)  # (T, hd)
    return np.cos(emb), np.sin(emb)


def rotate_half(x):
    """(..., hd): [x1, x2] -> [-x2, x1] with x1, x2 the two halves of the last axis."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """apply_rotary_pos_emb for one tensor.  x: (heads, T, hd), cos/sin: (T, hd)."""
    return x * cos + rotate_half(x) * sin


def attention_allowed(n, window):
    """(T, T) bool: query i may attend key j.

    masking_utils.causal_mask_function: kv_idx <= q_idx; with a window,
    sliding_window_causal_mask_function = and_masks(sliding_window_overlay, causal),
    sliding_window_overlay: kv_idx > q_idx - sliding_window (i.e. i - j < window).
    """
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    return allowed


def softmax(x):
    """Softmax over the last axis; -inf entries get weight 0."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def attention(x, w, c, cos, sin, window):
    """LlamaAttention.forward + eager_attention_forward.  x: (T, H) -> (T, H)."""
    T = x.shape[0]
    nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    q = linear(x, w["q_proj.weight"], w.get("q_proj.bias")).reshape(T, nh, hd).transpose(1, 0, 2)  # (nh, T, hd)
    k = linear(x, w["k_proj.weight"], w.get("k_proj.bias")).reshape(T, nkv, hd).transpose(1, 0, 2)  # (nkv, T, hd)
    v = linear(x, w["v_proj.weight"], w.get("v_proj.bias")).reshape(T, nkv, hd).transpose(1, 0, 2)  # (nkv, T, hd)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # repeat_kv: kv head g serves query heads g*n_rep .. g*n_rep + n_rep - 1.
    n_rep = nh // nkv
    k = np.repeat(k, n_rep, axis=0)  # (nh, T, hd)
    v = np.repeat(v, n_rep, axis=0)  # (nh, T, hd)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # (nh, T, T)
    scores = np.where(attention_allowed(T, window), scores, -np.inf)
    out = softmax(scores) @ v  # (nh, T, hd)
    out = out.transpose(1, 0, 2).reshape(T, nh * hd)  # (T, nh*hd)
    return linear(out, w["o_proj.weight"], w.get("o_proj.bias"))  # (T, H)


def mlp(x, w):
    """LlamaMLP.forward: down(silu(gate(x)) * up(x)).  x: (T, H) -> (T, H)."""
    gate = linear(x, w["gate_proj.weight"], w.get("gate_proj.bias"))  # (T, I)
    up = linear(x, w["up_proj.weight"], w.get("up_proj.bias"))  # (T, I)
    return linear(silu(gate) * up, w["down_proj.weight"], w.get("down_proj.bias"))  # (T, H)


def decoder_layer(h, w, c, cos, sin, window):
    """LlamaDecoderLayer.forward (pre-norm residual blocks).  h: (T, H) -> (T, H)."""
    eps = c["rms_norm_eps"]
    h = h + attention(rms_norm(h, w["input_layernorm.weight"], eps), w, c, cos, sin, window)
    h = h + mlp(rms_norm(h, w["post_attention_layernorm.weight"], eps), w)
    return h


# --------------------------------------------------------------------------
# Weights and the whole model
# --------------------------------------------------------------------------

def layer_weights(ckpt, c, i):
    """{short name: float64 array} for layer i, biases only where the HF module has them."""
    H, I = c["hidden_size"], c["intermediate_size"]
    nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    shapes = {
        "input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,),
        "q_proj.weight": (nh * hd, H), "k_proj.weight": (nkv * hd, H),
        "v_proj.weight": (nkv * hd, H), "o_proj.weight": (H, nh * hd),
        "gate_proj.weight": (I, H), "up_proj.weight": (I, H), "down_proj.weight": (H, I),
    }
    # Which Linear layers have bias=True in HF: Qwen2 q/k/v always; Llama q/k/v/o with
    # attention_bias and gate/up/down with mlp_bias; Mistral none.
    biased = []
    if c["arch"] == "qwen2":
        biased = ["q_proj", "k_proj", "v_proj"]
    elif c["arch"] == "llama":
        biased = (["q_proj", "k_proj", "v_proj", "o_proj"] if c["attention_bias"] else []) + \
                 (["gate_proj", "up_proj", "down_proj"] if c["mlp_bias"] else [])
    for b in biased:
        shapes[b + ".bias"] = (shapes[b + ".weight"][0],)

    def full(short):  # "q_proj.weight" -> "model.layers.{i}.self_attn.q_proj.weight"
        module = short.split(".")[0]
        sub = "mlp." if module in ("gate_proj", "up_proj", "down_proj") else \
              "self_attn." if module in ("q_proj", "k_proj", "v_proj", "o_proj") else ""
        return f"model.layers.{i}.{sub}{short}"
    w = {short: ckpt.get(full(short), shape) for short, shape in shapes.items()}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        if proj not in biased and full(proj + ".bias") in ckpt:
            print(f"forward_ref: note: {full(proj + '.bias')} is ignored, as HF's {c['arch']} model has no such bias",
                  file=sys.stderr)
    return w


def lm_head_weight(ckpt, c):
    """lm_head.weight, or model.embed_tokens.weight when tied (tie_word_embeddings) or absent."""
    shape = (c["vocab_size"], c["hidden_size"])
    if c["tie_word_embeddings"]:
        if "lm_head.weight" in ckpt:
            print("forward_ref: note: tie_word_embeddings is true, so lm_head.weight is ignored and the "
                  "embedding matrix is used", file=sys.stderr)
        return ckpt.get("model.embed_tokens.weight", shape)
    if "lm_head.weight" not in ckpt:
        print("forward_ref: note: no lm_head.weight and tie_word_embeddings is false; using the embedding "
              "matrix (HF would leave lm_head randomly initialised)", file=sys.stderr)
        return ckpt.get("model.embed_tokens.weight", shape)
    return ckpt.get("lm_head.weight", shape)


class Model:
    def __init__(self, model_dir):
        self.c = load_config(model_dir)
        self.ckpt = Checkpoint(model_dir)
        c = self.c
        self.embed = self.ckpt.get("model.embed_tokens.weight", (c["vocab_size"], c["hidden_size"]))
        self.layers = [layer_weights(self.ckpt, c, i) for i in range(c["num_hidden_layers"])]
        self.norm = self.ckpt.get("model.norm.weight", (c["hidden_size"],))
        self.lm_head = lm_head_weight(self.ckpt, c)
        self.inv_freq = rope_inv_freq(c)

    def hidden(self, tokens):
        """LlamaModel.forward: final-normed hidden states, (T, H)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise RefError("need at least one token")
        if tokens.min() < 0 or tokens.max() >= self.c["vocab_size"]:
            raise RefError(f"token ids must be in [0, {self.c['vocab_size']})")
        h = self.embed[tokens]  # (T, H)
        cos, sin = rope_cos_sin(self.inv_freq, np.arange(len(tokens)))  # position_ids = 0..T-1
        for w, window in zip(self.layers, self.c["layer_windows"]):
            h = decoder_layer(h, w, self.c, cos, sin, window)
        return rms_norm(h, self.norm, self.c["rms_norm_eps"])

    def logits(self, tokens):
        """LlamaForCausalLM.forward: (T, vocab)."""
        return linear(self.hidden(tokens), self.lm_head)

    def greedy(self, tokens, n):
        """n argmax tokens, appended one at a time (full recompute each step)."""
        seq, out = list(tokens), []
        for _ in range(n):
            nxt = int(np.argmax(self.logits(seq)[-1]))
            seq.append(nxt)
            out.append(nxt)
        return out


def parse_tokens(s):
    try:
        return [int(t) for t in s.split(",") if t.strip() != ""]
    except ValueError:
        raise RefError(f"--tokens must be comma-separated integers, got {s!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="float64 numpy reference of the HF forward pass "
                                 "(Llama / Mistral / Qwen2 for causal LM)")
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,15043,3186")
    ap.add_argument("--all-logits", action="store_true", help="write logits of every position")
    ap.add_argument("--out", help="write logits here as float32 .npy")
    ap.add_argument("--greedy", type=int, default=0, metavar="N", help="print N greedy token ids on stdout")
    args = ap.parse_args(argv)
    try:
        tokens = parse_tokens(args.tokens)
        model = Model(args.model_dir)
        logits = model.logits(tokens)  # (T, vocab)
        result = logits if args.all_logits else logits[-1]
        if args.out:
            np.save(args.out, result.astype(np.float32))
        print(f"forward_ref: {model.c['arch']} {model.c['num_hidden_layers']} layers, {len(tokens)} tokens, "
              f"last-position argmax {int(np.argmax(logits[-1]))}", file=sys.stderr)
        if args.greedy > 0:
            print(",".join(str(t) for t in model.greedy(tokens, args.greedy)))
    except (RefError, OSError, KeyError, ValueError) as e:
        msg = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        print(f"forward_ref: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
