"""serve_disconnect.sh's test: clients that leave in the middle (a long
stream closed after a few events, a long non-streaming request, queued
requests, half a request) and slow, idle connections; the server logs 499,
frees the sequences and their KV blocks at once and keeps serving."""
import json
import re
import socket
import threading
import time

from serve_client import Checks, Reader, Server, body_of, connect, encode, path_of, request, stream_text

LONG = 4000  # tokens: many seconds of decoding, cut short by the disconnect


def open_stream(port, model="base", events=3, prompt="once upon a time"):
    """Starts a long streaming completion and reads `events` chunks; the open socket."""
    s = connect(port, 10)
    s.sendall(encode("POST", "/v1/completions", json.dumps(body_of(model, "completions", prompt, LONG)), port=port))
    seen = [0]

    def on_chunk(_):
        seen[0] += 1
        return seen[0] < events

    Reader(s, time.time() + 20).response(on_chunk)
    return s


def wait_log(srv, pattern, count, seconds=5):
    deadline = time.time() + seconds
    while True:
        hits = re.findall(pattern, srv.log())
        if len(hits) >= count or time.time() > deadline:
            return hits
        time.sleep(0.05)


def hard_close(s):
    """Closes with a reset, as a killed client's kernel would."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


def still_serving(c, srv, what, ref):
    r = request(srv.port, "POST", "/v1/completions", json.dumps(body_of("dus", "completions", "hello world", 12)), timeout=20)
    text, problem = stream_text(r)
    c.check(not problem and text == ref, "after %s: the server still serves (same output as before)" % what,
            problem or "%r != %r" % (text, ref))


def main(bin_, store, tmp, args):
    c = Checks()
    srv = Server(bin_, store, tmp, ["--ctx", "4096", "--max-batch", "2", "--kv-memory", "64M"])
    pat499 = r"POST /v1/completions 499 model=(\w+) prompt_tokens=\d+ completion_tokens=(\d+)"
    try:
        ref, problem = stream_text(request(srv.port, "POST", "/v1/completions",
                                           json.dumps(body_of("dus", "completions", "hello world", 12))))
        c.check(not problem, "a first request streams", problem)

        # 1. A long stream, closed after three events.
        s = open_stream(srv.port)
        m = srv.metrics()
        c.check(m.get("strata_active_sequences") == 1 and m.get('strata_kv_blocks_used{model="base"}', 0) > 0,
                "while the long stream runs, /metrics shows it (1 active, KV blocks used)", repr(m.get("strata_active_sequences")))
        s.close()
        t0 = time.time()
        p = srv.wait_idle(2)
        c.check(not p, "stream closed after 3 events: active sequences and KV blocks back to 0 within 2 s "
                "(%.2f s)" % (time.time() - t0), p)
        hits = wait_log(srv, pat499, 1)
        c.check(len(hits) == 1 and int(hits[0][1]) < LONG // 2,
                "the closed stream is logged with status 499, cut short", repr(hits) + "\n" + srv.log()[-1500:])
        still_serving(c, srv, "a closed stream", ref)

        # 2. The same with a reset (SO_LINGER 0) instead of a FIN.
        hard_close(open_stream(srv.port, "expand"))
        p = srv.wait_idle(2)
        c.check(not p, "stream reset after 3 events: active 0, KV blocks 0 within 2 s", p)
        hits = wait_log(srv, pat499, 2)
        c.check(len(hits) == 2 and hits[1][0] == "expand", "the reset stream is logged with 499", repr(hits))

        # 3. A long non-streaming request whose client leaves.
        s = connect(srv.port)
        s.sendall(encode("POST", "/v1/completions", json.dumps(body_of("dus", "completions", "a b c", LONG, stream=False)),
                         port=srv.port))
        deadline = time.time() + 5
        while srv.metrics().get("strata_active_sequences") != 1 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        s.close()
        p = srv.wait_idle(2)
        c.check(not p, "non-streaming request whose client left: active 0, KV blocks 0 within 2 s", p)
        hits = wait_log(srv, pat499, 3)
        c.check(len(hits) == 3 and hits[2][0] == "dus" and int(hits[2][1]) < LONG // 2,
                "the non-streaming request is logged with 499, cut short", repr(hits))

        # 4. Running and queued streams (--max-batch 2) all closed at once.
        socks = [open_stream(srv.port, events=3) for _ in range(2)]
        for _ in range(3):
            q = connect(srv.port)
            q.sendall(encode("POST", "/v1/completions", json.dumps(body_of("base", "completions", "queued", LONG)),
                             port=srv.port))
            socks.append(q)
        time.sleep(0.3)
        m = srv.metrics()
        c.check(m.get("strata_active_sequences") == 2 and m.get("strata_queue_depth") == 3,
                "2 streams run and 3 wait (--max-batch 2)",
                "active %s queued %s" % (m.get("strata_active_sequences"), m.get("strata_queue_depth")))
        for s in socks:
            s.close()
        p = srv.wait_idle(3)
        c.check(not p, "5 running and queued streams closed: nothing left running or queued within 3 s", p)
        hits = wait_log(srv, pat499, 8)
        c.check(len(hits) == 8, "all 5 are logged with 499", "%d 499 lines" % len(hits))
        still_serving(c, srv, "closing running and queued streams", ref)

        # 5. Half a request, then gone: headers cut, body cut, a reset mid-body.
        halves = [b"POST /v1/compl", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
                  b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{\"model\": \"ba",
                  b"GET /health HTTP/1.1\r\n"]
        for i, h in enumerate(halves * 5):
            s = connect(srv.port)
            s.sendall(h)
            if i % 2:
                hard_close(s)
            else:
                s.close()
        time.sleep(0.2)
        c.check(srv.alive() and request(srv.port, "GET", "/health").status == 200,
                "20 half requests then gone: the server still answers /health")
        still_serving(c, srv, "half requests", ref)

        # 6. Slowloris: idle and byte-a-second connections do not block others.
        idle = [connect(srv.port) for _ in range(40)]
        slow = [connect(srv.port) for _ in range(8)]
        stop = threading.Event()

        def drip():
            msg = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10000
            for b in msg:
                if stop.is_set():
                    return
                for s in slow:
                    try:
                        s.send(bytes([b]))
                    except OSError:
                        pass
                time.sleep(0.2)

        t = threading.Thread(target=drip)
        t.start()
        for s in idle[:20]:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")  # a body that never comes
        worst = 0.0
        for i in range(10):
            t0 = time.time()
            r = request(srv.port, "POST", "/v1/completions", json.dumps(body_of("base", "completions", "hi %d" % i, 8)), timeout=10)
            worst = max(worst, time.time() - t0)
            text, problem = stream_text(r)
            if problem:
                c.bad("request beside slow connections: " + problem)
                break
        c.check(worst < 2, "48 idle and slow connections open: 10 requests each answered within 2 s (worst %.2f s)" % worst)
        stop.set()
        t.join()
        for s in idle + slow:
            s.close()
        still_serving(c, srv, "slow connections", ref)
        p = srv.wait_idle(2)
        c.check(not p, "at the end nothing is running, queued or holding KV", p)
        t0 = time.time()
    finally:
        rc = srv.stop()
    took = time.time() - t0
    c.check(rc == 0 and took < 3, "SIGTERM then: exit 0 at once (no exchange left counted as busy)",
            "exit %s after %.1f s" % (rc, took))
    return c.finish()
