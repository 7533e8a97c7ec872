#!/usr/bin/env python3
"""Weight bytes one batch-1 decode step reads from an HF checkpoint, computing every layer.

  decode_bytes.py DIR [--label NAME]     prints {"label": ..., "dense_decode_bytes_per_token": N, ...}

From the safetensors headers only (no tensor data is read): every model.layers.* tensor, the
final norm, lm_head.weight (the embedding table when the embeddings are tied) and one row of
the embedding table. This is what an engine that runs every layer reads per token (HF
transformers); strata elides layers whose o_proj and down_proj are zero, so for a block
expansion its figure is the base's. Standard library only.
"""

import argparse
import glob
import json
import os
import struct
import sys


def tensors(ckpt):
    """name -> (shape, bytes) over every *.safetensors file of `ckpt`."""
    out = {}
    for path in sorted(glob.glob(os.path.join(ckpt, "*.safetensors"))):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                out[name] = (t["shape"], t["data_offsets"][1] - t["data_offsets"][0])
    return out


def dense_decode_bytes(ckpt):
    ts = tensors(ckpt)
    if "model.embed_tokens.weight" not in ts:
        raise ValueError(f"{ckpt}: no model.embed_tokens.weight in its safetensors files")
    shape, embed = ts["model.embed_tokens.weight"]
    n = sum(b for name, (_, b) in ts.items() if name.startswith("model.layers."))
    n += ts.get("model.norm.weight", (None, 0))[1]
    n += ts["lm_head.weight"][1] if "lm_head.weight" in ts else embed
    return n + embed // shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    layers = {int(k.split(".")[2]) for k in tensors(a.dir) if k.startswith("model.layers.")}
    print(json.dumps({"label": a.label, "dir": a.dir, "layers": len(layers),
                      "dense_decode_bytes_per_token": dense_decode_bytes(a.dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
