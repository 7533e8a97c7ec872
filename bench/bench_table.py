#!/usr/bin/env python3
"""The table of bench/gpu_bench.sh: strata and HF transformers on base, SOLAR DUS, block expansion.

  bench_table.py OUT_DIR [--targets]

Reads OUT_DIR/strata.jsonl (`strata bench --json`, one line per variant; OUT_DIR/strata-nographs.jsonl
the base with --no-graphs, for a note), OUT_DIR/hf.jsonl
(bench/hf_bench.py) and OUT_DIR/decode_bytes.jsonl (bench/decode_bytes.py on each checkpoint),
any of which may be missing or partial (the cells show n/a). Prints the table (markdown) and
writes it to OUT_DIR/table.md; then check lines "PASS ...", "FAIL ..." or "INFO ..." (without
--targets the speed targets are INFO only: a CPU dry run has no bandwidth bound to meet).
Standard library only.
"""

import argparse
import json
import os
import sys

MODELS = [("base", "base"), ("solar-dus", "SOLAR DUS"), ("block-expansion-40", "block-exp 40")]


def load(path, key):
    """label -> last JSON object of the file with that label (lines that are not JSON skipped)."""
    out = {}
    if os.path.exists(path):
        for line in open(path):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get(key):
                out[r[key]] = r
    return out


def num(r, key):
    v = r.get(key) if r else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def prefill_at(r, n):
    for p in (r or {}).get("prefill", []):
        if p.get("tokens") == n:
            return p.get("tokens_per_s")
    return None


def fmt(v, f):
    return "n/a" if v is None else f(v)


def size(b):
    return "n/a" if b is None else ("%.2f GB" % (b / 1e9) if b >= 1e9 else "%.1f MiB" % (b / 2**20))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--targets", action="store_true", help="PASS/FAIL on the issue's speed targets")
    a = ap.parse_args()
    strata = load(os.path.join(a.out_dir, "strata.jsonl"), "variant")
    hf = load(os.path.join(a.out_dir, "hf.jsonl"), "label")
    dense = load(os.path.join(a.out_dir, "decode_bytes.jsonl"), "label")
    lengths = []
    for r in list(strata.values()) + list(hf.values()):
        for p in r.get("prefill", []):
            if p.get("tokens") not in lengths:
                lengths.append(p.get("tokens"))
    lengths = lengths[:2] or [512, 2048]
    # One bandwidth for every row: the best the strata runs measured (a plain read kernel).
    bws = [num(r, "read_bandwidth_bytes_per_s") for r in strata.values()]
    bws = [b for b in bws if b]
    bw = max(bws) if bws else None

    head = ["engine", "model", "decode tok/s", "% of bound"] + ["prefill tok/s @%d" % n for n in lengths] + [
        "TTFT cold", "peak VRAM", "host peak RSS"]
    rows, pct = [], {}
    for engine, runs in (("strata", strata), ("HF", hf)):
        for key, label in MODELS:
            r = runs.get(key)
            if engine == "strata":
                nbytes = num(r, "decode_weight_bytes_per_token")
            else:  # HF computes every layer: the checkpoint's dense bytes (bench/decode_bytes.py)
                nbytes = num(dense.get(key), "dense_decode_bytes_per_token")
            dec = num(r, "decode_tokens_per_s")
            p = 100.0 * dec / (bw / nbytes) if dec is not None and bw and nbytes else None
            pct[(engine, key)] = p
            mark = " (b)" if engine == "HF" and key == "block-expansion-40" else ""
            rows.append([engine, label, fmt(dec, lambda v: "%.1f" % v), fmt(p, lambda v: "%.1f%%" % v) + mark] +
                        [fmt(prefill_at(r, n), lambda v: "%.0f" % v) for n in lengths] +
                        [fmt(num(r, "ttft_cold_s"), lambda v: "%.3g s" % v), size(num(r, "peak_vram_bytes")),
                         size(num(r, "host_peak_rss_bytes"))])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    if bw:
        notes.append("Bound = measured read bandwidth %.1f GB/s (strata's plain read kernel, best of its runs) / "
                     "weight bytes per decode step:" % (bw / 1e9))
    else:
        notes.append("No read bandwidth measured (CPU run or no strata CUDA run): no bound, % of bound n/a. "
                     "Weight bytes per decode step:")
    for key, label in MODELS:
        s, d = num(strata.get(key), "decode_weight_bytes_per_token"), num(dense.get(key), "dense_decode_bytes_per_token")
        notes.append("- %s: strata %s, HF %s" % (label, fmt(s, lambda v: "%d B" % v), fmt(d, lambda v: "%d B" % v)))
    notes.append("(b) HF computes the 8 appended block-expansion layers (their o_proj and down_proj are zero "
                 "but it reads them), so its bound for that row uses the full 40-layer bytes; strata elides "
                 "them and reads what the base reads.")
    some = next(iter(hf.values()), None)
    if some:
        notes.append("HF: torch %s, transformers %s, %s, attn %s, load %s; decode = (N-1) tokens over "
                     "t(generate N) - t(generate 1); peak VRAM = torch.cuda.max_memory_reserved (no CUDA "
                     "context), strata's = cudaMemGetInfo (context included)."
                     % (some.get("torch"), some.get("transformers"), some.get("dtype"),
                        some.get("attn_implementation"), some.get("load_path")))
    else:
        notes.append("HF: not run (n/a).")
    ng = load(os.path.join(a.out_dir, "strata-nographs.jsonl"), "variant").get("base")
    if ng:
        notes.append("strata base with --no-graphs (warm): %s tok/s, %s kernels per decode step."
                     % (fmt(num(ng, "decode_tokens_per_s"), lambda v: "%.1f" % v), ng.get("decode_kernels_per_step")))
    gr = strata.get("base")
    if gr and "decode_graph" in gr:
        notes.append("strata base decode: CUDA graph %s, %s nodes, %s kernels per step."
                     % ("yes" if gr.get("decode_graph") else "no", gr.get("decode_graph_nodes"),
                        gr.get("decode_kernels_per_step")))
    text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    with open(os.path.join(a.out_dir, "table.md"), "w") as f:
        f.write(text)
    print(text)

    checks = []
    speed = "PASS" if a.targets else "INFO"
    fail = "FAIL" if a.targets else "INFO"
    for key in ("base", "solar-dus"):
        p = pct[("strata", key)]
        if p is None:
            checks.append("%s strata %s: decode %% of bound not measured" % (fail, key))
        else:
            checks.append("%s strata %s: decode at %.1f%% of the bound (target >= 85%%)" % (speed if p >= 85 else fail, key, p))
    b, x = num(strata.get("base"), "decode_tokens_per_s"), num(strata.get("block-expansion-40"), "decode_tokens_per_s")
    if b and x is not None:
        checks.append("%s strata block-exp decode %.1f tok/s = %.3fx the base's %.1f (target within 3%%)"
                      % (speed if x >= 0.97 * b else fail, x, x / b, b))
    else:
        checks.append("%s strata block-exp vs base decode: not measured" % fail)
    # Accounting: the same bytes whichever way they are counted.
    sb = {k: num(strata.get(k), "decode_weight_bytes_per_token") for k, _ in MODELS}
    db = {k: num(dense.get(k), "dense_decode_bytes_per_token") for k, _ in MODELS}
    if sb["base"] and sb["block-expansion-40"]:
        ok = sb["base"] == sb["block-expansion-40"]
        checks.append("%s decode bytes: block-exp with elision %d == base %d"
                      % ("PASS" if ok else "FAIL", sb["block-expansion-40"], sb["base"]))
    for k in ("base", "solar-dus"):
        if sb[k] and db[k]:
            checks.append("%s decode bytes of %s: strata %d == safetensors headers %d"
                          % ("PASS" if sb[k] == db[k] else "FAIL", k, sb[k], db[k]))
    for c in checks:
        print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
