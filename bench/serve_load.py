#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible completion server (strata serve, llama-server, ...).

Python standard library only. N client threads each send streaming requests back to back
(temperature 0, "stream": true, "stream_options": {"include_usage": true}) and parse the SSE
stream incrementally as it arrives, timestamping every content chunk. Per request it measures

  TTFT   request sent -> first chunk with non-empty content
  ITL    gaps between successive content chunks; when the usage says a request produced more
         tokens than it had content chunks (a chunk carrying several tokens), each gap is
         divided by the request's tokens per chunk (after the first)
  TPOT   (last content chunk - first content chunk) / (completion tokens - 1)
  tokens completion tokens from the stream's usage, else the number of content chunks
  error  HTTP status != 200, an "error" object in the stream, a stream that ends without
         "data: [DONE]", a connection failure or timeout

and reports aggregate completion tok/s (all completion tokens of the measured requests / wall
time from the first send to the last done), TTFT, ITL and TPOT percentiles, requests and errors.
EOS is not disabled (ignore_eos is not portable): max_tokens bounds each request and the tokens
actually produced are what is counted (pass --extra '{"ignore_eos": true}' where a server takes it).

Prompts are built from a fixed word list with a seeded generator: the same options give the same
prompts run after run; request i gets its own prompt (so a server's prefix cache cannot answer
from an earlier request) unless --same-prompt. About one token per word for Llama/Mistral-style
tokenizers; the server's usage.prompt_tokens, when sent, is reported as the real count.

examples:
  bench/serve_load.py --url http://127.0.0.1:8191 --model small --concurrency 4 --requests 16 \\
      --prompt-tokens 32 --max-tokens 32 --warmup 2
  bench/serve_load.py --url http://127.0.0.1:8080 --model small,small-dus --concurrency 8 \\
      --duration 60 --endpoint chat --json > result.json

Output: one table line (with --header, a header line above it) on stdout; with --json the JSON
object goes to stdout and the table line to stderr. Exit status 0 even when requests failed
(the error count is in the report), 2 for bad options, 1 when no request could be measured.
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

WORDS = (
    "the of and to in is was that for on with as by at from his her they this have had are not "
    "but one all were when we there can an your which their said if do will each about how up "
    "out them then she many some so these would other into has more two time like him see could "
    "no make than first been its who now people my made over did down only way find use may "
    "water long little very after words called just where most know get through back much go "
    "good new write our me man too any day same right look think also around another came come "
    "work three word must because does part even place well such here take why things help put "
    "years different away again off went old number great tell men say small every found still "
    "between name should home big give air line set own under read last never us left end along "
    "while might next sound below saw something thought both few those always looked show large "
    "often together asked house world going want school important until form food keep children "
    "feet land side without boy once animals life enough took sometimes four head above kind "
    "began almost live page got earth need far hand high year mother light parts country father "
    "let night following picture being study second eyes soon times story boys since white days "
    "ever paper hard near sentence better best across during today others however sure means "
    "knew try told young miles sun ways thing whole hear example heard several change answer "
    "room sea against top turned learn point city play toward five using himself usually river"
).split()


def build_prompt(n_words, seed, index, same):
    rng = random.Random(seed * 1000003 + (0 if same else index + 1))
    words = [rng.choice(WORDS) for _ in range(max(1, n_words))]
    words[0] = words[0].capitalize()
    return " ".join(words)


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Target:
    def __init__(self, url, endpoint):
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https"):
            raise ValueError("--url: http:// or https:// expected, got " + url)
        self.https = u.scheme == "https"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.https else 80)
        base = u.path.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        self.path = base + ("/v1/chat/completions" if endpoint == "chat" else "/v1/completions")
        self.chat = endpoint == "chat"

    def connect(self, timeout):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


def content_of(chunk, chat):
    """The text a streamed chunk adds (empty string if none)."""
    out = []
    for choice in chunk.get("choices") or []:
        if chat:
            delta = choice.get("delta") or {}
            c = delta.get("content")
            if c is None:
                c = delta.get("reasoning_content")
        else:
            c = choice.get("text")
        if c:
            out.append(c)
    return "".join(out)


def one_request(target, conn_box, body_bytes, timeout):
    """Sends one streaming request; returns a dict of measurements."""
    r = {"ok": False, "error": None, "status": None, "ttft": None, "chunk_times": [],
         "completion_tokens": None, "prompt_tokens": None, "content_chunks": 0, "done": False,
         "chars": 0, "finish_reason": None}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    conn = conn_box[0]
    t0 = None
    try:
        if conn is None:
            conn = target.connect(timeout)
            conn_box[0] = conn
        t0 = time.perf_counter()
        try:
            conn.request("POST", target.path, body=body_bytes, headers=headers)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # A kept-alive connection the server closed meanwhile: retry once on a new one.
            conn.close()
            conn = target.connect(timeout)
            conn_box[0] = conn
            t0 = time.perf_counter()
            conn.request("POST", target.path, body=body_bytes, headers=headers)
            resp = conn.getresponse()
        r["t_send"] = t0
        r["status"] = resp.status
        if resp.status != 200:
            text = resp.read()[:300].decode("utf-8", "replace")
            r["error"] = "HTTP %d: %s" % (resp.status, text.strip())
            r["t_end"] = time.perf_counter()
            return r
        buf = b""
        while True:
            data = resp.read1(65536)
            now = time.perf_counter()
            if not data:
                break
            buf += data
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                line = buf[:nl].rstrip(b"\r")
                buf = buf[nl + 1:]
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments (":"), event:/id: fields
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    r["done"] = True
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    r["error"] = "bad SSE data: " + payload[:120].decode("utf-8", "replace")
                    continue
                if "error" in chunk and not chunk.get("choices"):
                    r["error"] = "stream error: " + json.dumps(chunk["error"])[:200]
                    continue
                text = content_of(chunk, target.chat)
                if text:
                    if r["ttft"] is None:
                        r["ttft"] = now - t0
                    r["chunk_times"].append(now)
                    r["content_chunks"] += 1
                    r["chars"] += len(text)
                for choice in chunk.get("choices") or []:
                    if choice.get("finish_reason"):
                        r["finish_reason"] = choice["finish_reason"]
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    if usage.get("completion_tokens") is not None:
                        r["completion_tokens"] = int(usage["completion_tokens"])
                    if usage.get("prompt_tokens") is not None:
                        r["prompt_tokens"] = int(usage["prompt_tokens"])
        r["t_end"] = time.perf_counter()
        if resp.getheader("Connection", "").lower() == "close" or resp.will_close:
            conn.close()
            conn_box[0] = None
        if not r["done"] and r["error"] is None:
            r["error"] = "stream ended without data: [DONE]"
        r["ok"] = r["error"] is None
    except Exception as e:  # connection refused, timeout, reset, ...
        r["error"] = "%s: %s" % (type(e).__name__, e)
        r["t_end"] = time.perf_counter()
        if t0 is not None:
            r.setdefault("t_send", t0)
        if conn_box[0] is not None:
            conn_box[0].close()
            conn_box[0] = None
    return r


def request_body(args, models, index):
    model = models[index % len(models)]
    prompt = args.prompt if args.prompt is not None else build_prompt(
        args.prompt_tokens, args.seed, index, args.same_prompt)
    body = {"model": model, "max_tokens": args.max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if args.no_cache_prompt:
        body["cache_prompt"] = False
    body.update(args.extra_obj)
    return model, json.dumps(body).encode()


def run_phase(target, args, models, first_index, n_requests, duration, concurrency):
    """Runs requests first_index.. on `concurrency` threads; returns (results, t_start, t_end)."""
    lock = threading.Lock()
    state = {"next": 0}
    results = []
    deadline = [None]

    def take():
        with lock:
            if n_requests is not None and state["next"] >= n_requests:
                return None
            if deadline[0] is not None and time.perf_counter() >= deadline[0]:
                return None
            i = state["next"]
            state["next"] += 1
            return i

    def worker():
        conn_box = [None]
        while True:
            i = take()
            if i is None:
                break
            model, body = request_body(args, models, first_index + i)
            r = one_request(target, conn_box, body, args.timeout)
            r["model"] = model
            r["index"] = first_index + i
            with lock:
                results.append(r)
        if conn_box[0] is not None:
            conn_box[0].close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t_start = time.perf_counter()
    if duration is not None:
        deadline[0] = t_start + duration
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, t_start, time.perf_counter()


def summarize(results, args, models, wall_start, wall_end):
    ok = [r for r in results if r["ok"]]
    errors = [r for r in results if not r["ok"]]
    sends = [r["t_send"] for r in results if r.get("t_send") is not None]
    ends = [r["t_end"] for r in results if r.get("t_end") is not None]
    first = min(sends) if sends else wall_start
    last = max(ends) if ends else wall_end
    wall = max(last - first, 1e-9)

    ttft, itl, tpot = [], [], []
    total_tokens = 0
    prompt_tokens = []
    tokens_from_usage = 0
    per_model = {}
    for r in ok:
        chunks = r["chunk_times"]
        n = r["completion_tokens"]
        if n is None:
            n = r["content_chunks"]
        else:
            tokens_from_usage += 1
        total_tokens += n
        pm = per_model.setdefault(r["model"], {"requests": 0, "completion_tokens": 0})
        pm["requests"] += 1
        pm["completion_tokens"] += n
        if r["prompt_tokens"] is not None:
            prompt_tokens.append(r["prompt_tokens"])
        if r["ttft"] is not None:
            ttft.append(r["ttft"])
        if len(chunks) >= 2:
            # Tokens per chunk after the first chunk (assumed to carry one token).
            per_chunk = max(1.0, (n - 1) / (len(chunks) - 1)) if n > 1 else 1.0
            for a, b in zip(chunks, chunks[1:]):
                itl.append((b - a) / per_chunk)
            if n > 1:
                tpot.append((chunks[-1] - chunks[0]) / (n - 1))
    for r in errors:
        pm = per_model.setdefault(r["model"], {"requests": 0, "completion_tokens": 0})
        pm.setdefault("errors", 0)
        pm["errors"] = pm.get("errors", 0) + 1

    def ms(x):
        return None if x is None else round(x * 1000.0, 3)

    error_kinds = {}
    for r in errors:
        k = (r["error"] or "?")[:160]
        error_kinds[k] = error_kinds.get(k, 0) + 1
    return {
        "label": args.label,
        "url": args.url,
        "endpoint": args.endpoint,
        "models": models,
        "concurrency": args.concurrency,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(errors),
        "error_kinds": error_kinds,
        "warmup": args.warmup,
        "max_tokens": args.max_tokens,
        "prompt_words": None if args.prompt is not None else args.prompt_tokens,
        "prompt_tokens_mean": (round(sum(prompt_tokens) / len(prompt_tokens), 1)
                               if prompt_tokens else None),
        "completion_tokens": total_tokens,
        "completion_tokens_mean": round(total_tokens / len(ok), 2) if ok else None,
        "requests_with_usage": tokens_from_usage,
        "wall_s": round(wall, 4),
        "tokens_per_s": round(total_tokens / wall, 3),
        "requests_per_s": round(len(ok) / wall, 4),
        "ttft_ms": {"p50": ms(percentile(ttft, 50)), "p90": ms(percentile(ttft, 90)),
                    "p99": ms(percentile(ttft, 99)),
                    "mean": ms(sum(ttft) / len(ttft)) if ttft else None},
        "itl_ms": {"p50": ms(percentile(itl, 50)), "p90": ms(percentile(itl, 90)),
                   "p99": ms(percentile(itl, 99)),
                   "mean": ms(sum(itl) / len(itl)) if itl else None},
        "tpot_ms": {"p50": ms(percentile(tpot, 50)), "p99": ms(percentile(tpot, 99)),
                    "mean": ms(sum(tpot) / len(tpot)) if tpot else None},
        "per_model": per_model,
    }


HEADER = ("%-16s %7s %8s %6s %9s %10s %10s %9s %9s" %
          ("label", "clients", "requests", "errors", "tok/s", "ttft_p50", "ttft_p99",
           "itl_p50", "itl_p99"))


def table_line(s):
    def f(x):
        return "-" if x is None else "%.1f" % x
    return ("%-16s %7d %8d %6d %9.2f %10s %10s %9s %9s" %
            (s["label"][:16], s["concurrency"], s["requests"], s["errors"], s["tokens_per_s"],
             f(s["ttft_ms"]["p50"]), f(s["ttft_ms"]["p99"]), f(s["itl_ms"]["p50"]),
             f(s["itl_ms"]["p99"])))


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Times are in ms in the report; tok/s counts completion tokens only.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080",
                   help="server base URL (default http://127.0.0.1:8080; a trailing /v1 is fine)")
    p.add_argument("--model", action="append", default=[],
                   help="model name; repeat or comma-separate: requests rotate across them "
                        "(default: 'default')")
    p.add_argument("--endpoint", choices=("completions", "chat"), default="completions")
    p.add_argument("--concurrency", "-c", type=int, default=1, help="client threads (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--requests", "-n", type=int, default=None,
                   help="measured requests in all (default: 4 x concurrency)")
    g.add_argument("--duration", type=float, default=None,
                   help="send for S seconds instead (requests in flight then finish)")
    p.add_argument("--prompt-tokens", type=int, default=32,
                   help="approximate prompt length: words from a fixed list (default 32)")
    p.add_argument("--prompt", default=None, help="send this prompt text in every request")
    p.add_argument("--same-prompt", action="store_true",
                   help="the same generated prompt for every request (default: one per request)")
    p.add_argument("--seed", type=int, default=1, help="prompt generator seed (default 1)")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens (default 32)")
    p.add_argument("--warmup", type=int, default=0,
                   help="K requests sent first (at min(K, concurrency) clients) and excluded")
    p.add_argument("--no-cache-prompt", action="store_true",
                   help='add "cache_prompt": false to each body (llama-server: no reuse of a '
                        "slot's cached prefix)")
    p.add_argument("--extra", default=None,
                   help="JSON object merged into every request body, e.g. '{\"top_k\": 1}'")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="socket timeout per request in seconds (default 600)")
    p.add_argument("--label", default="", help="label for the report (default: the URL)")
    p.add_argument("--json", action="store_true",
                   help="JSON object on stdout (the table line goes to stderr)")
    p.add_argument("--header", action="store_true", help="print a header above the table line")
    p.add_argument("--raw", default=None,
                   help="write every measured request (times relative to the first send) "
                        "as JSON lines to this file")
    args = p.parse_args()

    models = [m.strip() for spec in (args.model or ["default"]) for m in spec.split(",")
              if m.strip()]
    if not models:
        p.error("--model: no model name")
    if args.concurrency < 1:
        p.error("--concurrency must be >= 1")
    if args.requests is None and args.duration is None:
        args.requests = 4 * args.concurrency
    if args.requests is not None and args.requests < 1:
        p.error("--requests must be >= 1")
    if args.max_tokens < 1:
        p.error("--max-tokens must be >= 1")
    try:
        args.extra_obj = json.loads(args.extra) if args.extra else {}
        if not isinstance(args.extra_obj, dict):
            raise ValueError("not an object")
    except ValueError as e:
        p.error("--extra: a JSON object expected (%s)" % e)
    if not args.label:
        args.label = args.url
    try:
        target = Target(args.url, args.endpoint)
    except ValueError as e:
        p.error(str(e))

    if args.warmup > 0:
        wres, _, _ = run_phase(target, args, models, 0, args.warmup, None,
                               min(args.warmup, args.concurrency))
        bad = [r for r in wres if not r["ok"]]
        if bad:
            print("serve_load: %d of %d warm-up requests failed; first: %s" %
                  (len(bad), len(wres), bad[0]["error"]), file=sys.stderr)
    # Measured requests get indices after the warm-up's, so their prompts are new to the server.
    results, t0, t1 = run_phase(target, args, models, args.warmup, args.requests, args.duration,
                                args.concurrency)
    s = summarize(results, args, models, t0, t1)
    if s["errors"]:
        for k, n in s["error_kinds"].items():
            print("serve_load: %d x %s" % (n, k), file=sys.stderr)
    if args.raw:
        base = min((r["t_send"] for r in results if r.get("t_send") is not None), default=t0)
        with open(args.raw, "w") as f:
            for r in sorted(results, key=lambda r: r["index"]):
                row = {k: r.get(k) for k in ("index", "model", "ok", "error", "status",
                                             "completion_tokens", "prompt_tokens",
                                             "content_chunks", "finish_reason", "done")}
                row["t_send"] = None if r.get("t_send") is None else r["t_send"] - base
                row["t_end"] = None if r.get("t_end") is None else r["t_end"] - base
                row["ttft"] = r["ttft"]
                row["chunk_times"] = [t - base for t in r["chunk_times"]]
                f.write(json.dumps(row) + "\n")
    out = sys.stderr if args.json else sys.stdout
    if args.header:
        print(HEADER, file=out)
    print(table_line(s), file=out)
    if args.json:
        print(json.dumps(s, indent=1))
    return 0 if s["ok"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
