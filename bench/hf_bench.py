#!/usr/bin/env python3
"""Hugging Face transformers on one checkpoint, measured as `strata bench` measures strata.

  hf_bench.py DIR --label NAME [--prefill 512,2048] [--decode 256] [--device cuda] [--dtype bfloat16]

Prints one JSON object on stdout. Run one process per model: the host peak RSS is the process's.

- ttft_cold_s: the model files' page cache is dropped first (os.sync, then
  posix_fadvise(DONTNEED) on every file of DIR, symlinks followed); then from
  before from_pretrained (the CUDA context is created inside it, as strata's is
  inside its load) to the first token's id on the host: load + a forward pass
  over the first --prefill length + argmax. Python and library imports are not
  counted (strata's process start is not either).
- prefill: for each length, after a warm-up generate, one forward pass over that
  many fixed token ids from position 0 (logits of the last position only where
  the model supports logits_to_keep), then argmax, timed with
  torch.cuda.synchronize() on both sides.
- decode: greedy `generate` (do_sample=False, min_new_tokens = max_new_tokens, so
  exactly --decode tokens; KV cache as generate sets it up by default) over the
  first --prefill length. decode_tokens_per_s = (N - 1) / (t(generate N) -
  t(generate 1)): the tokens after the first one, over the time they add; both
  generate calls are timed after the same warm-up.
- peak_vram_bytes: torch.cuda.max_memory_reserved() (the caching allocator's
  peak; unlike strata's cudaMemGetInfo figure it leaves out the CUDA context).
  device_used_bytes: total - free from torch.cuda.mem_get_info() at the end.
- host_peak_rss_bytes: resource.getrusage(RUSAGE_SELF).ru_maxrss.
"""

import argparse
import importlib.util
import json
import os
import resource
import sys
import time


def drop_page_cache(path):
    """Asks the kernel to drop the cached pages of every file under `path`."""
    os.sync()  # dirty pages (a fresh export) cannot be dropped
    n = 0
    for root, _, files in os.walk(path):
        for f in files:
            real = os.path.realpath(os.path.join(root, f))
            try:
                fd = os.open(real, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="HF checkpoint directory (config.json + safetensors)")
    ap.add_argument("--label", default="", help="name of the model in the output")
    ap.add_argument("--prefill", default="512,2048", help="prompt lengths, comma-separated")
    ap.add_argument("--decode", type=int, default=256, help="tokens generated greedily")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--warm", action="store_true", help="keep the page cache")
    a = ap.parse_args()
    lengths = [int(x) for x in a.prefill.split(",")]
    out = {"engine": "hf", "label": a.label, "dir": a.dir, "device": a.device, "prefill_tokens": lengths[0],
           "decode_tokens": a.decode, "cold": not a.warm}

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, a.dtype)
    version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
    cuda = a.device.startswith("cuda")
    cfg = AutoConfig.from_pretrained(a.dir)
    vocab = cfg.vocab_size
    ids = torch.tensor([[(i * 7919 + 13) % vocab for i in range(max(lengths))]], dtype=torch.long)
    out.update(torch=torch.__version__, transformers=transformers.__version__, dtype=a.dtype)
    if not a.warm:
        out["files_dropped"] = drop_page_cache(a.dir)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def load():
        # Straight to the device where transformers can (device_map needs accelerate), else CPU then .to().
        kw = {"attn_implementation": "sdpa"}
        kw["dtype" if version >= (4, 56) else "torch_dtype"] = dtype  # renamed in transformers 4.56
        if cuda and importlib.util.find_spec("accelerate"):
            m = AutoModelForCausalLM.from_pretrained(a.dir, device_map=a.device, **kw)
            out["load_path"] = "from_pretrained(device_map=%s)" % a.device
        else:
            m = AutoModelForCausalLM.from_pretrained(a.dir, **kw).to(a.device)
            out["load_path"] = "from_pretrained on the CPU, then .to(%s)" % a.device
        got = next(m.parameters()).dtype
        if got != dtype:
            raise RuntimeError(f"the model loaded as {got}, not {dtype}")
        return m.eval()

    def forward_last(n):
        """Prefill of the first n ids from position 0; returns the argmax token id (on the host)."""
        x = ids[:, :n].to(a.device)
        try:
            logits = model(input_ids=x, use_cache=True, logits_to_keep=1).logits
        except TypeError:  # older transformers
            logits = model(input_ids=x, use_cache=True).logits
        return int(torch.argmax(logits[0, -1]).item())

    def generate(n_prompt, n_new):
        x = ids[:, :n_prompt].to(a.device)
        sync()
        t = time.perf_counter()
        g = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n_new,
                           min_new_tokens=n_new, do_sample=False, num_beams=1, temperature=None, top_p=None,
                           top_k=None, pad_token_id=0)
        sync()
        secs = time.perf_counter() - t
        if g.shape[1] != n_prompt + n_new:
            raise RuntimeError(f"generate returned {g.shape[1] - n_prompt} tokens, wanted {n_new}")
        return secs, g[0, n_prompt:].tolist()

    with torch.no_grad():
        t0 = time.perf_counter()
        model = load()
        t1 = time.perf_counter()
        first = forward_last(lengths[0])
        t2 = time.perf_counter()
        out.update(load_s=t1 - t0, ttft_cold_s=t2 - t0, first_token=first,
                   attn_implementation=getattr(model.config, "_attn_implementation", None))
        generate(min(lengths[0], 8), 8)  # warm-up (kernels, allocator)
        runs = []
        for n in lengths:
            sync()
            t = time.perf_counter()
            forward_last(n)
            sync()
            secs = time.perf_counter() - t
            runs.append({"tokens": n, "seconds": secs, "tokens_per_s": n / max(secs, 1e-9)})
        out["prefill"] = runs
        out["prefill_s"] = runs[0]["seconds"]
        out["prefill_tokens_per_s"] = runs[0]["tokens_per_s"]
        t_one, _ = generate(lengths[0], 1)
        out["ttft_warm_s"] = t_one
        if a.decode > 1:
            t_all, toks = generate(lengths[0], a.decode)
            out["generate_s"] = t_all
            out["decode_s"] = t_all - t_one
            out["decode_tokens_per_s"] = (a.decode - 1) / (t_all - t_one) if t_all > t_one else None
            out["generated_head"] = toks[:16]
    if cuda:
        out["device_name"] = torch.cuda.get_device_name()
        out["peak_vram_bytes"] = torch.cuda.max_memory_reserved()
        free, total = torch.cuda.mem_get_info()
        out["device_used_bytes"] = total - free
    out["host_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
