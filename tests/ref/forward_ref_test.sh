#!/usr/bin/env bash
# Tests of tests/ref/forward_ref.py (the float64 HF forward-pass reference) on tiny
# checkpoints built here with numpy: properties that hold whatever the
# implementation (zeroed blocks give back the embedding, causality, RoPE depends
# only on position differences, sliding window reach, tied embeddings, Qwen2
# biases, GQA head mapping, dtype and shard handling), plus a loop-by-loop naive
# second implementation for small models.  If a strata binary is there, also runs
# the reference on `strata synth` checkpoints of each architecture.
# usage: forward_ref_test.sh [STRATA_BIN]    (default: <repo>/build/strata)
# Exits 0 when all pass; the last line is "N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$HERE/../../build/strata}
PY=${STRATA_PYTHON3:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1  # importing forward_ref must leave no __pycache__ here
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

"$PY" - "$HERE" "$T" > "$T/log" 2>&1 <<'EOF'
import json, math, os, subprocess, sys
import numpy as np

HERE, TMP = sys.argv[1], sys.argv[2]
REF = os.path.join(HERE, "forward_ref.py")
sys.path.insert(0, HERE)
import forward_ref as fr


def check(name, cond, detail=""):
    print(("ok: " if cond else "FAIL: ") + name + ("" if cond else f"  [{detail}]"), flush=True)


# ---------- building checkpoints (own safetensors writer, independent of the reader) ----------

def encode(a, dtype):
    a = np.asarray(a, dtype=np.float64)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    if dtype == "BF16":  # truncate the float32 bits (values here are chosen bf16-exact)
        return (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    raise ValueError(dtype)


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        raw = encode(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(np.shape(tensors[name])), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


counter = [0]


def save(cfg, tensors, dtype="F32", shards=1):
    counter[0] += 1
    d = os.path.join(TMP, f"m{counter[0]}")
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, dtype)
    else:
        names = sorted(tensors)
        wm = {}
        for s in range(shards):
            fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            write_safetensors(os.path.join(d, fn), part, dtype)
            wm.update({n: fn for n in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wm}, f)
    return d


def bf16_exact(a):
    """Round to values bf16, f16 and f32 all hold exactly (8 significant bits, modest range)."""
    a = np.asarray(a, dtype=np.float64)
    return np.round(a * 64) / 64


ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def make_model(arch, L=2, H=16, nh=4, nkv=2, I=32, V=32, hd=None, seed=0, **over):
    rng = np.random.default_rng(seed)
    cfg = {"architectures": [ARCH[arch]], "model_type": arch, "hidden_size": H, "intermediate_size": I,
           "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
           "max_position_embeddings": 4096, "tie_word_embeddings": False}
    if arch == "mistral":
        cfg["sliding_window"] = None
    if hd is not None:
        cfg["head_dim"] = hd
    cfg.update(over)
    hd = hd or H // nh
    w = lambda *s: bf16_exact(rng.normal(0, 0.5, s))
    t = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": 1 + bf16_exact(rng.normal(0, 0.1, H)),
         "lm_head.weight": w(V, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": 1 + bf16_exact(rng.normal(0, 0.1, H)),
                  p + "post_attention_layernorm.weight": 1 + bf16_exact(rng.normal(0, 0.1, H)),
                  p + "self_attn.q_proj.weight": w(nh * hd, H), p + "self_attn.k_proj.weight": w(nkv * hd, H),
                  p + "self_attn.v_proj.weight": w(nkv * hd, H), p + "self_attn.o_proj.weight": w(H, nh * hd),
                  p + "mlp.gate_proj.weight": w(I, H), p + "mlp.up_proj.weight": w(I, H),
                  p + "mlp.down_proj.weight": w(H, I)})
        if arch == "qwen2":
            t.update({p + "self_attn.q_proj.bias": w(nh * hd), p + "self_attn.k_proj.bias": w(nkv * hd),
                      p + "self_attn.v_proj.bias": w(nkv * hd)})
    return cfg, t


def run(d, tokens, all_logits=True, greedy=0):
    out = os.path.join(TMP, "logits.npy")
    if os.path.exists(out):
        os.remove(out)
    cmd = [sys.executable, REF, d, "--tokens", ",".join(map(str, tokens)), "--out", out]
    if all_logits:
        cmd.append("--all-logits")
    if greedy:
        cmd += ["--greedy", str(greedy)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"forward_ref failed ({p.returncode}): {p.stderr.strip()}")
    logits = np.load(out)
    gen = [int(x) for x in p.stdout.strip().split(",")] if greedy else None
    return logits, gen


def run_err(d, tokens):
    p = subprocess.run([sys.executable, REF, d, "--tokens", ",".join(map(str, tokens))], capture_output=True, text=True)
    return p.returncode, p.stderr


def close(a, b, tol=1e-5):
    """float32 outputs: equal up to float32 rounding of O(1..10) values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b)))


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


TOK = [3, 17, 5, 29, 0, 11]


def test(name):
    def deco(f):
        try:
            f()
        except Exception as e:  # a crash is a failure of that test, not of the whole run
            check(name, False, f"{type(e).__name__}: {e}")
        return f
    return deco


# ---------- (a) zero o_proj and down_proj: every block adds 0, final hidden = embedding ----------
for arch in ("llama", "mistral", "qwen2"):
    @test(f"(a) {arch}: zero o_proj/down_proj -> logits = lm_head @ rmsnorm(embed[token])")
    def _():
        cfg, t = make_model(arch, seed=1)
        for k in t:
            if k.endswith("o_proj.weight") or k.endswith("down_proj.weight"):
                t[k] = np.zeros_like(t[k])
        logits, _ = run(save(cfg, t), TOK)
        E = t["model.embed_tokens.weight"]
        want = norm(E[TOK], t["model.norm.weight"], cfg["rms_norm_eps"]) @ t["lm_head.weight"].T
        check(f"(a) {arch}: zero o_proj/down_proj -> logits = lm_head @ rmsnorm(embed[token])",
              close(logits, want, 1e-6), f"max diff {maxdiff(logits, want)}")

# ---------- (b) causality ----------
for arch in ("llama", "mistral", "qwen2"):
    @test(f"(b) {arch}: logits at i do not depend on tokens after i")
    def _():
        cfg, t = make_model(arch, seed=2)
        d = save(cfg, t)
        a, _ = run(d, [3, 17, 5, 29, 0, 11])
        b, _ = run(d, [3, 17, 5, 8, 30, 1])
        check(f"(b) {arch}: logits at i do not depend on tokens after i", close(a[:3], b[:3], 1e-6),
              f"max diff {maxdiff(a[:3], b[:3])}")
        check(f"(b) {arch}: ...and do depend on tokens at/before i", maxdiff(a[3:], b[3:]) > 1e-3)

# ---------- (c) RoPE ----------
@test("(c) rope: q.k depends only on the position difference")
def _():
    rng = np.random.default_rng(3)
    base = {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16, "rope_theta": 10000.0}
    cfgs = {"default": base,
            "linear": dict(base, rope_scaling={"type": "linear", "factor": 4.0}),
            "llama3": dict(base, rope_theta=500000.0, rope_scaling={
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64})}
    for kind, c in cfgs.items():
        inv = fr.rope_inv_freq(c)
        q, k = rng.normal(size=(1, 1, 16)), rng.normal(size=(1, 1, 16))
        worst = 0.0
        for m, n, s in [(0, 0, 5), (3, 1, 7), (1, 9, 100), (10, 2, 1000), (0, 37, 12345)]:
            def dot(pm, pn):
                cm, sm = fr.rope_cos_sin(inv, [pm])
                cn, sn = fr.rope_cos_sin(inv, [pn])
                return float(np.sum(fr.apply_rope(q, cm, sm) * fr.apply_rope(k, cn, sn)))
            worst = max(worst, abs(dot(m, n) - dot(m + s, n + s)))
        check(f"(c) rope {kind}: q.k invariant under shifting both positions", worst < 1e-9, f"worst {worst}")
        c0, s0 = fr.rope_cos_sin(inv, [0])
        check(f"(c) rope {kind}: position 0 is the identity", np.allclose(fr.apply_rope(q, c0, s0), q, atol=0))
        c5, s5 = fr.rope_cos_sin(inv, [5])
        check(f"(c) rope {kind}: rotation keeps the norm",
              abs(np.linalg.norm(fr.apply_rope(q, c5, s5)) - np.linalg.norm(q)) < 1e-12)


@test("(c) rope: HF half-split layout")
def _():
    # rotate_half layout: dims i and i + hd/2 form a rotated pair with angle p * inv_freq[i].
    c = {"hidden_size": 8, "num_attention_heads": 1, "rope_theta": 100.0, "head_dim": 8}
    inv = fr.rope_inv_freq(c)
    want_inv = 100.0 ** (-np.arange(4) * 2 / 8)
    check("(c) rope: inv_freq = theta^(-2i/hd)", np.allclose(inv, want_inv, rtol=1e-15))
    p = 3
    cos, sin = fr.rope_cos_sin(inv, [p])
    for i in range(4):
        x = np.zeros((1, 1, 8)); x[..., i] = 1.0
        y = fr.apply_rope(x, cos, sin)[0, 0]
        want = np.zeros(8); want[i] = math.cos(p * want_inv[i]); want[i + 4] = math.sin(p * want_inv[i])
        check(f"(c) rope: unit vector e{i} rotates into (e{i}, e{i + 4})", np.allclose(y, want, atol=1e-15), y)


@test("(c) rope scaling: linear and llama3")
def _():
    base = {"hidden_size": 512, "num_attention_heads": 4, "head_dim": 128, "rope_theta": 500000.0}
    inv = fr.rope_inv_freq(base)
    lin = fr.rope_inv_freq(dict(base, rope_scaling={"rope_type": "linear", "factor": 4.0}))
    a = fr.rope_cos_sin(lin, np.arange(10))
    b = fr.rope_cos_sin(inv, np.arange(10) / 4.0)
    check("(c) linear: positions / factor", np.allclose(a[0], b[0], atol=1e-14) and np.allclose(a[1], b[1], atol=1e-14))
    sc = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
    l3 = fr.rope_inv_freq(dict(base, rope_scaling=sc))
    wl = 2 * math.pi / inv
    hi, lo = wl < 8192 / 4, wl > 8192 / 1
    mid = ~hi & ~lo
    check("(c) llama3: short wavelengths kept", np.array_equal(l3[hi], inv[hi]) and hi.any())
    check("(c) llama3: long wavelengths divided by factor", np.allclose(l3[lo], inv[lo] / 8, rtol=1e-15) and lo.any())
    check("(c) llama3: medium ones strictly in between",
          mid.any() and np.all(l3[mid] < inv[mid]) and np.all(l3[mid] > inv[mid] / 8))
    # continuity: the smoothing is 0 at wavelen = orig/low and 1 at wavelen = orig/high
    s = (8192 / wl - 1.0) / (4.0 - 1.0)
    check("(c) llama3: medium = ((1-s)/factor + s) * inv", np.allclose(l3[mid], ((1 - s[mid]) / 8 + s[mid]) * inv[mid]))


@test("(c) unsupported rope type is refused")
def _():
    cfg, t = make_model("llama", rope_scaling={"rope_type": "yarn", "factor": 4.0})
    rc, err = run_err(save(cfg, t), [1, 2])
    check("(c) unsupported rope type (yarn) is refused with a message", rc == 1 and "rope type 'yarn'" in err, err)


# ---------- (d) sliding window ----------
@test("(d) sliding window")
def _():
    toks_a, toks_b = [3, 17, 5, 29, 0], [9, 17, 5, 29, 0]  # differ at position 0 only
    for window, changed in [(2, [0, 1]), (3, [0, 1, 2]), (5, [0, 1, 2, 3, 4]), (None, [0, 1, 2, 3, 4])]:
        cfg, t = make_model("mistral", L=1, seed=4, sliding_window=window)
        d = save(cfg, t)
        a, _ = run(d, toks_a)
        b, _ = run(d, toks_b)
        got = [i for i in range(5) if maxdiff(a[i], b[i]) > 1e-6]
        check(f"(d) mistral 1 layer, sliding_window={window}: changing token 0 changes positions {changed}",
              got == changed, f"changed: {got}")
    # Qwen2: window only with use_sliding_window, and only for layers >= max_window_layers.
    for use, mwl, changed in [(True, 0, [0, 1]), (True, 1, [0, 1, 2, 3, 4]), (False, 0, [0, 1, 2, 3, 4])]:
        cfg, t = make_model("qwen2", L=1, seed=4, sliding_window=2, use_sliding_window=use, max_window_layers=mwl)
        d = save(cfg, t)
        a, _ = run(d, toks_a)
        b, _ = run(d, toks_b)
        got = [i for i in range(5) if maxdiff(a[i], b[i]) > 1e-6]
        check(f"(d) qwen2 1 layer, window 2, use_sliding_window={use}, max_window_layers={mwl}: "
              f"token 0 reaches {changed}", got == changed, f"changed: {got}")
    # Llama has no sliding window; a stray key is ignored.
    cfg, t = make_model("llama", L=1, seed=4, sliding_window=2)
    d = save(cfg, t)
    a, _ = run(d, toks_a)
    b, _ = run(d, toks_b)
    check("(d) llama ignores sliding_window", maxdiff(a[4], b[4]) > 1e-6)
    # Through 2 layers, window 2 reaches 2 positions further.
    cfg, t = make_model("mistral", L=2, seed=4, sliding_window=2)
    d = save(cfg, t)
    a, _ = run(d, toks_a)
    b, _ = run(d, toks_b)
    got = [i for i in range(5) if maxdiff(a[i], b[i]) > 1e-6]
    check("(d) mistral 2 layers, window 2: token 0 reaches positions 0..2", got == [0, 1, 2], f"changed: {got}")


# ---------- (e) tied embeddings ----------
@test("(e) tied embeddings")
def _():
    cfg, t = make_model("llama", seed=5)
    for k in t:
        if k.endswith("o_proj.weight") or k.endswith("down_proj.weight"):
            t[k] = np.zeros_like(t[k])
    del t["lm_head.weight"]
    cfg["tie_word_embeddings"] = True
    logits, _ = run(save(cfg, t), TOK)
    E = t["model.embed_tokens.weight"]
    want = norm(E[TOK], t["model.norm.weight"], cfg["rms_norm_eps"]) @ E.T
    check("(e) no lm_head + tie_word_embeddings: logits = embed @ h", close(logits, want, 1e-6),
          f"max diff {maxdiff(logits, want)}")
    # Full model: tied == untied with lm_head set to a copy of the embedding.
    cfg, t = make_model("qwen2", seed=6)
    t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()
    a, _ = run(save(cfg, t), TOK)
    del t["lm_head.weight"]
    cfg["tie_word_embeddings"] = True
    b, _ = run(save(cfg, t), TOK)
    check("(e) tied == untied with lm_head = embedding copy", close(a, b, 1e-6), f"max diff {maxdiff(a, b)}")


# ---------- (f) Qwen2 biases; cross-architecture consistency ----------
@test("(f) qwen2 biases")
def _():
    cfg, t = make_model("qwen2", seed=7)
    zero = {k: (np.zeros_like(v) if k.endswith(".bias") else v) for k, v in t.items()}
    z, _ = run(save(cfg, zero), TOK)
    for which in ("q_proj", "k_proj", "v_proj"):
        t2 = dict(zero)
        t2[f"model.layers.0.self_attn.{which}.bias"] = t[f"model.layers.0.self_attn.{which}.bias"]
        a, _ = run(save(cfg, t2), TOK)
        # a k bias shifts every score of a query by the same q.b_k only without RoPE;
        # with RoPE it changes the scores, so all three must show at positions >= 1.
        check(f"(f) qwen2: nonzero {which}.bias changes the output", maxdiff(a[1:], z[1:]) > 1e-4,
              f"max diff {maxdiff(a, z)}")
    # Qwen2 with zero biases == Llama with the same weights (the architectures differ only there).
    lcfg = dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama")
    for k in ("use_sliding_window", "max_window_layers"):
        lcfg.pop(k, None)
    noz = {k: v for k, v in zero.items() if not k.endswith(".bias")}
    l, _ = run(save(lcfg, noz), TOK)
    check("(f) qwen2 with zero biases == llama with the same weights", close(l, z, 1e-6), f"max diff {maxdiff(l, z)}")
    # Mistral with sliding_window null == Llama.
    mcfg = dict(lcfg, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None)
    m, _ = run(save(mcfg, noz), TOK)
    check("(f) mistral without window == llama with the same weights", close(m, l, 1e-6), f"max diff {maxdiff(m, l)}")
    # Llama ignores bias tensors unless attention_bias is set, and uses them when it is.
    lb = dict(noz)
    lb["model.layers.0.self_attn.q_proj.bias"] = t["model.layers.0.self_attn.q_proj.bias"]
    for k in ("k_proj", "v_proj"):
        lb[f"model.layers.0.self_attn.{k}.bias"] = np.zeros_like(t[f"model.layers.0.self_attn.{k}.bias"])
    lb["model.layers.0.self_attn.o_proj.bias"] = np.zeros(cfg["hidden_size"])
    a, _ = run(save(lcfg, lb), TOK)
    check("(f) llama without attention_bias ignores bias tensors", close(a, l, 1e-6))
    lcfg2 = dict(lcfg, attention_bias=True)
    for i in range(1, cfg["num_hidden_layers"]):
        for k, n in (("q_proj", 16), ("k_proj", 8), ("v_proj", 8), ("o_proj", 16)):
            lb[f"model.layers.{i}.self_attn.{k}.bias"] = np.zeros(n)
    a, _ = run(save(lcfg2, lb), TOK)
    check("(f) llama with attention_bias uses them", maxdiff(a, l) > 1e-4)


# ---------- GQA head mapping (repeat_kv) ----------
@test("gqa")
def _():
    # nkv=2 model == nkv=4 model whose kv head h is kv head h // 2 of the first.
    cfg, t = make_model("llama", seed=8, nh=4, nkv=2)
    a, _ = run(save(cfg, t), TOK)
    hd = cfg["hidden_size"] // 4
    t4 = dict(t)
    for i in range(cfg["num_hidden_layers"]):
        for k in ("k_proj", "v_proj"):
            w = t[f"model.layers.{i}.self_attn.{k}.weight"].reshape(2, hd, -1)
            t4[f"model.layers.{i}.self_attn.{k}.weight"] = w[[0, 0, 1, 1]].reshape(4 * hd, -1)
    b, _ = run(save(dict(cfg, num_key_value_heads=4), t4), TOK)
    check("gqa: query head h uses kv head h // (nh/nkv) (repeat_kv)", close(a, b, 1e-6), f"max diff {maxdiff(a, b)}")
    # and it is not the tiled mapping h % nkv
    t4b = dict(t)
    for i in range(cfg["num_hidden_layers"]):
        for k in ("k_proj", "v_proj"):
            w = t[f"model.layers.{i}.self_attn.{k}.weight"].reshape(2, hd, -1)
            t4b[f"model.layers.{i}.self_attn.{k}.weight"] = w[[0, 1, 0, 1]].reshape(4 * hd, -1)
    c, _ = run(save(dict(cfg, num_key_value_heads=4), t4b), TOK)
    check("gqa: ...not h % nkv", maxdiff(a, c) > 1e-4)


# ---------- a naive loop-by-loop second implementation ----------
def naive_logits(cfg, t, tokens, window_of_layer):
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    half, eps = hd // 2, cfg["rms_norm_eps"]
    inv = np.array([cfg["rope_theta"] ** (-2.0 * i / hd) for i in range(half)])

    def rms(x, w):
        return x / math.sqrt(sum(v * v for v in x) / len(x) + eps) * w

    def rot(vec, pos):  # pair (i, i + hd/2) as the complex number vec[i] + 1j*vec[i + hd/2]
        z = (vec[:half] + 1j * vec[half:]) * np.exp(1j * pos * inv)
        return np.concatenate([z.real, z.imag])

    def get(name, default=None):
        return t.get(name, default)

    x = [t["model.embed_tokens.weight"][tok].copy() for tok in tokens]
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        Wq, Wk, Wv, Wo = (t[p + f"self_attn.{k}.weight"] for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
        bq, bk, bv = (get(p + f"self_attn.{k}.bias", 0.0) for k in ("q_proj", "k_proj", "v_proj"))
        window = window_of_layer(L)
        n = [rms(xi, t[p + "input_layernorm.weight"]) for xi in x]
        q = [Wq @ ni + bq for ni in n]
        k = [Wk @ ni + bk for ni in n]
        v = [Wv @ ni + bv for ni in n]
        new = []
        for i in range(len(x)):
            heads = []
            for h in range(nh):
                g = h // (nh // nkv)
                qi = rot(q[i][h * hd:(h + 1) * hd], i)
                js = [j for j in range(len(x)) if j <= i and (window is None or i - j < window)]
                s = np.array([qi @ rot(k[j][g * hd:(g + 1) * hd], j) / math.sqrt(hd) for j in js])
                wts = np.exp(s - s.max()); wts /= wts.sum()
                heads.append(sum(wj * v[j][g * hd:(g + 1) * hd] for wj, j in zip(wts, js)))
            y = x[i] + Wo @ np.concatenate(heads)
            z = rms(y, t[p + "post_attention_layernorm.weight"])
            gate = t[p + "mlp.gate_proj.weight"] @ z
            act = gate / (1 + np.exp(-gate))
            new.append(y + t[p + "mlp.down_proj.weight"] @ (act * (t[p + "mlp.up_proj.weight"] @ z)))
        x = new
    lm = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return np.array([lm @ rms(xi, t["model.norm.weight"]) for xi in x])


for arch, kw, win in [("llama", {}, lambda L: None),
                      ("llama", {"nh": 4, "nkv": 1, "hd": 8, "L": 3}, lambda L: None),
                      ("mistral", {"sliding_window": 3, "L": 3}, lambda L: 3),
                      ("qwen2", {"use_sliding_window": True, "sliding_window": 2, "max_window_layers": 1},
                       lambda L: 2 if L >= 1 else None)]:
    @test(f"naive {arch} {kw}")
    def _():
        cfg, t = make_model(arch, seed=9, **kw)
        got, _ = run(save(cfg, t), TOK + [7, 19, 2])
        want = naive_logits(cfg, t, TOK + [7, 19, 2], win)
        check(f"naive loop implementation agrees: {arch} {kw}", close(got, want, 1e-5), f"max diff {maxdiff(got, want)}")


# ---------- storage: dtypes and shards ----------
@test("storage")
def _():
    cfg, t = make_model("mistral", seed=10, sliding_window=4)
    ref, _ = run(save(cfg, t, "F32"), TOK)
    for dtype, shards in [("BF16", 1), ("F16", 1), ("F32", 3), ("BF16", 2)]:
        got, _ = run(save(cfg, t, dtype, shards), TOK)
        check(f"storage: {dtype} in {shards} file(s) gives the F32 result (values are exact in all)",
              np.array_equal(got, ref), f"max diff {maxdiff(got, ref)}")
    # bf16 decoding: 0x3F80 = 1.0, 0xC000 = -2.0, 0x3E20 = 0.15625
    a = fr.decode_tensor(np.array([0x3F80, 0xC000, 0x3E20], "<u2").tobytes(), "BF16", (3,))
    check("storage: bf16 bits decode", a.tolist() == [1.0, -2.0, 0.15625] and a.dtype == np.float64, a)


# ---------- CLI: last-position output, greedy ----------
@test("cli")
def _():
    cfg, t = make_model("qwen2", seed=11)
    d = save(cfg, t)
    allv, _ = run(d, TOK)
    last, gen = run(d, TOK, all_logits=False, greedy=3)
    check("cli: default output is the last position, shape (vocab,), float32",
          last.shape == (cfg["vocab_size"],) and last.dtype == np.float32 and np.array_equal(last, allv[-1]))
    check("cli: --all-logits shape (n_tokens, vocab)", allv.shape == (len(TOK), cfg["vocab_size"]))
    seq, want = list(TOK), []
    for _ in range(3):
        nxt = int(np.argmax(run(d, seq, all_logits=False)[0]))
        want.append(nxt)
        seq.append(nxt)
    check("cli: --greedy 3 = argmax appended one at a time", gen == want, f"{gen} vs {want}")
    rc, err = run_err(d, [1, cfg["vocab_size"]])
    check("cli: out-of-range token refused", rc == 1 and "token ids" in err, err)
    cfg2 = dict(cfg, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    rc, err = run_err(save(cfg2, t), [1])
    check("cli: unsupported architecture refused", rc == 1 and "unsupported model" in err, err)
    t3 = dict(t)
    del t3["model.layers.1.self_attn.q_proj.bias"]
    rc, err = run_err(save(cfg, t3), [1])
    check("cli: missing qwen2 q_proj.bias refused", rc == 1 and "q_proj.bias" in err, err)
EOF
py_rc=$?
cat "$T/log"
pass=$(grep -c '^ok: ' "$T/log")
fail=$(grep -c '^FAIL: ' "$T/log")
if [ "$py_rc" -ne 0 ]; then echo "FAIL: python test driver exited $py_rc"; fail=$((fail + 1)); fi

# ---------- strata synth checkpoints (real shapes: 32 layers, vocab 256) ----------
if [ -x "$BIN" ]; then
  for spec in "mistral bfloat16" "qwen2 bfloat16" "llama bfloat16" "llama float16 --tie-embeddings" \
              "mistral float32 --shard-size 1000000"; do
    set -- $spec
    arch=$1 dtype=$2; shift 2
    dir=$T/synth-$arch-$dtype
    if ! "$BIN" synth --arch "$arch" --preset tiny --dtype "$dtype" "$@" --out "$dir" -q > /dev/null 2>&1; then
      echo "FAIL: strata synth --arch $arch --dtype $dtype $*"; fail=$((fail + 1)); continue
    fi
    if gen=$("$PY" "$HERE/forward_ref.py" "$dir" --tokens 1,15,27,3 --out "$T/s.npy" --greedy 3 2> "$T/err") &&
       "$PY" -c "import numpy as np, sys; a = np.load(sys.argv[1]); sys.exit(0 if a.shape == (256,) and np.isfinite(a).all() and a.std() > 0 else 1)" "$T/s.npy" &&
       [[ "$gen" =~ ^[0-9]+,[0-9]+,[0-9]+$ ]]; then
      echo "ok: strata synth $arch $dtype $*: runs, logits (256,) finite, greedy $gen"; pass=$((pass + 1))
    else
      echo "FAIL: strata synth $arch $dtype $*: $(cat "$T/err")"; fail=$((fail + 1))
    fi
  done
else
  echo "skip: no strata binary at $BIN"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
