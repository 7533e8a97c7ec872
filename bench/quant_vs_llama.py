#!/usr/bin/python3
"""Compares a strata quantized variant with a GGUF that llama-quantize wrote, tensor by tensor.

  quant_vs_llama.py STORE VARIANT FILE.gguf [--gguf-py DIR]

For every tensor of the GGUF it finds the variant's tensor of the same role (blk.N.attn_q.weight
is model.layers.N.self_attn.q_proj.weight, ...) and checks that both have the same GGML type and
the same bytes. attn_q and attn_k rows are in the order llama.cpp's converter permutes them into;
a row's blocks depend only on that row, so strata's rows are permuted the same way before the
comparison. Prints one JSON object: tensors compared, identical, the first differences. Reads the
store's files directly (refs, nodes, blobs: formats/STORE_FORMAT.md) and the GGUF with llama.cpp's
gguf-py. Exit 0 when every tensor is identical.
"""

import argparse
import json
import os
import sys

import numpy as np

ROLE = {
    "attn_q": "self_attn.q_proj.weight", "attn_k": "self_attn.k_proj.weight",
    "attn_v": "self_attn.v_proj.weight", "attn_output": "self_attn.o_proj.weight",
    "ffn_gate": "mlp.gate_proj.weight", "ffn_up": "mlp.up_proj.weight", "ffn_down": "mlp.down_proj.weight",
    "attn_norm": "input_layernorm.weight", "ffn_norm": "post_attention_layernorm.weight",
}
NON_LAYER = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


def fan(root, kind, h):
    return os.path.join(root, kind, h[:2], h)


def node(root, h):
    with open(fan(root, "nodes", h)) as f:
        return json.load(f)


def strata_tensors(root, variant):
    with open(os.path.join(root, "refs", variant)) as f:
        v = node(root, f.read().strip())
    out = {}
    for t in v["pre"] + v["post"]:
        out[t["name"]] = t["tensor"]
    for i, l in enumerate(v["layers"]):
        for role, h in node(root, l["layer"])["tensors"].items():
            out["model.layers.%d.%s" % (i, role)] = h
    cfg = json.load(open(fan(root, "blobs", v["config"])))
    return out, cfg


def permute_rows(rows, n_head):
    # convert_hf_to_gguf's LlamaModel.permute, on whole rows.
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, -1).swapaxes(1, 2).reshape(rows.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("variant")
    ap.add_argument("gguf")
    ap.add_argument("--gguf-py", default="/tmp/llama.cpp/gguf-py")
    a = ap.parse_args()
    sys.path.insert(0, a.gguf_py)
    from gguf import GGUFReader  # noqa: E402

    tensors, cfg = strata_tensors(a.store, a.variant)
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    r = GGUFReader(a.gguf)
    report = {"gguf": a.gguf, "variant": a.variant, "compared": 0, "identical": 0, "types": {}, "differences": []}
    for t in r.tensors:
        name = t.name
        if name in NON_LAYER:
            hf = NON_LAYER[name]
        else:
            _, n, role, _w = name.split(".")
            hf = "model.layers.%s.%s" % (n, ROLE[role])
        gtype = t.tensor_type.name
        if hf not in tensors:
            report["differences"].append({"tensor": name, "problem": "absent from the variant"})
            continue
        tn = node(a.store, tensors[hf])
        stype = tn.get("quant", tn["dtype"])
        report["compared"] += 1
        report["types"][gtype] = report["types"].get(gtype, 0) + 1
        if tn["op"] != "quant":
            # Kept as they are by both (norms: F32 in the GGUF, the variant's dtype in strata).
            if gtype in ("F32", "F16", "BF16"):
                report["identical"] += 1
            else:
                report["differences"].append({"tensor": name, "problem": "gguf %s, strata %s" % (gtype, stype)})
            continue
        if stype != gtype:
            report["differences"].append({"tensor": name, "problem": "gguf %s, strata %s" % (gtype, stype)})
            continue
        mine = np.fromfile(fan(a.store, "blobs", tn["blob"]), dtype=np.uint8)
        rows = tn["shape"][0]
        mine = mine.reshape(rows, -1)
        if name.endswith("attn_q.weight"):
            mine = permute_rows(mine, heads)
        elif name.endswith("attn_k.weight"):
            mine = permute_rows(mine, kv)
        theirs = np.asarray(t.data).view(np.uint8).reshape(rows, -1)
        if mine.shape == theirs.shape and np.array_equal(mine, theirs):
            report["identical"] += 1
        else:
            diff = int(np.count_nonzero(mine != theirs)) if mine.shape == theirs.shape else -1
            report["differences"].append({"tensor": name, "problem": "%d bytes differ" % diff})
    report["differences"] = report["differences"][:20]
    print(json.dumps(report, indent=1))
    return 0 if report["identical"] == report["compared"] and not report["differences"] else 1


if __name__ == "__main__":
    sys.exit(main())
