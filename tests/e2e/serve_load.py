"""serve_load.sh's test: 32 concurrent streaming clients over three variants
of one store; every output equals the same request run alone, and `strata
run`'s for a few; RSS stays flat after a warm-up; nothing is left running."""
import json
import os
import random
import subprocess
import threading
import time

from serve_client import VARIANTS, Checks, Server, body_of, path_of, post, request, stream_text

CLIENTS = 32
REQUESTS = 480
WORDS = ("the a cat sat on mat hello world strata serve batch token layer merge depth model river "
         "stone über naïve 東京 data graph seven 42 (quoted) x-y").split()


def make_requests(kinds):
    rng = random.Random(1)
    reqs = []
    for i in range(REQUESTS):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
        reqs.append((VARIANTS[i % 3], kinds[(i // 3) % len(kinds)], prompt, rng.randint(4, 24)))
    return reqs


def one(port, req):
    model, kind, prompt, n = req
    try:
        r = request(port, "POST", path_of(kind), json.dumps(body_of(model, kind, prompt, n)), timeout=60)
        return stream_text(r)
    except Exception as e:  # a hang, a reset, a malformed answer
        return None, "%s: %s" % (type(e).__name__, e)


def concurrent(port, reqs, clients):
    """Runs reqs with `clients` threads; [(text, problem)] in reqs' order."""
    out = [None] * len(reqs)
    nxt = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(reqs):
                return
            out[i] = one(port, reqs[i])

    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def compare(c, what, reqs, got, ref):
    errors = [(reqs[i], p) for i, (_, p) in enumerate(got) if p]
    c.check(not errors, "%s: every stream is 200, error-free and ends with [DONE]" % what,
            "%d failed, e.g. %r" % (len(errors), errors[:3]))
    diff = [(reqs[i], got[i][0], ref[i]) for i in range(len(reqs)) if not got[i][1] and got[i][0] != ref[i]]
    c.check(not diff, "%s: every output equals the same request run alone" % what,
            "%d differ, e.g. %r" % (len(diff), diff[:2]))


def main(bin_, store, tmp, args):
    c = Checks()
    t_start = time.time()
    srv = Server(bin_, store, tmp, ["--ctx", "256", "--max-batch", "16", "--max-queue", "64"])
    try:
        probe = post(srv.port, "/v1/chat/completions",
                     {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        if probe.status == 200:
            kinds = ["completions", "chat"]
            print("the model has a chat template: completions and chat requests")
        else:
            kinds = ["completions"]
            print("no chat template (%d %s): completions only" % (probe.status, probe.body[:200]))
        reqs = make_requests(kinds)
        # The reference: each request alone, one at a time.
        ref = []
        for req in reqs:
            text, problem = one(srv.port, req)
            if problem:
                c.bad("sequential %r: %s" % (req, problem))
            ref.append(text)
        c.check(all(t is not None for t in ref), "%d sequential requests answered" % len(reqs))
        c.check(len(set(ref)) > len(reqs) // 4, "the outputs differ between requests (%d distinct)" % len(set(ref)))
        # A few against `strata run` (batch invariant kernels, as the server's).
        env = dict(os.environ, STRATA_BATCH_INVARIANT="1")
        picked = [i for i, r in enumerate(reqs) if r[1] == "completions"][:6]
        for i in picked:
            model, _, prompt, n = reqs[i]
            p = subprocess.run([bin_, "run", model, "--store", store, "--prompt", prompt, "-n", str(n), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            run_text = json.loads(p.stdout)["text"] if p.returncode == 0 else "exit %d: %s" % (p.returncode, p.stderr)
            c.check(run_text == ref[i], "%s %r -n %d: the server's text equals strata run's" % (model, prompt, n),
                    "serve %r, run %r" % (ref[i], run_text))
        # Warm-up: a concurrent round, then RSS.
        warm = concurrent(srv.port, reqs[:96], CLIENTS)
        compare(c, "warm-up (96 requests, %d clients)" % CLIENTS, reqs[:96], warm, ref[:96])
        time.sleep(0.3)
        rss0 = srv.rss_kib()
        # The load: every request, in a shuffled order, 32 clients.
        order = list(range(len(reqs)))
        random.Random(2).shuffle(order)
        peak = {"strata_active_sequences": 0, "strata_queue_depth": 0}
        done = threading.Event()

        def watch():  # how many ran at once: the load must really batch
            while not done.is_set():
                m = srv.metrics()
                for k in peak:
                    peak[k] = max(peak[k], m.get(k, 0))
                time.sleep(0.01)

        w = threading.Thread(target=watch)
        w.start()
        t0 = time.time()
        got = concurrent(srv.port, [reqs[i] for i in order], CLIENTS)
        took = time.time() - t0
        done.set()
        w.join()
        print("peak during the load: %r" % peak)
        c.check(peak["strata_active_sequences"] >= 8, "the load ran batches (8 or more sequences at once)", repr(peak))
        print("load: %d streaming requests, %d clients, %.1f s" % (len(reqs), CLIENTS, took))
        compare(c, "load", [reqs[i] for i in order], got, [ref[i] for i in order])
        time.sleep(0.3)
        rss1 = srv.rss_kib()
        print("RSS after warm-up %d KiB, after load %d KiB" % (rss0, rss1))
        c.check(rss1 - rss0 < 8 * 1024, "RSS after the load within 8 MiB of after the warm-up",
                "%d KiB -> %d KiB" % (rss0, rss1))
        p = srv.wait_idle(5)
        c.check(not p, "/metrics: no active sequences, no queue, no KV blocks used", p)
        m = srv.metrics()
        non200 = {k: v for k, v in m.items() if k.startswith("strata_requests_total") and "/v1/" in k and
                  'status="200"' not in k}
        c.check(not non200, "/metrics counts no non-200 answer on /v1/", repr(non200))
        served = sum(v for k, v in m.items() if k.startswith("strata_requests_total") and "completions" in k)
        want = 1 + 2 * len(reqs) + 96
        c.check(served == want, "/metrics counts every request (%d)" % want, "counted %s" % served)
        log = srv.log()
        bad_lines = [l for l in log.splitlines() if " POST " in l and " 200 " not in l]
        c.check(not bad_lines, "the log has no failed request", repr(bad_lines[:3]))
        c.check(srv.alive() and request(srv.port, "GET", "/health").status == 200, "the server still answers /health")
    finally:
        rc = srv.stop()
    c.check(rc == 0, "the server exits 0 on SIGTERM", "exit %s" % rc)
    print("took %.1f s in all" % (time.time() - t_start))
    return c.finish()
