#!/usr/bin/python3
"""float64 reference of llama-perplexity's perplexity, on forward_ref.py's forward pass.

  perplexity_ref.py MODEL_DIR --ids FILE [--ctx 512] [--chunks N] [--bos ID]

FILE holds the text's token ids (BOS first) as little-endian uint16, as the fixture's
heldout.ids. The method is llama.cpp's examples/perplexity/perplexity.cpp, read, not shared:
chunks of ctx tokens (the tail that fills none is dropped), each with its first token
replaced by BOS and run alone; the logits at positions ctx/2 .. ctx-2 score the next token;
PPL = exp(mean NLL). Prints JSON: ppl, nll_sum, scored_tokens, chunks.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0)
    ap.add_argument("--bos", type=int)
    a = ap.parse_args()
    ids = np.fromfile(a.ids, dtype="<u2").astype(np.int64)
    model = forward_ref.Model(a.model_dir)
    bos = a.bos if a.bos is not None else model.c.get("bos_token_id")
    n_chunk = len(ids) // a.ctx
    if a.chunks:
        n_chunk = min(n_chunk, a.chunks)
    first = a.ctx // 2
    nll, count = 0.0, 0
    for c in range(n_chunk):
        chunk = ids[c * a.ctx:(c + 1) * a.ctx].copy()
        if bos is not None:
            chunk[0] = bos
        logits = model.logits(chunk)[first:a.ctx - 1]
        mx = logits.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
        tgt = chunk[first + 1:a.ctx]
        nll += float((lse - logits[np.arange(len(tgt)), tgt]).sum())
        count += len(tgt)
        print(f"perplexity_ref: chunk {c + 1}/{n_chunk}: ppl {math.exp(nll / count):.6f}", file=sys.stderr)
    print(json.dumps({"ppl": math.exp(nll / count), "nll_sum": nll, "scored_tokens": count, "chunks": n_chunk}))


if __name__ == "__main__":
    main()
