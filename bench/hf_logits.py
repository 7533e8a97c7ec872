#!/usr/bin/env python3
"""Logits and greedy tokens from Hugging Face transformers, the judge of strata's CUDA runtime.

  hf_logits.py --tokens 1,7,42 --job DIR:DTYPE:OUT.npy[:GREEDY_N] [--job ...] [--device cuda]

For each job: loads the HF checkpoint DIR (e.g. written by `strata export`) with
AutoModelForCausalLM in DTYPE (bfloat16 | float16 | float32), runs the prompt, and
saves every position's logits as float32 .npy of shape (n_tokens, vocab) to OUT.npy.
With GREEDY_N, also decodes N tokens greedily (argmax, first index on ties; no EOS
stop, KV cache reused) and prints "OUT.npy: t1,t2,..." on stdout. Several jobs share
one process, so torch and transformers are imported once.
"""

import argparse
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def load(path, dtype, device):
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)  # transformers >= 4.56
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype)
    return model.to(device).eval()


@torch.no_grad()
def run(model, tokens, greedy, device):
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    out = model(input_ids=ids, use_cache=True)
    logits = out.logits[0].float().cpu().numpy()
    gen = []
    past = out.past_key_values
    nxt = int(torch.argmax(out.logits[0, -1]).item())
    for i in range(greedy):
        gen.append(nxt)
        if i + 1 == greedy:
            break
        out = model(input_ids=torch.tensor([[nxt]], device=device), past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = int(torch.argmax(out.logits[0, -1]).item())
    return logits, gen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True, help="prompt token ids, comma-separated")
    ap.add_argument("--job", action="append", required=True, help="DIR:DTYPE:OUT.npy[:GREEDY_N]")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    tokens = [int(t) for t in a.tokens.split(",")]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {a.device}", file=sys.stderr)
    status = 0
    for job in a.job:
        parts = job.split(":")
        if len(parts) not in (3, 4) or parts[1] not in DTYPES:
            print(f"bad --job {job!r}: want DIR:DTYPE:OUT.npy[:GREEDY_N]", file=sys.stderr)
            return 2
        path, dtype, out = parts[0], DTYPES[parts[1]], parts[2]
        greedy = int(parts[3]) if len(parts) == 4 else 0
        try:
            t0 = time.time()
            model = load(path, dtype, a.device)
            t1 = time.time()
            logits, gen = run(model, tokens, greedy, a.device)
            np.save(out, logits.astype(np.float32))
            print(f"{out}: {','.join(map(str, gen))}")
            print(f"{path} ({parts[1]}): load {t1 - t0:.1f} s, run {time.time() - t1:.1f} s", file=sys.stderr)
            del model
            if a.device == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # report and go on with the other jobs
            print(f"{job}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            status = 1
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
